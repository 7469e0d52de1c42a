"""Study-level grouping (``[grouping] by = "study"``): a study's series run together into one
SR in Orthanc (the selection judged per series: an MR series of the CT study is left out); a
study sent series by series over separate associations is completed by the timeout when
``association_end = false``; series grouping of the same study gives one SR per series."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom.uid import generate_uid

from edgemed_runtime.node import Node, load_config
from edgemed_runtime.node.audit import read_audit
from edgemed_runtime.outputs.sr import read_findings
from tests.node.kit import (Model, Orthanc, node_toml, send_pynetdicom, series, wait_for)

CT, MR = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"
ELE = "1.2.840.10008.1.2.1"


def _study(seed: int) -> tuple[list[Any], list[Any], list[Any]]:
    st = generate_uid(entropy_srcs=["study-level", str(seed)])
    a, b = series(3, seed=seed, study=st), series(2, seed=seed + 1, study=st)
    mr = series(2, seed=seed + 2, study=st, modality="MR")
    for ds in mr:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MR
    return a, b, mr


def _node(tmp: Path, model: Model, orthanc: Orthanc, port: int, grouping: str,
          timeout: float = 1.0) -> Node:
    return Node(load_config(node_toml(tmp, model, port=port, dest_port=orthanc.dicom,
                                      selection='modality = ["CT"]', grouping=grouping,
                                      timeout=timeout))).start()


def test_a_study_runs_as_one_group_into_one_sr(tmp_path: Path, model: Model, orthanc: Orthanc,
                                               node_port: int) -> None:
    orthanc.clear()
    a, b, mr = _study(90)
    n = _node(tmp_path, model, orthanc, node_port, 'by = "study"')
    try:
        ctx = [(CT, ELE), (MR, ELE)]
        assert send_pynetdicom(a + mr + b, n.port, contexts=ctx) == [0] * 7
        (oid,) = wait_for(lambda: orthanc.find_sr() or None, 60)
        wait_for(lambda: n.metrics.counts["delivered"] == 1, 30)
    finally:
        n.stop(drain=False)
    ds = orthanc.instance(oid)
    assert ds.StudyInstanceUID == a[0].StudyInstanceUID
    refs = sorted(r for r, _, _ in read_findings(ds))
    assert refs == sorted(d.SOPInstanceUID for d in a + b)  # both CT series, not the MR one
    (g,) = [e for e in read_audit(tmp_path / "audit.jsonl") if e["event"] == "grouped"]
    assert g["instances"] == 7


def test_series_by_series_associations_complete_by_timeout(tmp_path: Path, model: Model,
                                                           orthanc: Orthanc,
                                                           node_port: int) -> None:
    orthanc.clear()
    a, b, _ = _study(95)
    n = _node(tmp_path, model, orthanc, node_port, 'by = "study"\nassociation_end = false',
              timeout=3.0)
    try:
        assert send_pynetdicom(a, n.port) == [0] * 3
        assert send_pynetdicom(b, n.port) == [0] * 2  # a second association, same study
        (oid,) = wait_for(lambda: orthanc.find_sr() or None, 60)
        wait_for(lambda: n.metrics.counts["delivered"] == 1, 30)
    finally:
        n.stop(drain=False)
    refs = sorted(r for r, _, _ in read_findings(orthanc.instance(oid)))
    assert refs == sorted(d.SOPInstanceUID for d in a + b)
    assert n.metrics.counts["late"] == 0


def test_series_grouping_gives_one_sr_per_series(tmp_path: Path, model: Model,
                                                 orthanc: Orthanc, node_port: int) -> None:
    orthanc.clear()
    a, b, _ = _study(97)
    n = _node(tmp_path, model, orthanc, node_port, 'by = "series"')
    try:
        assert send_pynetdicom(a + b, n.port) == [0] * 5
        srs = wait_for(lambda: (lambda s: s if len(s) == 2 else None)(orthanc.find_sr()), 60)
    finally:
        n.stop(drain=False)
    sizes = sorted(len(read_findings(orthanc.instance(o))) for o in srs)
    assert sizes == [2, 3]
