"""Split weights follow what a backend declares (``Backend.accepts_external_weights``), not its
name: a newly registered backend that declares it gets them, sealed and opened; one that does
not is refused them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edgemed_runtime as rt
from edgemed_runtime import Artifact
from edgemed_runtime.backends import base
from edgemed_runtime.backends.onnxruntime import OnnxRuntimeBackend
from edgemed_runtime.bundle import verify_bundle

from .conftest import NOW, Keys, SealFn, open_args


class WeightsTaker(OnnxRuntimeBackend):
    """A backend registered under another name that opens split models from memory."""

    name = "weights-taker"


@pytest.fixture()
def taker(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(base._REGISTRY, WeightsTaker.name, f"{__name__}:WeightsTaker")
    return WeightsTaker.name


def test_backends_declare_external_weights() -> None:
    assert base.backend_class("onnxruntime").accepts_external_weights
    assert not base.backend_class("openvino").accepts_external_weights
    assert not base.backend_class("tensorrt").accepts_external_weights


def test_a_backend_that_declares_it_gets_split_weights(taker: str, artifact: Artifact,
                                                      make_bundle: SealFn, keys: Keys,
                                                      tmp_path: Path) -> None:
    b = make_bundle(tmp_path / "b", 2, art=artifact.evolve(backend=taker), split_weights=True)
    vb = verify_bundle(b, trust=keys.publisher.public_path, now=NOW)
    assert {p.role for p in vb.manifest.payloads} == {"model", "weights"}
    x = np.ones((1, 1, 8, 8), np.float32)
    with rt.open(artifact) as s:
        ref = s.run({"input": x})["logits"]
    with rt.open(b, **open_args(keys, tmp_path / "state")) as s:
        assert s.backend == taker
        np.testing.assert_array_equal(s.run({"input": x})["logits"], ref)


def test_a_backend_that_does_not_is_refused_them(artifact: Artifact, make_bundle: SealFn,
                                                 tmp_path: Path) -> None:
    with pytest.raises(rt.InvalidInputError) as e:
        make_bundle(tmp_path / "b", 2, art=artifact.evolve(backend="openvino"), split_weights=True)
    assert e.value.code == "bad-split"
