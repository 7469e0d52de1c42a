"""OpenVINO backend: NNCF INT8 IR, FP32 IR and ORT's QDQ ONNX through the shared template; plus
in-memory loading, the cache kept off, and the FP32 precision hint."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from edgemed_runtime import BackendError, InvalidInputError
from edgemed_runtime.api import open_artifact
from edgemed_runtime.backends.openvino import (
    compile_properties,
    infer_requests,
    pack_ir,
    specialise_batch,
    static_batch,
    unpack_ir,
)

from .template import BackendContract

pytest.importorskip("openvino")


class TestOvNncfInt8(BackendContract):
    backend = "openvino"
    chain = [("quantize_openvino", {})]
    expected_format = "openvino-ir"
    options = {"precision": "f32"}

    def test_int8_nodes_present(self, artifact: Any) -> None:
        rec = artifact.provenance[-1]
        assert rec["pass"] == "quantize_openvino" and rec["fake_quantize_nodes"] > 0
        assert artifact.model_path.read_bytes()[:8] == b"EMOVIR1\0"

    def test_batch_one_is_static_and_other_batches_compile_once(
            self, artifact: Any, val_data: Any) -> None:
        """Batch 1 runs a static-shape compile; the first other batch size compiles the dynamic
        model once, and both give the same logits per sample."""
        x = val_data.x[:5]
        with open_artifact(artifact, options={"threads": 1}) as s:
            assert s.details["static_batch"] == 1 and "dynamic_compiled" not in s.details
            single = np.concatenate([s.run({"input": x[i:i + 1]})["logits"] for i in range(5)])
            assert "dynamic_compiled" not in s.details
            batched = s.run({"input": x})["logits"]
            assert s.details["dynamic_compiled"] is True
            again = s.run({"input": x[:3]})["logits"]
        np.testing.assert_allclose(batched, single, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(again, single[:3], atol=1e-4, rtol=1e-4)

    def test_dynamic_model_compiled_once_under_contention(self, artifact: Any,
                                                         val_data: Any) -> None:
        """8 threads bring batch 3 at the same moment to a fresh session: the dynamic model is
        compiled once (the real compile, counted) and every result equals the serial one."""
        x = val_data.x[:3]
        outs: list[Any] = [None] * 8
        with open_artifact(artifact, options={"threads": 1}) as s:
            bs = s._session()
            make, compiles = bs._make_dynamic, []

            def counted() -> Any:
                compiles.append(threading.get_ident())
                return make()

            bs._make_dynamic = counted
            start = threading.Barrier(len(outs))

            def call(t: int) -> None:
                start.wait()
                outs[t] = s.run({"input": x})["logits"]

            threads = [threading.Thread(target=call, args=(t,)) for t in range(len(outs))]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            serial = s.run({"input": x})["logits"]
        assert len(compiles) == 1
        assert all(o is not None and np.array_equal(o, serial) for o in outs)

    def test_infer_requests_bound(self, artifact: Any, val_data: Any) -> None:
        """Requests are made on demand up to ``infer_requests``; the LATENCY default is
        OpenVINO's optimum (1), whatever the number of calling threads."""
        for opts, bound in (({}, 1), ({"infer_requests": 3}, 3)):
            with open_artifact(artifact, options={"threads": 1, **opts}) as s:
                start = threading.Barrier(6)

                def calls() -> None:
                    start.wait()
                    for i in range(20):
                        s.run({"input": val_data.x[i:i + 1]})

                threads = [threading.Thread(target=calls) for _ in range(6)]
                for th in threads:
                    th.start()
                for th in threads:
                    th.join()
                assert 1 <= s._session()._pool.made <= bound

    def test_static_batch_off(self, artifact: Any, val_data: Any) -> None:
        with open_artifact(artifact, options={"threads": 1, "static_batch": 0}) as s:
            assert s.details["static_batch"] == 0
            out = s.run({"input": val_data.x[:4]})["logits"]
            assert "dynamic_compiled" not in s.details
        assert out.shape == (4, 2)


class TestOvFp32(BackendContract):
    """FP32 IR: with the f32 hint the outputs match onnxruntime FP32 to ~1e-5 even on a CPU
    whose OpenVINO default would be bf16."""

    backend = "openvino"
    chain = [("convert_openvino", {})]
    expected_format = "openvino-ir"
    max_abs_diff = 1e-4
    min_cosine = 0.99999

    def test_precision_is_f32(self, session: Any) -> None:
        assert session.details["inference_precision"] == "f32"


