"""Calibration and validation data as users hold it: the demo's patient folders, class folders,
labels.csv, and iterables read as NNCF's Dataset reads them (lists, a torch DataLoader, pairs)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from edgemed.calibration import sample_calibration, to_arrays
from edgemed.errors import CalibrationError, InvalidInputError
from edgemed_runtime import IOSpec, PreprocessSpec

SPEC = PreprocessSpec(window=(40.0, 400.0), size=(16, 16))
IO = IOSpec(input_shape=(1, 1, 16, 16), labels=("no_lesion", "lesion"))


@pytest.fixture(scope="module")
def demo_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's own layout (``<root>/<patient_id>/IM<nnnn>.dcm`` + labels.csv), small."""
    from edgemed.data.synthetic import make_dataset

    root = tmp_path_factory.mktemp("demo-layout") / "dicom"
    make_dataset(root, n_patients=3, slices_per_patient=4, size=32, seed=0)
    return root


@pytest.fixture()
def patients_only(demo_layout: Path, tmp_path: Path) -> Path:
    """The same patient folders without labels.csv (as a PACS export gives them)."""
    root = tmp_path / "export"
    shutil.copytree(demo_layout, root, ignore=shutil.ignore_patterns("labels.csv"))
    return root


def test_calibration_reads_patient_folders_recursively(patients_only: Path) -> None:
    la = to_arrays(patients_only, IO, SPEC, what="calibration")
    assert la.x.shape == (12, 1, 16, 16) and la.y is None
    assert {p.parent.name for p in la.paths} == {d.name for d in patients_only.iterdir()}
    cs = sample_calibration(patients_only, IO, SPEC, count=5, seed=3)
    assert len(cs.x) == 5 and cs.total == 12
    again = sample_calibration(patients_only, IO, SPEC, count=5, seed=3)
    assert again.sha256 == cs.sha256


def test_calibration_ignores_labels_even_when_present(demo_layout: Path, tmp_path: Path) -> None:
    deeper = tmp_path / "site" / "study"
    shutil.copytree(demo_layout, deeper)
    (deeper / "labels.csv").write_text("path,label\nnot/there.dcm,whatever\n")  # labels are irrelevant
    la = to_arrays(tmp_path / "site", IO, SPEC, what="calibration")
    assert len(la.x) == 12 and la.y is None


def test_validation_with_the_demo_labels_csv(demo_layout: Path) -> None:
    la = to_arrays(demo_layout, IO, SPEC, what="validation")
    assert la.y is not None and len(la.y) == 12 and la.class_names == IO.labels
    assert set(la.y.tolist()) <= {0, 1}


def test_validation_says_which_layout_it_expected(patients_only: Path) -> None:
    with pytest.raises(InvalidInputError) as e:
        to_arrays(patients_only, IO, SPEC, what="validation")
    err = e.value
    assert err.code == "label-layout"
    assert "labels.csv" in err.expected and "path,label[,patient_id]" in err.expected
    assert "sub-folder per class" in err.expected and "no_lesion, lesion" in err.expected
    assert "(x, y)" in err.fix
    for d in patients_only.iterdir():  # patient folder names are patient ids: never printed
        assert d.name not in str(err)


def test_validation_from_class_folders(demo_layout: Path, tmp_path: Path) -> None:
    import csv

    root = tmp_path / "by-class"
    with open(demo_layout / "labels.csv", newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            (root / row["label"]).mkdir(parents=True, exist_ok=True)
            shutil.copy(demo_layout / row["path"], root / row["label"] / f"{i:03d}.dcm")
    la = to_arrays(root, IO, SPEC, what="validation")
    ref = to_arrays(demo_layout, IO, SPEC, what="validation")
    assert la.y is not None and sorted(la.y.tolist()) == sorted(ref.y.tolist())


def test_unreadable_file_is_named(patients_only: Path) -> None:
    bad = next(patients_only.iterdir()) / "broken.dcm"
    bad.write_bytes(b"not a dicom file at all" * 10)
    with pytest.raises(InvalidInputError) as e:
        to_arrays(patients_only, IO, SPEC, what="calibration")
    assert "broken.dcm" in e.value.message and e.value.code == "not-dicom"


def test_file_without_suffix_that_is_no_dicom_is_skipped(patients_only: Path) -> None:
    (patients_only / "README").write_text("exported by the PACS\n")
    assert len(to_arrays(patients_only, IO, SPEC, what="calibration").x) == 12


def _tensors(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 16, 16, generator=g), torch.randint(0, 2, (n,), generator=g)


def test_dataloader_of_pairs_calibration_and_validation() -> None:
    x, y = _tensors()
    loader = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=False)
    cal = to_arrays(loader, IO, SPEC, what="calibration")
    assert cal.y is None and np.array_equal(cal.x, x.numpy())
    val = to_arrays(loader, IO, SPEC, what="validation")
    assert np.array_equal(val.x, x.numpy()) and np.array_equal(val.y, y.numpy())
    assert val.x.dtype == np.float32 and val.y.dtype == np.int64


