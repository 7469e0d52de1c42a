"""3D classification end to end from DICOM series folders: build (calibration and gate from
series, one sample each), the artifact and the sealed bundle on the device (series folder,
file list, Volume), the CLIs, and the refusals of issue 15 at this level."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import edgemed
import edgemed_runtime as rt
from edgemed.bundle import Recipient, SealOptions, generate_keypair, seal
from edgemed.data.synthetic_series import write_series_dataset
from edgemed.pipeline import BuildOptions
from edgemed.volumes import index_series, sample_volume_calibration
from edgemed_runtime.__main__ import main as run_main

SPEC = rt.VolumeSpec(axcodes="RAS", spacing=(2.0, 2.0, 2.0), intensity=(-200.0, 300.0, 0.0, 1.0),
                     size=(24, 32, 32))


class Net3D(nn.Module):
    """A small 3D classifier (conv, pool, conv, global pool, linear)."""

    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
                               nn.Conv3d(8, 16, 3, padding=1), nn.ReLU(),
                               nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x)


@pytest.fixture(scope="module")
def series_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_series_dataset(tmp_path_factory.mktemp("series") / "data", n_series=8, seed=3,
                                shape=(20, 32, 32))


@pytest.fixture(scope="module")
def built(series_root: Path, tmp_path_factory: pytest.TempPathFactory) -> rt.Artifact:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("build") / "out"
    return edgemed.build(Net3D().eval(), torch.zeros(1, 1, 24, 32, 32), calibration=series_root,
                         validation=series_root, preprocess=SPEC, target="cpu-x86", out=out,
                         quiet=True)


def _series(root: Path) -> list[Path]:
    return sorted({p.parent for p in root.rglob("*.dcm")})


def test_build_from_series_gates_one_sample_per_series(built: rt.Artifact, series_root: Path) -> None:
    assert isinstance(built.preprocess, rt.VolumeSpec) and built.preprocess == SPEC
    calib = next(r for r in built.provenance if r["pass"] == "calibration_set")
    assert calib["available"] == 8 and calib["count"] == 8
    sel = next(r for r in built.provenance if r["pass"] == "select_variant")
    assert sel["status"] in ("compressed", "fallback-fp32", "fp32")
    gates = [g for g in sel["candidates"].values() if g]
    assert gates and all(g["labelled"] and g["n"] == 8 for g in gates)  # one sample per series
    assert list(built.io.labels) == ["lesion", "normal"]


def test_device_predicts_from_folder_files_and_volume_alike(built: rt.Artifact,
                                                            series_root: Path) -> None:
    folder = _series(series_root)[0]
    files = sorted(folder.glob("*.dcm"))
    random.Random(0).shuffle(files)
    with rt.open(built.path) as sess:
        p_folder = sess.predict(folder)
        p_files = sess.predict(files)
        p_volume = sess.predict(rt.read_series(folder))
        manual = sess.run({sess.io.input_name: SPEC.apply(rt.read_series(folder))[0][None]})
    assert p_folder.shape == (1, 2) and np.isclose(p_folder.sum(), 1.0, atol=1e-5)
    np.testing.assert_array_equal(p_folder, p_files)
    np.testing.assert_array_equal(p_folder, p_volume)
    z = manual[sess.io.output_names[0]]
    np.testing.assert_allclose(p_folder, np.exp(z) / np.exp(z).sum(1, keepdims=True), atol=1e-6)


def test_sealed_bundle_runs_a_series_on_the_device(built: rt.Artifact, series_root: Path,
                                                    tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    pub = generate_keypair(tmp_path, kind="publisher", name="pub")
    dev = generate_keypair(tmp_path, kind="device", name="dev")
    bundle = seal(built, tmp_path / "b.edgemed", publisher_key=pub.private_path,
                  options=SealOptions(family="ct3d", release=1),
                  recipients=[Recipient.load(dev.public_path)])
    manifest = rt.sdk.inspect_bundle(bundle)["manifest"]
    assert manifest["preprocess"]["kind"] == "volume" and manifest["task"]["name"] == "classification"
    folder = _series(series_root)[1]
    with rt.open(built.path) as sess:
        ref = sess.predict(folder)
    with rt.open(bundle, trust=pub.public_path, device_key=dev.private_path,
                 state_dir=tmp_path / "state") as sess:
        np.testing.assert_allclose(sess.predict(folder), ref, atol=1e-6)
    rc = run_main(["run", str(bundle), str(series_root), "--trust", str(pub.public_path),
                   "--device-key", str(dev.private_path), "--state-dir", str(tmp_path / "s2"),
                   "--json"])
    rows = json.loads(capsys.readouterr().out)["predictions"]
    assert rc == 0 and len(rows) == len(_series(series_root)) and all(r["ok"] for r in rows)


def test_volume_model_refuses_a_single_file_and_an_image_model_a_series(
        built: rt.Artifact, series_root: Path, tmp_path: Path) -> None:
    folder = _series(series_root)[0]
    with rt.open(built.path) as sess, pytest.raises(rt.InvalidInputError) as err:
        sess.predict(str(next(folder.glob("*.dcm"))))
    assert err.value.code == "series-single"
    image = edgemed.build("tests.helpers.tiny_models:make_net", input_shape=(1, 1, 32, 32),
                          target="cpu-x86", out=tmp_path / "img", quiet=True,
                          calibration=np.random.default_rng(0).random((4, 1, 32, 32), np.float32),
                          options=BuildOptions(select="default"))
    with rt.open(image.path) as sess, pytest.raises(rt.InvalidInputError) as err:
        sess.predict(folder)
    assert err.value.code == "not-image"


def test_volume_calibration_is_seeded_and_reads_only_the_chosen_series(series_root: Path) -> None:
    io = rt.IOSpec(input_shape=(1, 1, 24, 32, 32))
    a = sample_volume_calibration(series_root, io, SPEC, count=3, seed=5)
    b = sample_volume_calibration(series_root, io, SPEC, count=3, seed=5)
    c = sample_volume_calibration(series_root, io, SPEC, count=3, seed=6)
    assert a.sha256 == b.sha256 != c.sha256 and a.x.shape == (3, 1, 24, 32, 32)
    assert a.total == len(index_series(series_root)) == 8


def test_roi_crops_for_a_sliding_window_model(series_root: Path) -> None:
    io = rt.IOSpec(input_shape=(1, 1, 16, 16, 16), dynamic_spatial=True)
    inf = rt.InferenceSpec(mode="sliding_window", roi_size=(16, 16, 16))
    spec = rt.VolumeSpec(axcodes="RAS", spacing=(2.0, 2.0, 2.0), intensity=(-200.0, 300.0, 0.0, 1.0))
    cal = sample_volume_calibration(series_root, io, spec, inference=inf, count=10, seed=0)
    assert cal.x.shape == (10, 1, 16, 16, 16) and np.isfinite(cal.x).all()
    assert cal.x.std(axis=(1, 2, 3, 4)).min() > 0  # real crops, not padding
