"""The segmentation side of ``edgemed release`` (``[model] task = "segmentation"``).

Data: a folder of DICOM series with ``labels.csv`` (``path,label,patient_id,mask``, masks NIfTI
on each series' grid). The dataset step splits the series by patient (``edgemed.dicom.split``,
as for slices) into ``<out>/dataset/{train,val,test}/`` (hard links, else copies, and one
``labels.csv`` each): train feeds calibration, val the Dice / HD95 gate, test the device check.
The device check runs a held-out series through the sealed bundle in a runtime-only process,
writes a DICOM SEG there, reads it back with highdicom and compares it voxel by voxel with the
build's labels; it also saves FP32 vs shipped slice overlays. The latency is end to end (series
folder -> labels) for FP32 and the shipped artifact, interleaved in one process.
"""

from __future__ import annotations

import csv
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..errors import InvalidInputError
from .state import StepState, content_key, tree_key

if TYPE_CHECKING:
    from edgemed_runtime import InferenceSpec, VolumeSpec

    from ..segmentation.gate import SegGateConfig
    from ..targets import TargetProfile
    from .config import ReleaseConfig

Say = Callable[[str], None]
SPLITS = ("train", "val", "test")
OVERLAYS = "overlays.png"
SEG_FILE = "device-check.seg.dcm"


@dataclass(frozen=True)
class SegData:
    """The split series folders (each with its labels.csv) and the split report."""

    train: Path
    val: Path
    test: Path
    report: dict[str, Any]
    key: str
    skipped: bool

    @property
    def check_series(self) -> Path:
        """The held-out series the device check runs (the first test series, else val)."""
        for split in (self.test, self.val):
            rows = _rows(split / "labels.csv")
            if rows:
                return split / rows[0]["path"]
        raise InvalidInputError("no held-out series for the device check", code="empty",
                                fix="give more patients or a non-zero test split")


def volume_specs(cfg: ReleaseConfig) -> tuple[VolumeSpec, InferenceSpec]:
    """The VolumeSpec and InferenceSpec of ``[preprocess]`` / ``[inference]``.

    Raises:
        InvalidInputError: ``bad-config`` (the runtime refused a field; its message kept).
    """
    from edgemed_runtime import InferenceSpec, VolumeSpec

    p, i = cfg.preprocess, cfg.inference
    try:
        vspec = VolumeSpec(axcodes=p.axcodes, spacing=p.spacing, intensity=p.intensity,
                           clip=p.clip, channels=p.channels or 1)
        ispec = InferenceSpec(mode=i.mode if i else "whole", roi_size=i.roi_size if i else (),
                              overlap=i.overlap if i else 0.25,
                              blend=i.blend if i else "gaussian",
                              sw_batch_size=i.sw_batch_size if i else 1)
    except InvalidInputError as exc:
        raise InvalidInputError(f"[preprocess]/[inference]: {exc.message}", expected=exc.expected,
                                found=exc.found, fix=exc.fix, code="bad-config") from None
    return vspec, ispec


def seg_gate(cfg: ReleaseConfig) -> SegGateConfig:
    """The segmentation gate with the ``[gate]`` overrides that apply to it.

    Raises:
        InvalidInputError: ``bad-config`` (accuracy / AUC limits given for a segmentation model).
    """
    from ..segmentation.gate import SegGateConfig

    g = cfg.gate
    wrong = [k for k in ("min_labelled_agreement", "max_accuracy_drop", "max_auc_drop")
             if getattr(g, k) is not None]
    if wrong:
        raise InvalidInputError("[gate] has classification limits for a segmentation model",
                                expected="decision, non_inferiority_margin, max_dice_drop, "
                                "min_agreement_dice", found=", ".join(wrong), code="bad-config")
    keys = ("decision", "non_inferiority_margin", "max_dice_drop", "min_agreement_dice")
    return SegGateConfig(**{k: getattr(g, k) for k in keys if getattr(g, k) is not None})


def _rows(csv_path: Path) -> list[dict[str, str]]:
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def _place(src: Path, dst: Path) -> None:
    """``src`` (a file or a folder) at ``dst``: hard links where possible, else copies."""
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
    for f in files:
        target = dst if src.is_file() else dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f, target)
        except OSError:
            shutil.copy2(f, target)


@dataclass(frozen=True)
class _Series:
    """What ``patient_split`` reads of a record."""

    row: dict[str, str]
    patient_id: str
    label: str | None