def test_items_shaped_like_example_input_and_bare_samples() -> None:
    x, _ = _tensors(5)
    batches = [x[i:i + 1] for i in range(5)]  # 1xCxHxW each, like example_input
    assert to_arrays(batches, IO, SPEC).x.shape == (5, 1, 16, 16)
    samples = (x[i].numpy() for i in range(5))  # CxHxW from a generator
    assert np.array_equal(to_arrays(samples, IO, SPEC).x, x.numpy())
    assert np.array_equal(to_arrays(x, IO, SPEC).x, x.numpy())  # a tensor as an array


def test_transform_fn_and_nncf_dataset() -> None:
    import nncf

    x, y = _tensors(6)
    raw = [{"img": x[i, 0].numpy() * 255.0, "y": int(y[i])} for i in range(6)]

    def transform(item: dict) -> tuple[np.ndarray, int]:
        return item["img"][None] / 255.0, item["y"]

    val = to_arrays(raw, IO, SPEC, what="validation", transform_fn=transform)
    assert np.allclose(val.x, x.numpy(), atol=1e-6) and np.array_equal(val.y, y.numpy())
    ds = nncf.Dataset(DataLoader(TensorDataset(x, y), batch_size=3), lambda b: b[0])
    cal = sample_calibration(ds, IO, SPEC, count=4, seed=0)
    assert cal.total == 6 and cal.source == "Dataset" and len(cal.x) == 4


def test_dict_items_as_monai_loaders_give_them() -> None:
    x, y = _tensors(4)
    items = [{"image": x[i], "label": y[i]} for i in range(4)]
    val = to_arrays(items, IO, SPEC, what="validation")
    assert np.array_equal(val.y, y.numpy())


@pytest.mark.parametrize("items, code, where", [
    ([np.zeros((1, 8, 8), np.float32)], "shape", "item 0"),
    ([(np.zeros((1, 16, 16), np.float32), 0), np.zeros((1, 16, 16), np.float32)], "bad-labels", "item 1"),
    ([(np.zeros((2, 1, 16, 16), np.float32), np.array([0.5, 1.0]))], "bad-labels", "item 0"),
    ([], "empty", "empty"),
])
def test_bad_iterables_name_the_item(items: list, code: str, where: str) -> None:
    with pytest.raises(CalibrationError) as e:
        to_arrays(items, IO, SPEC, what="validation")
    assert e.value.code == code and where in e.value.message


def test_build_calibrates_from_patient_folders_and_a_dataloader(patients_only: Path,
                                                                demo_layout: Path,
                                                                tmp_path: Path) -> None:
    import edgemed
    from edgemed.evaluate import GateConfig
    from edgemed.pipeline import BuildOptions
    from tests.helpers.tiny_models import make_net

    torch.manual_seed(0)
    val = to_arrays(demo_layout, IO, SPEC, what="validation")
    loader = DataLoader(TensorDataset(torch.from_numpy(val.x), torch.from_numpy(val.y)), batch_size=4)
    # an untrained net and 12 images: the gate is opened wide on purpose, this is about intake
    wide = GateConfig(non_inferiority_margin=1.0, min_labelled_agreement=0.0)
    art = edgemed.build(make_net(), torch.zeros(1, 1, 16, 16), calibration=patients_only,
                        validation=loader, target="cpu-x86", out=tmp_path / "art", gate=wide,
                        labels=IO.labels, preprocess=SPEC,
                        options=BuildOptions(select="ort-int8-rr"), progress=False)
    sel = next(r for r in art.provenance if r.get("pass") == "select_variant")
    assert sel["gate_data"] == "validation set"  # labelled: the pairs' labels reached the gate
    assert art.metrics["gate"]["n"] == 12
    assert any("quantize" in str(r.get("pass")) for r in art.provenance)  # calibrated INT8
