"""The one test template every backend's tests subclass.

A subclass sets ``backend`` (registry name), ``chain`` (the passes that make its artifact from the
FP32 ONNX export) and optionally ``options`` / ``max_abs_diff``, then inherits every check: the
same Session API, outputs within tolerance of FP32, top-1 agreement >= 0.99 on the synthetic
validation set, batch consistency, typed errors on bad input, the same result through the
build-time crash probe (a child process), and bit-identical results under concurrent calls.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import numpy as np
import pytest

from edgemed_runtime import InvalidInputError, Session
from edgemed_runtime.api import open_artifact
from edgemed_runtime.backends import backend_class
from edgemed_runtime.backends.probe import probe

MIN_AGREEMENT = 0.99
THREADS, CALLS = 8, 200  # the concurrency check: 1600 calls, each with its own input


class BackendContract:
    backend: ClassVar[str]
    chain: ClassVar[list[tuple[str, dict[str, Any]]]] = []
    options: ClassVar[dict[str, Any]] = {}
    expected_format: ClassVar[str]
    max_abs_diff: ClassVar[float] = 0.05  # logits; INT8 variants
    min_cosine: ClassVar[float] = 0.995

    @pytest.fixture(scope="class")
    def artifact(self, run_chain: Any) -> Any:
        if not backend_class(self.backend).is_available():
            miss = backend_class(self.backend).missing()
            pytest.skip(f"backend {self.backend} not installed: {miss}")
        art = run_chain(self.chain)
        return art.evolve(backend=self.backend, backend_options=dict(self.options))

    @pytest.fixture(scope="class")
    def session(self, artifact: Any) -> Any:
        with open_artifact(artifact, options={"threads": 2, **self.options}) as sess:
            yield sess

    @pytest.fixture(scope="class")
    def logits(self, session: Session, val_data: Any) -> np.ndarray:
        step = 16 if session.io.dynamic_batch else session.io.input_shape[0]
        return np.concatenate([session.run({"input": val_data.x[i:i + step]})["logits"]
                               for i in range(0, len(val_data.x), step)])

    # -- the contract ------------------------------------------------------------------------
    def test_format_and_backend(self, artifact: Any, session: Session) -> None:
        assert artifact.format == self.expected_format
        assert artifact.format in backend_class(self.backend).formats
        assert session.backend == self.backend

    def test_same_session_api(self, session: Session, val_data: Any) -> None:
        assert [t.name for t in session.inputs] == ["input"]
        n = 3 if session.io.dynamic_batch else session.io.input_shape[0]
        batch_dim = (-1,) if session.io.dynamic_batch else (n,)
        assert session.inputs[0].shape == batch_dim + (1, 16, 16)
        assert [t.name for t in session.outputs] == ["logits"]
        assert session.labels == ("no_lesion", "lesion")
        out = session.run({"input": val_data.x[:n]})
        assert set(out) == {"logits"} and out["logits"].shape == (n, 2)
        assert out["logits"].dtype == np.float32
        probs = session.predict(val_data.x[0])  # one sample (C, H, W)
        assert probs.shape == (1, 2) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
        probs = session.predict(str(val_data.paths[0]))  # a DICOM path
        assert probs.shape == (1, 2)

    def test_close_to_fp32(self, logits: np.ndarray, ref_logits: np.ndarray) -> None:
        agreement = float((logits.argmax(1) == ref_logits.argmax(1)).mean())
        assert agreement >= MIN_AGREEMENT, f"top-1 agreement {agreement:.3f}"
        diff = float(np.abs(logits - ref_logits).max())
        scale = max(1.0, float(np.abs(ref_logits).max()))
        assert diff <= self.max_abs_diff * scale, f"max abs logit diff {diff:.4f}"
        a, b = logits.ravel().astype(np.float64), ref_logits.ravel().astype(np.float64)
        assert float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) >= self.min_cosine

    def test_batch_consistent(self, session: Session, val_data: Any) -> None:
        if not session.io.dynamic_batch:  # a fixed-batch model refuses any other batch size
            with pytest.raises(InvalidInputError):
                session.run({"input": val_data.x[: session.io.input_shape[0] + 1]})
            return
        x = val_data.x[:5]
        batched = session.run({"input": x})["logits"]
        single = np.concatenate([session.run({"input": x[i:i + 1]})["logits"] for i in range(5)])
        np.testing.assert_allclose(batched, single, atol=1e-3, rtol=1e-3)

    def test_bad_input_is_typed(self, session: Session) -> None:
        with pytest.raises(InvalidInputError):
            session.run({"input": np.zeros((1, 1, 8, 8), np.float32)})
        with pytest.raises(InvalidInputError):
            session.run({"image": np.zeros((1, 1, 16, 16), np.float32)})

    def test_probe_child_matches(self, artifact: Any, val_data: Any, session: Session) -> None:
        n = 4 if session.io.dynamic_batch else session.io.input_shape[0]
        report, out = probe(artifact, self.backend, {"threads": 1, **self.options}, val_data.x[:n])
        assert report["ok"] and report["finite"] and report["shape"] == [n, 2]
        np.testing.assert_allclose(out, session.run({"input": val_data.x[:n]})["logits"],
                                   atol=1e-3, rtol=1e-3)

    def test_concurrent_calls_match_serial(self, artifact: Any, val_data: Any) -> None:
        """8 threads x 200 calls on one fresh session, every call with its own input (validation
        rows plus seeded noise; batches of 1 and 2 when the batch is dynamic, so a lazily
        compiled batch variant is first needed under contention): every result bit-identical
        to the serial result of the same input in the same session, and no error."""
        rng = np.random.default_rng(0)
        n = len(val_data.x)
        inputs = []
        for k in range(THREADS * CALLS):
            if artifact.io.dynamic_batch:
                b = 2 if k % 5 == 4 else 1
            else:
                b = artifact.io.input_shape[0]
            rows = val_data.x[[(k + j) % n for j in range(b)]]
            inputs.append((rows + rng.normal(0, 0.05, rows.shape)).astype(np.float32))
        results: list[np.ndarray | None] = [None] * len(inputs)
        errors: list[BaseException] = []
        with open_artifact(artifact, options={"threads": 1, **self.options}) as sess:
            start = threading.Barrier(THREADS)

            def worker(t: int) -> None:
                start.wait()
                for k in range(t, len(inputs), THREADS):
                    try:
                        results[k] = sess.run({"input": inputs[k]})["logits"]
                    except Exception as exc:  # counted: the assertion reports them
                        errors.append(exc)

            threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            serial = [sess.run({"input": x})["logits"] for x in inputs]
        wrong = sum(r is None or not np.array_equal(r, s) for r, s in zip(results, serial))
        assert not errors and not wrong, (
            f"{len(errors)} errors, {wrong} of {len(inputs)} results differ from serial"
            + (f"; first error: {errors[0]!r}"[:300] if errors else ""))
