"""One grouped series through the bundle: decrypt into scratch, select, infer, write the
result (SR or SEG) into the spool.

The series' instances are decrypted into a private folder (mode 0700) under the scratch
folder (tmpfs by default: the plaintext never reaches a disk) for the time of one inference,
and removed after it. Result UIDs are derived from the series UID and the bundle id, so the
same series run by the same bundle gives the same SR instance (what makes delivery idempotent).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..dicom.series_filter import SeriesFilter
from ..errors import EdgemedError, InvalidInputError
from .infer import SeriesResult, infer_series
from .model import Loaded
from .selection import rejection
from .spool import Spool

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset


SCRATCH_PREFIX = "edgemed-node-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_scratch(scratch: Path) -> int:
    """Remove the decrypted series a killed node left in ``scratch`` (folders of processes
    that are gone); returns how many were removed."""
    n = 0
    for d in scratch.glob(f"{SCRATCH_PREFIX}*") if scratch.is_dir() else []:
        try:
            pid = int(d.name[len(SCRATCH_PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(d, ignore_errors=True)
            n += 1
    return n


@dataclass(frozen=True)
class Outcome:
    """What processing gave: ``state`` is ``inferred`` (``result`` holds the DICOM bytes),
    ``skipped`` or ``failed`` (``reason``: a rule or an error code, no PHI)."""

    state: str
    reason: str = ""
    result: bytes | None = None
    analysed: int = 0
    errors: int = 0


def result_uids(series_uid: str, bundle_id: str) -> tuple[str, str]:
    """(Series Instance UID, SOP Instance UID) of the result of ``series_uid`` by ``bundle_id``."""
    from pydicom.uid import generate_uid

    return (generate_uid(entropy_srcs=[series_uid, bundle_id, "edgemed-result-series"]),
            generate_uid(entropy_srcs=[series_uid, bundle_id, "edgemed-result"]))


def _headers(files: Sequence[Path]) -> tuple[list[tuple[Path, "Dataset"]], int]:
    """The readable instances (file, header) and how many were not readable."""
    from ..dicom.guard import read_dataset
    from ..dicom.reader import reading

    good: list[tuple[Path, "Dataset"]] = []
    bad = 0
    for f in files:
        try:
            with reading():
                ds = read_dataset(f, stop_before_pixels=True)
            str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID)
        except (EdgemedError, AttributeError):
            bad += 1
            continue
        good.append((f, ds))
    return good, bad


def _order(items: list[tuple[Path, "Dataset"]]) -> list[tuple[Path, "Dataset"]]:
    def key(item: tuple[Path, "Dataset"]) -> tuple[int, str]:
        try:
            return int(item[1].get("InstanceNumber", 0) or 0), item[0].name
        except (TypeError, ValueError):
            return 0, item[0].name
    return sorted(items, key=key)


def _group_uid(evidence: Sequence["Dataset"], level: str) -> str:
    """The UID the result's UIDs derive from: the series', or (study level) the study's."""
    if level == "study":
        return f"study:{evidence[0].StudyInstanceUID}"
    return str(evidence[0].SeriesInstanceUID)


def _select(rules: SeriesFilter, good: list[tuple[Path, "Dataset"]],
            level: str) -> tuple[list[tuple[Path, "Dataset"]], str | None]:
    """The instances that run and, when none does, why. Series level: the series as a whole;
    study level: each series of the study on its own, the accepted ones run together."""
    if level != "study":
        reason = rejection(rules, [ds for _, ds in good])
        return ([] if reason else good), reason
    by_series: dict[str, list[tuple[Path, "Dataset"]]] = {}
    for item in good:
        by_series.setdefault(str(item[1].SeriesInstanceUID), []).append(item)
    kept: list[tuple[Path, "Dataset"]] = []
    reasons = []
    for items in by_series.values():
        reason = rejection(rules, [ds for _, ds in items])
        if reason is None:
            kept += items
        else:
            reasons.append(reason)
    return kept, (None if kept else "; ".join(sorted(set(reasons)))[:300])


def _classification(result: SeriesResult, evidence: list["Dataset"], model: Loaded,
                    device_uid: str, level: str = "series", version: int = 1) -> bytes:
    from ..outputs.sr import Finding, ModelInfo, classification_sr, sr_bytes

    findings = []
    for r in result.instances:
        if r.probabilities is None:
            continue
        k = max(range(len(r.probabilities)), key=lambda j: r.probabilities[j])  # type: ignore[index]
        findings.append(Finding(r.index, result.labels[k], r.probabilities[k],
                                whole_series=result.whole_series))
    key = _group_uid(evidence, level) + ("" if version == 1 else f"#v{version}")
    series_uid, sop_uid = result_uids(key, model.bundle_id)
    ds = classification_sr(evidence, findings, ModelInfo(model.name, model.version,
                                                         model.bundle_id),
                           series_uid=series_uid, sop_uid=sop_uid, device_uid=device_uid)
    return sr_bytes(ds)


def _segmentation(result: SeriesResult, model: Loaded, version: int = 1) -> bytes:
    from ..outputs.seg import seg_bytes

    seg = result.segmentation
    key = str(seg.source.series_uid) + ("" if version == 1 else f"#v{version}")
    series_uid, sop_uid = result_uids(key, model.bundle_id)
    return seg_bytes(seg.labels, seg.source, label_names=tuple(seg.label_names),
                     algorithm=(model.name, model.version or "0"), series_uid=series_uid,
                     sop_uid=sop_uid, software_version=f"bundle {model.bundle_id}"[:64])


def process_series(spool: Spool, blobs: Sequence[str], model: Loaded, *,
                   rules: SeriesFilter, scratch: Path, device_uid: str,
                   level: str = "series", version: int = 1) -> Outcome:
    """Run one series, or one study (``level``), from its spooled instance blobs and return
    the outcome.

    Raises:
        nothing for bad input (it is the outcome); OSError only when scratch cannot be made.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=scratch))
    try:
        files = []
        for k, blob in enumerate(blobs):
            p = work / f"{k:06d}.dcm"
            p.write_bytes(spool.get(blob))
            files.append(p)
        good, bad = _headers(files)
        if not good:
            return Outcome("failed", "no readable instance", errors=bad)
        good, reason = _select(rules, good, level)
        if reason is not None:
            return Outcome("skipped", reason, errors=bad)
        good = _order(good)
        try:
            result = infer_series(model.session, [f for f, _ in good])
        except EdgemedError as exc:
            return Outcome("failed", exc.code, errors=bad + len(good))
        if result.kind == "segmentation":
            return Outcome("inferred", result=_segmentation(result, model, version),
                           analysed=len(good), errors=bad)
        if not result.analysed:
            return Outcome("failed", ",".join(sorted(result.errors)) or "no result",
                           errors=bad + len(good))
        data = _classification(result, [ds for _, ds in good], model, device_uid, level,
                               version)
        return Outcome("inferred", result=data, analysed=result.analysed,
                       errors=bad + len(good) - result.analysed)
    except InvalidInputError as exc:
        return Outcome("failed", exc.code)
    finally:
        shutil.rmtree(work, ignore_errors=True)
