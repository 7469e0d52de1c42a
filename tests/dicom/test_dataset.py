"""Dataset builder: index, series selection, patient-level stratified split without leaks,
deterministic stratified calibration sampler, decoded-array cache, load_folder contract."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from edgemed.data.synthetic import make_dataset
from edgemed.dicom import (ArrayCache, DicomDataset, SeriesFilter, build_dataset,
                           calibration_sample, check_no_leak, index_folder, load_folder,
                           load_manifest, patient_split)
from edgemed.dicom.index import Record, orientation_of
from edgemed.errors import InvalidInputError
from edgemed_runtime.preprocess import PreprocessSpec

SPEC = PreprocessSpec(size=(32, 32), window=(40, 400))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("syn"), n_patients=12, slices_per_patient=4, size=48,
                        seed=3, monochrome1_fraction=0.25, multiframe_patients=2)


def _rec(i, pid, label, scanner=("A", "m1")):
    return Record(path=f"f{i:03d}.dcm", label=label, patient_id=pid, study_uid=f"s-{pid}",
                  series_uid=f"se-{pid}", modality="CT", body_part="CHEST", orientation="axial",
                  frames=1, manufacturer=scanner[0], model=scanner[1], rows=8, columns=8,
                  photometric="MONOCHROME2")


def test_index_reads_headers_and_labels(synth):
    records, skipped = index_folder(synth.root)
    assert not skipped and len(records) == len(synth.paths)
    by_path = {r.path: r for r in records}
    for p, lab, pid in zip(synth.paths, synth.labels, synth.patients):
        r = by_path[p.relative_to(synth.root).as_posix()]
        assert r.patient_id == pid and r.label == synth.class_names[lab]
        assert r.orientation == "axial" and r.modality == "CT"
    assert {r.frames for r in records} == {1, 4}
    assert {r.photometric for r in records} == {"MONOCHROME1", "MONOCHROME2"}


def test_series_filter_selects(synth):
    records, _ = index_folder(synth.root)
    multi = [r for r in records if SeriesFilter(min_frames=2).accepts(r)]
    assert len(multi) == 2 and all(r.frames == 4 for r in multi)
    assert all(SeriesFilter(modality=("ct",), orientation=("axial",)).accepts(r) for r in records)
    assert not any(SeriesFilter(body_part=("HEAD",)).accepts(r) for r in records)
    with pytest.raises(InvalidInputError):
        SeriesFilter(orientation=("upside-down",))
    assert orientation_of([0, 1, 0, 0, 0, -1]) == "sagittal"
    assert orientation_of([1, 0, 0, 0, 0, -1]) == "coronal"


def test_patient_split_stratified_no_leak():
    recs = []
    for p in range(40):
        label = "lesion" if p % 4 == 0 else "none"
        recs += [_rec(len(recs) + k, f"P{p:02d}", label) for k in range(3)]
    splits = patient_split(recs, (0.6, 0.2, 0.2), seed=1)
    assert check_no_leak(recs, splits).ok
    per_split = collections.defaultdict(set)
    for r, s in zip(recs, splits):
        per_split[s].add((r.patient_id, r.label))
    for s in ("train", "val", "test"):
        labels = collections.Counter(l for _, l in per_split[s])
        assert labels["lesion"] >= 1 and labels["none"] >= 1, s  # stratified
    assert patient_split(recs, (0.6, 0.2, 0.2), seed=1) == splits  # deterministic
    leaked = list(splits)
    leaked[0] = "test" if splits[0] != "test" else "train"
    report = check_no_leak(recs, leaked)
    assert not report.ok and report.patients == ("P00",)
    with pytest.raises(InvalidInputError):
        patient_split(recs, (0.5, 0.5, 0.5))


def test_calibration_sampler_deterministic_and_stratified():
    recs = [_rec(i, f"P{i}", "lesion" if i % 3 == 0 else "none", ("A", "m1") if i % 2 else ("B", "m2"))
            for i in range(60)]
    a = calibration_sample(recs, 12, seed=5)
    assert a == calibration_sample(recs, 12, seed=5)
    assert a.indices != calibration_sample(recs, 12, seed=6).indices
    assert len(a.indices) == 12 and a.seed == 5 and a.count == 12
    assert len(a.strata) == 4 and all(chosen >= 1 for _, _, chosen in a.strata)
    assert sum(c for _, _, c in a.strata) == 12
    assert {stratum for stratum, _, _ in a.strata} == {
        f"{l} | {m}" for l in ("lesion", "none") for m in ("A / m1", "B / m2")}


def test_build_inspect_and_cache(synth, tmp_path):
    out = tmp_path / "ds"
    m = build_dataset(synth.root, out, spec=SPEC, calib_count=6, seed=2, decode=True)
    assert m.report["leak_check"]["ok"] and m.report["kept"] == len(synth.paths)
    assert m.calibration["seed"] == 2 and m.calibration["count"] == 6
    assert all(m.splits[i] == "train" for i in m.calibration["indices"])
    assert (out / "dataset.json").is_file() and not list(out.glob(".*.tmp"))
    loaded = load_manifest(out)
    assert loaded.records == m.records and loaded.splits == m.splits and loaded.spec == SPEC
    train = DicomDataset.from_manifest(out, "train")
    x, y = train.arrays()
    assert x.shape[1:] == (1, 32, 32) and set(y.tolist()) <= {0, 1}
    assert train.cache.stats.misses == 0 and train.cache.stats.hits == len(train)  # decoded at build
    calib = DicomDataset.from_manifest(out, "calibration")
    assert len(calib) == 6
    # cached arrays are exactly the decoded ones
    r = m.records[m.indices("train")[0]]
    from edgemed_runtime.dicom import load_input
    assert np.array_equal(train[0][0], load_input(m.root / r.path, SPEC))


def test_cache_second_epoch_does_not_decode(synth, tmp_path):
    cache = ArrayCache(tmp_path / "cache", SPEC)
    first = [cache.load(p) for p in synth.paths[:5]]
    assert cache.stats.misses == 5 and cache.stats.hits == 0
    second = [cache.load(p) for p in synth.paths[:5]]
    assert cache.stats.misses == 5 and cache.stats.hits == 5
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    other = ArrayCache(tmp_path / "cache", PreprocessSpec(size=(16, 16)))
    other.load(synth.paths[0])
    assert other.stats.misses == 1  # a different spec is a different entry


def test_build_rejects_empty_selection(synth, tmp_path):
    with pytest.raises(InvalidInputError) as info:
        build_dataset(synth.root, tmp_path / "x", series=SeriesFilter(modality=("MR",)))
    assert info.value.code == "empty"
    with pytest.raises(InvalidInputError) as info:
        load_manifest(tmp_path / "missing")
    assert info.value.code == "not-found"


def test_load_folder_contract(synth, tmp_path):
    got = load_folder(synth.root, SPEC)
    assert got.x.shape == (len(synth.paths), 1, 32, 32)
    assert got.class_names == ("lesion", "no_lesion") and got.y is not None
    # one folder per class
    for i, p in enumerate(synth.paths[:4]):
        d = tmp_path / "byclass" / ("a" if i % 2 else "b")
        d.mkdir(parents=True, exist_ok=True)
        (d / p.name.replace(".dcm", f"_{i}.dcm")).write_bytes(p.read_bytes())
    by_class = load_folder(tmp_path / "byclass", SPEC)
    assert by_class.class_names == ("a", "b") and len(by_class.y) == 4