def _split_series(root: Path, ds_dir: Path, cfg: ReleaseConfig) -> dict[str, Any]:
    """Write the three split folders under ``ds_dir``; the split report."""
    from ..dicom.split import patient_split

    from ..volumes import index_series

    index_series(root)  # checks the layout (columns, series folders, mask files)
    rows = _rows(root / "labels.csv")
    if not rows or "mask" not in rows[0] or not all(r.get("mask") for r in rows):
        raise InvalidInputError("a segmentation release needs a mask for every series",
                                expected="labels.csv with columns path,label,patient_id,mask",
                                found=f"{sum(bool(r.get('mask')) for r in rows)} of {len(rows)} "
                                "series with a mask", code="bad-labels")
    items = [_Series(r, r.get("patient_id") or Path(r["path"]).parts[0], r.get("label") or None)
             for r in rows]
    splits = patient_split(items, tuple(cfg.data.split), seed=cfg.data.seed)  # type: ignore[arg-type]
    shutil.rmtree(ds_dir, ignore_errors=True)
    counts: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        mine = [it for it, s in zip(items, splits) if s == split]
        folder = ds_dir / split
        folder.mkdir(parents=True, exist_ok=True)
        for it in mine:
            _place(root / it.row["path"], folder / it.row["path"])
            _place(root / it.row["mask"], folder / it.row["mask"])
        with open(folder / "labels.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(it.row for it in mine)
        counts[split] = {"files": len(mine), "patients": len({it.patient_id for it in mine}),
                         "class": {"series with masks": len(mine)}, "scanner": {}}
    pids = [{it.patient_id for it, s in zip(items, splits) if s == k} for k in SPLITS]
    leaks = (pids[0] & pids[1]) | (pids[0] & pids[2]) | (pids[1] & pids[2])
    return {"counts": counts, "unit": "series",
            "leak_check": {"ok": not leaks, "patients_in_several_splits": len(leaks)}}


def dataset_step(cfg: ReleaseConfig, out: Path, state: StepState, say: Say) -> SegData:
    """Split the series by patient into ``<out>/dataset`` (skipped when nothing changed).

    Raises:
        InvalidInputError: ``not-found`` (no data folder), ``bad-labels`` (layout, masks),
            ``empty``.
    """
    root = cfg.path(cfg.data.dicom)
    if root is None or not root.is_dir():
        raise InvalidInputError("series folder not found", found=str(root), code="not-found")
    if not (root / "labels.csv").is_file():
        raise InvalidInputError("a segmentation release needs labels.csv with a mask column",
                                expected="labels.csv (path,label,patient_id,mask)",
                                found=f"no labels.csv in {root.name}", code="bad-labels")
    vspec, ispec = volume_specs(cfg)
    files = [p for p in root.rglob("*") if p.is_file()]
    key = content_key("seg-dataset", tree_key(files), cfg.data.model_dump(mode="json"),
                      vspec.to_dict(), ispec.to_dict())
    ds_dir = out / "dataset"
    done = state.done("dataset", key, [ds_dir / s / "labels.csv" for s in SPLITS])
    if done is not None:
        say("dataset: unchanged, skipped")
        report, skipped = dict(done["report"]), True
    else:
        say("dataset: indexing series, patient-level split")
        report, skipped = _split_series(root, ds_dir, cfg), False
        state.record("dataset", key, {"report": report})
    return SegData(train=ds_dir / "train", val=ds_dir / "val", test=ds_dir / "test",
                   report={"root": str(root), **report}, key=key, skipped=skipped)


def build_key(tr: Any, profile: TargetProfile, gate: SegGateConfig) -> str:
    """The content key of a segmentation build (``tr``: the flow's _TargetRelease)."""
    s = tr.s
    vspec, ispec = volume_specs(s.cfg)
    return content_key("seg-build", s.src.sha256, s.seg.key, profile.sha256, gate.model_dump(),
                       list(s.labels), vspec.to_dict(), ispec.to_dict(), list(s.cfg.model.input))


def run_build(tr: Any, profile: TargetProfile, art_dir: Path) -> dict[str, str]:
    """Build and gate the segmentation artifact into ``art_dir`` (raises GateError, ...)."""
    from ..pipeline import BuildOptions, build

    s, cfg = tr.s, tr.s.cfg
    vspec, ispec = volume_specs(cfg)
    build(s.src.module if s.src.kind == "torch" else s.src.onnx_path,
          input_shape=cfg.model.input, calibration=s.seg.train, validation=s.seg.val,
          target=profile, out=art_dir, labels=s.labels or None, preprocess=vspec,
          inference=ispec, task="segmentation", gate=seg_gate(cfg),
          options=BuildOptions(seed=cfg.data.seed), progress=lambda m: s.say(f"{tr.target}: {m}"))
    return {"artifact": str(art_dir)}


def seg_readback(path: Path, volume: Any) -> np.ndarray:
    """The label volume of the SEG file at ``path`` (highdicom), in ``volume``'s slice order.

    Raises:
        InvalidInputError: ``bad-seg`` (highdicom cannot read it or it misses source frames).
    """
    import highdicom as hd

    try:
        seg = hd.seg.segread(str(path))
        return np.asarray(seg.get_pixels_by_source_instance(
            source_sop_instance_uids=list(volume.sop_uids), combine_segments=True,
            assert_missing_frames_are_empty=True))
    except Exception as exc:  # highdicom / pydicom raise many types
        raise InvalidInputError("the device's DICOM SEG does not read back", found=type(exc).__name__,
                                fix="run `edgemed-run run` on the bundle to see the failure",
                                code="bad-seg") from None


def check(tr: Any, bundle_dir: Path, art: Any) -> dict[str, Any]:
    """The device check of a segmentation bundle: SEG written by the device on a held-out
    series, read back and compared with the build's labels; FP32 vs shipped overlays saved.
    Returns the check's record (``ok``, ``seg``, ``voxels_differing``, ...)."""
    from edgemed_runtime import Artifact, open_artifact, read_series
    from edgemed_runtime.sdk import atomic_write_bytes

    from .device_check import verify_seg_as_device
    from .seg_report import overlays_png

    cfg, series = tr.s.cfg, tr.s.seg.check_series
    tdir = Path(art.path).parent
    pub, key = cfg.path(cfg.signing.publisher_pub), cfg.path(cfg.signing.verify_device_key)
    if key is None:
        from edgemed_runtime.sdk import verify_bundle

        verify_bundle(bundle_dir, trust=pub, require_hardware=False)
        return {"ok": True, "mode": "signature and manifest only (no verify_device_key)"}
    python, where, install = _device_python(cfg, bundle_dir, tr.s.say, tr.target)
    tr.o.device_install = install
    tr.s.say(f"{tr.target}: device check: held-out series -> DICOM SEG in a runtime-only process")
    res = verify_seg_as_device(bundle_dir, pub, key, series, tdir / SEG_FILE, python=python)
    res["environment"], res["device_install"] = where, install
    if not res.get("ok"):
        return res
    vol = read_series(series)
    got = seg_readback(tdir / SEG_FILE, vol)
    with open_artifact(art) as sess:
        ref = sess.predict(vol).labels
    with open_artifact(Artifact.load(Path(art.path) / "reference")) as sess:
        fp32 = sess.predict(vol).labels
    differing = int(np.count_nonzero(got != ref)) if got.shape == ref.shape else int(ref.size)
    res.update(voxels_differing=differing, voxels=int(ref.size), series=series.name,
               mode=f"DICOM SEG written on the device ({where}), read back with highdicom",
               ok=differing == 0 and not res["leaked_modules"])
    atomic_write_bytes(tdir / OVERLAYS, overlays_png(vol, fp32, ref, names=tuple(res["labels"]),
                                                     title=f"{series.name}: FP32 vs {tr.o.chosen}"))
    return res


def _device_python(cfg: ReleaseConfig, bundle_dir: Path, say: Say, target: str
                   ) -> tuple[Path | None, str, str]:
    """The interpreter of the device check, where it runs and what the device installs: the
    bundle's requirements plus the runtime's ``outputs`` extra (highdicom, to write the SEG)."""
    from dataclasses import replace

    from edgemed_runtime.sdk import MANIFEST_FILE, parse_manifest, requirements_of

    req = requirements_of(parse_manifest((bundle_dir / MANIFEST_FILE).read_bytes()))
    req = replace(req, extras=tuple(sorted({*req.extras, "outputs"})))
    if cfg.release.device_check != "isolated":
        return None, "this interpreter, SDK packages blocked", req.install_line
    from .device_env import device_python

    say(f"{target}: preparing the device environment ({req.install_line})")
    return device_python(req), f"a venv with only: {req.install_line}", req.install_line


def latency(tr: Any, tdir: Path) -> dict[str, Any]:
    """End-to-end latency (series folder -> labels) of FP32 and the shipped artifact,
    interleaved in this process; ``{"candidates": {name: {"p50_ms", ...}}, "what"}``."""
    from edgemed_runtime import Artifact, open_artifact

    from ..bench.timing import interleaved_latency

    series, runs = tr.s.seg.check_series, max(5, min(tr.s.cfg.bench.runs, 10))
    art, name = Artifact.load(tdir / "artifact"), str(tr.o.chosen)
    tr.s.say(f"{tr.target}: timing series -> labels, FP32 vs {name} ({runs} runs each)")
    with open_artifact(Artifact.load(Path(art.path) / "reference")) as s32, \
            open_artifact(art) as sq:
        stats = interleaved_latency({"fp32": lambda: s32.predict(series),
                                     name: lambda: sq.predict(series)},
                                    runs=runs, warmup=1, block=1, settle=0)
    cands = {n: {"p50_ms": st.p50, "runs": runs} for n, st in stats.items()}
    p32 = cands["fp32"]["p50_ms"]
    for c in cands.values():
        c["ratio"] = c["p50_ms"] / p32 if p32 else None
    return {"candidates": cands, "what": f"end to end: series folder ({series.name}) -> labels on "
            "the original grid, in the release process"}