class TestOvReadsQdqOnnx(BackendContract):
    backend = "openvino"
    chain = [("quantize_onnxruntime", {"activation_type": "uint8", "weight_type": "int8"})]
    expected_format = "onnx-qdq"


def test_bf16_cpu_default_would_not_be_fp32(run_chain: Any) -> None:
    """On AVX-512 BF16 / AMX CPUs OpenVINO's own default runs FP32 models in bf16: the reason
    the backend always sets a precision hint."""
    import openvino as ov

    from edgemed.targets import cpu_flags

    if not {"avx512_bf16", "amx_bf16"} & cpu_flags():
        pytest.skip("this CPU has no bf16 support: OpenVINO defaults to f32 here")
    core = ov.Core()
    model = core.read_model(str(run_chain([]).model_path))
    default = core.compile_model(model, "CPU", {"CACHE_DIR": ""})
    assert default.get_property("INFERENCE_PRECISION_HINT").to_string() == "bf16"


def test_compile_properties() -> None:
    p = compile_properties({"threads": 2})
    assert p["INFERENCE_PRECISION_HINT"] == "f32" and p["CACHE_DIR"] == ""
    assert p["INFERENCE_NUM_THREADS"] == 2 and p["PERFORMANCE_HINT"] == "LATENCY"
    assert "INFERENCE_PRECISION_HINT" not in compile_properties({"precision": "auto"})
    assert compile_properties({"precision": "bf16"})["INFERENCE_PRECISION_HINT"] == "bf16"
    with pytest.raises(BackendError):
        compile_properties({"precision": "int4"})
    with pytest.raises(BackendError):
        compile_properties({"performance_hint": "fast"})


def test_static_batch_option() -> None:
    assert static_batch({}) == 1 and static_batch({"static_batch": 4}) == 4
    assert static_batch({"static_batch": "0"}) == 0
    for bad in (-1, "one", None, True, 1.5j):
        with pytest.raises(BackendError, match="static_batch"):
            static_batch({"static_batch": bad})


def test_infer_requests_option() -> None:
    assert infer_requests({}) == 0 and infer_requests({"infer_requests": "4"}) == 4
    for bad in (-1, "many", None, False):
        with pytest.raises(BackendError, match="infer_requests"):
            infer_requests({"infer_requests": bad})


def test_specialise_batch_only_when_batch_is_the_only_dynamic_dim() -> None:
    import openvino as ov
    import openvino.opset13 as ops

    def model(shape: list[int]) -> Any:
        p = ops.parameter(ov.PartialShape(shape), ov.Type.f32, name="x")
        return ov.Model([ops.relu(p)], [p], "m")

    m = model([-1, 1, 8, 8])
    original = specialise_batch(m, 2)
    assert original is not None and m.inputs[0].get_partial_shape() == ov.PartialShape([2, 1, 8, 8])
    m.reshape(original)
    assert m.inputs[0].get_partial_shape()[0].is_dynamic
    assert specialise_batch(model([-1, 1, -1, -1]), 1) is None  # dynamic spatial dims
    assert specialise_batch(model([3, 1, 8, 8]), 1) is None  # already static
    assert specialise_batch(model([-1, 1, 8, 8]), 0) is None  # switched off


def test_packed_ir_round_trip_and_errors() -> None:
    blob = pack_ir(b"<net/>", b"\x00\x01\x02")
    assert unpack_ir(blob) == (b"<net/>", b"\x00\x01\x02")
    with pytest.raises(InvalidInputError):
        unpack_ir(b"not an ir")
    with pytest.raises(InvalidInputError):
        unpack_ir(blob[:12])


def test_garbage_model_is_typed_error() -> None:
    from edgemed_runtime.backends import get_backend
    from edgemed_runtime.iospec import IOSpec

    with pytest.raises((BackendError, InvalidInputError)):
        get_backend("openvino").open(b"\x08\x07garbage", IOSpec(), {})


def test_loads_from_memory_without_writing_files(run_chain: Any, tmp_path: Any,
                                                 monkeypatch: Any) -> None:
    """Opening a model writes nothing: no IR, no cache, wherever the process runs."""
    import tempfile

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    for chain in ([("quantize_openvino", {})],  # packed IR
                  [("quantize_onnxruntime", {"activation_type": "uint8"})]):  # QDQ ONNX bytes
        art = run_chain(chain).evolve(backend="openvino")
        with open_artifact(art, options={"threads": 1}) as s:
            s.run({"input": np.zeros((1, 1, 16, 16), np.float32)})
    assert list(tmp_path.iterdir()) == []
