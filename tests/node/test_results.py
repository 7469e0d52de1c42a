"""infer_series and the SR: per-instance results equal to ``Session.predict`` on the same files,
an unreadable instance counted and not fatal, the SR's references, values and UIDs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgemed_runtime.bundle.install import open_installed
from edgemed_runtime.errors import InvalidInputError
from edgemed_runtime.node import infer_series
from edgemed_runtime.node.process import result_uids
from edgemed_runtime.outputs.sr import Finding, ModelInfo, classification_sr, read_findings, sr_bytes
from tests.node.kit import SENTINEL, Model, series, to_bytes


@pytest.fixture(scope="module")
def session(model: Model):  # type: ignore[no-untyped-def]
    s = open_installed(model.store, "tiny", trust=model.trust, device_key=model.device_key,
                       state_dir=model.state)
    yield s
    s.close()


def test_infer_series_matches_session_predict(tmp_path: Path, session) -> None:  # type: ignore[no-untyped-def]
    files = []
    for k, ds in enumerate(series(4, seed=60)):
        p = tmp_path / f"{k}.dcm"
        p.write_bytes(to_bytes(ds))
        files.append(p)
    files[1].write_bytes(files[1].read_bytes()[:300])  # truncated: unreadable
    res = infer_series(session, files)
    assert res.kind == "classification" and res.labels == ("a", "b")
    assert [r.error is not None for r in res.instances] == [False, True, False, False]
    assert res.analysed == 3 and sum(res.errors.values()) == 1
    for r in res.instances:
        if r.probabilities is not None:
            want = session.predict(str(files[r.index]))[0]
            np.testing.assert_allclose(r.probabilities, want, rtol=1e-5, atol=1e-6)
            assert abs(sum(r.probabilities) - 1.0) < 1e-5


def test_sr_content_and_deterministic_uids() -> None:
    src = series(3, seed=61)
    s1, u1 = result_uids(src[0].SeriesInstanceUID, "bid-1")
    assert (s1, u1) == result_uids(src[0].SeriesInstanceUID, "bid-1")  # same run, same SR
    assert u1 != result_uids(src[0].SeriesInstanceUID, "bid-2")[1]  # another bundle: another
    ds = classification_sr(src, [Finding(0, "a", 0.75), Finding(2, "b", 0.5)],
                           ModelInfo("tiny", "3", "bid-1"), series_uid=s1, sop_uid=u1,
                           device_uid="1.2.3.4")
    assert ds.SOPInstanceUID == u1 and ds.Modality == "SR" and ds.CompletionFlag == "COMPLETE"
    assert str(ds.PatientName) == SENTINEL  # the SR belongs to the patient's study
    import io

    import pydicom

    back = pydicom.dcmread(io.BytesIO(sr_bytes(ds)))
    assert read_findings(back) == [(src[0].SOPInstanceUID, "a", 0.75),
                                   (src[2].SOPInstanceUID, "b", 0.5)]
    evidence = {i.ReferencedSOPInstanceUID for s in back.CurrentRequestedProcedureEvidenceSequence
                for se in s.ReferencedSeriesSequence for i in se.ReferencedSOPSequence}
    assert evidence == {d.SOPInstanceUID for d in src}


@pytest.mark.parametrize("findings", [[Finding(5, "a", 0.5)], [Finding(0, "a", 1.5)]])
def test_sr_refuses_bad_results(findings: list) -> None:
    with pytest.raises(InvalidInputError) as e:
        classification_sr(series(1, seed=62), findings, ModelInfo("m", "1", "b"),
                          series_uid="1.2.3", sop_uid="1.2.3.4", device_uid="1.2.3.5")
    assert e.value.code == "bad-result"
