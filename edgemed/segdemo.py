"""``edgemed demo --task segmentation``: the segmentation product on built-in synthetic data.

Synthetic CT series with two organ labels (liver, kidney; NIfTI masks) -> a small MONAI 3D UNet
trained on ROI crops of the training patients' series (seeded, one thread, about 20 s on a
quiet 2-core host) -> ``edgemed release`` with ``[model] task = "segmentation"`` for the targets buildable
here (cpu-x86, openvino-cpu, mobile-android): patient-level split, build, Dice / HD95 gate with
paired bootstrap CIs, seal, device check (held-out series -> DICOM SEG in a runtime-only
process, read back with highdicom), latency, register, report -> a DICOM SEG for every held-out
series written through the runtime with the first shipped artifact.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .data.synthetic_series import ORIENTATION_NAMES
from .data.synthetic_series import SPACINGS as SERIES_SPACINGS
from .errors import InvalidInputError

LABELS = ("background", "liver", "kidney")
SPACING = (2.0, 2.0, 2.0)
INTENSITY = (-100.0, 150.0, 0.0, 1.0)  # soft-tissue window: kidney 32 HU vs body 20 HU
BATCH, LR, FG = 4, 1e-2, 0.67
# Series s gets ORIENTATIONS[s % 7] and SPACINGS[s % 5] (the four of each, cycled): with 12
# patients a patient's two series (s, s + 12) differ in both, so a patient-level split trains on
# every orientation and spacing (the phantom fills each field of view, so they differ in shape).
ORIENTATIONS = tuple(ORIENTATION_NAMES[i % 4] for i in range(7))
SPACINGS = tuple(SERIES_SPACINGS[i % 4] for i in range(5))


@dataclass(frozen=True)
class SegDemoConfig:
    """Size of the segmentation demo (the defaults train in about 20 s on a quiet 2-core host)."""

    n_series: int = 24
    n_patients: int = 12
    shape: tuple[int, int, int] = (24, 40, 40)
    roi: int = 16
    steps: int = 1500
    seed: int = 0
    targets: tuple[str, ...] = ("cpu-x86", "openvino-cpu", "mobile-android")


@dataclass
class SegDemoResult:
    """What the segmentation demo did (figures from one run)."""

    out: Path
    split: dict[str, int]
    train_seconds: float
    final_loss: float
    release: dict[str, Any]
    artifact: Path | None
    chosen_variant: str | None
    seg_files: list[str] = field(default_factory=list)
    volumes_ml: list[dict[str, Any]] = field(default_factory=list)
    unsupported: dict[str, str] = field(default_factory=dict)
    """Targets not released because their format cannot hold this model, and why."""


def unsupported_for_3d(target: str) -> str | None:
    """Why ``target`` cannot ship the demo's sliding-window 3D model (its variants all fix the
    input shape), or None when it can."""
    from .targets import load_target

    prof = load_target(target)
    fixed = [v.name for v in prof.variants
             if any(isinstance(p, dict) and p.get("fix_batch") for p in v.passes)]
    if prof.variants and len(fixed) == len(prof.variants):
        return ("not supported for 3D: its format (ORT Mobile, fixed shapes) keeps only the batch "
                "dimension dynamic, and a sliding-window 3D model needs dynamic spatial sizes")
    return None


def demo_unet() -> Any:
    """The demo network: MONAI 3D UNet, channels 8-16-32, strides 2-2, 1 input, 3 outputs
    (background, liver, kidney)."""
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=1, out_channels=len(LABELS), channels=(8, 16, 32),
                strides=(2, 2), num_res_units=0)


def _write_project(root: Path, cfg: SegDemoConfig, targets: list[str]) -> Path:
    text = f"""# written by `edgemed demo --task segmentation`
[model]
source = "edgemed.segdemo:demo_unet"
weights = "demo_unet.pt"
task = "segmentation"
input = [1, 1, {cfg.roi}, {cfg.roi}, {cfg.roi}]
labels = {json.dumps(list(LABELS))}

[data]
dicom = "series"
split = [0.5, 0.25, 0.25]
seed = {cfg.seed}

[preprocess]
kind = "volume"
axcodes = "RAS"
spacing = {json.dumps(list(SPACING))}
intensity = {json.dumps(list(INTENSITY))}

[inference]
mode = "sliding_window"
roi_size = [{cfg.roi}, {cfg.roi}, {cfg.roi}]
overlap = 0.25
blend = "gaussian"
sw_batch_size = 4

[release]
family = "demo-ct-organs"
version = "1.0.0"
counter = 1
targets = {json.dumps(targets)}
out = "release"

[signing]
publisher_key = "keys/publisher.key"
publisher_pub = "keys/publisher.pub"
devices = ["keys/demo-device.pub"]
verify_device_key = "keys/demo-device.key"

[bench]
runs = 10
processes = 1
"""
    path = root / "edgemed.toml"
    path.write_text(text)
    return path


def _training_arrays(folder: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Model-grid (C, z, y, x) images and (z, y, x) labels of the series in ``folder``."""
    from edgemed_runtime import VolumeSpec

    from .tasks.segmentation import load_cases

    spec = VolumeSpec(axcodes="RAS", spacing=SPACING, intensity=INTENSITY)
    vols, truths = load_cases(folder)
    xs, ys = [], []
    for v, m in zip(vols, truths or []):
        xs.append(spec.apply(v)[0])
        ys.append(spec.apply_labels(m, affine=v.affine))
    return xs, ys


def _padded(a: np.ndarray, roi: int, spatial: int) -> np.ndarray:
    """``a`` padded with zeros at the end of its last ``spatial`` axes to at least ``roi``."""
    pad = [(0, 0)] * (a.ndim - spatial) + [(0, max(0, roi - d)) for d in a.shape[-spatial:]]
    return np.pad(a, pad)


def _crop_start(y: np.ndarray, roi: int, rng: np.random.Generator, fg: float) -> list[int]:
    """A crop corner: with probability ``fg`` centred on a voxel of a label drawn uniformly
    among the labels present (MONAI RandCropByLabelClasses with equal ratios), else anywhere."""
    present = [k for k in np.unique(y) if k > 0]
    if present and rng.random() < fg:
        vox = np.argwhere(y == present[int(rng.integers(len(present)))])
        centre = vox[int(rng.integers(len(vox)))]
        return [int(np.clip(c - roi // 2, 0, d - roi)) for c, d in zip(centre, y.shape)]
    return [int(rng.integers(0, d - roi + 1)) for d in y.shape]


def _batch(xs: list[np.ndarray], ys: list[np.ndarray], roi: int, rng: np.random.Generator,
           size: int, fg: float) -> tuple[Any, Any]:
    """``size`` random ``roi``-cube crops: (B, C, r, r, r) float32 and (B, 1, r, r, r) int64."""
    import torch

    bx, by = [], []
    for _ in range(size):
        i = int(rng.integers(len(xs)))
        crop = tuple(slice(a, a + roi) for a in _crop_start(ys[i], roi, rng, fg))
        bx.append(xs[i][(slice(None), *crop)])
        by.append(ys[i][crop][None].astype(np.int64))
    return torch.from_numpy(np.stack(bx)), torch.from_numpy(np.stack(by))


def train_unet(xs: list[np.ndarray], ys: list[np.ndarray], *, roi: int, steps: int,
               seed: int, batch: int = BATCH, lr: float = LR, fg: float = FG,
               make_net: Callable[[], Any] | None = None) -> tuple[Any, float]:
    """Train ``demo_unet`` (or ``make_net()``, seeded the same way) on batches of ``roi``-cube crops (a share ``fg`` centred on a labelled
    voxel, labels drawn uniformly; Adam at ``lr`` with cosine decay, MONAI DiceCE loss, seeded);
    the network (eval mode) and the last loss.

    Raises:
        InvalidInputError: ``empty`` (no training series).
    """
    import torch

    if not xs:
        raise InvalidInputError("no training series for the demo network", code="empty",
                                fix="more series (n_series) or a larger train split")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny steps: a 2nd thread gains nothing idle, 10x slower when shared
    try:
        return _fit(xs, ys, roi=roi, steps=steps, seed=seed, batch=batch, lr=lr, fg=fg,
                    make_net=make_net or demo_unet)
    finally:
        torch.set_num_threads(threads)


def _fit(xs: list[np.ndarray], ys: list[np.ndarray], *, roi: int, steps: int, seed: int,
         batch: int, lr: float, fg: float, make_net: Callable[[], Any]) -> tuple[Any, float]:
    """``train_unet``'s loop (see there)."""
    import torch
    from monai.losses import DiceCELoss

    torch.manual_seed(seed)
    net = make_net()
    opt = torch.optim.Adam(net.parameters(), lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    lossf = DiceCELoss(to_onehot_y=True, softmax=True)
    rng = np.random.default_rng(seed)
    xs = [_padded(x, roi, 3) for x in xs]
    ys = [_padded(y, roi, 3) for y in ys]
    loss = float("nan")
    net.train()
    for _ in range(steps):
        xb, yb = _batch(xs, ys, roi, rng, batch, fg)
        opt.zero_grad()
        out = lossf(net(xb), yb)
        out.backward()
        opt.step()
        sched.step()
        loss = float(out.detach())
    return net.eval(), loss


def run_segmentation_demo(out: str | os.PathLike[str] = "edgemed-seg-demo",
                          config: SegDemoConfig = SegDemoConfig(),
                          progress: Callable[[str], None] | None = None) -> SegDemoResult:
    """Run the segmentation demo under ``out``; return what it did.

    Raises:
        EdgemedError subclasses (a bad size, a release that stops every target).
    """
    import torch

    from .data.synthetic_series import write_series_dataset
    from .demo import demo_targets
    from .release import release
    from .release.config import load_release_config
    from .release.segmentation import dataset_step
    from .release.state import StepState

    say = progress or (lambda msg: None)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    say(f"writing {config.n_series} synthetic CT series with liver / kidney masks")
    write_series_dataset(root / "series", n_series=config.n_series, seed=config.seed,
                         shape=config.shape, n_patients=config.n_patients, masks=True,
                         orientations=ORIENTATIONS, spacings=SPACINGS)
    _keys(root)
    unsupported = {t: why for t in config.targets if (why := unsupported_for_3d(t))}
    targets = [t for t in demo_targets(config.targets) if t not in unsupported]
    if not targets:
        raise InvalidInputError("no target here can release the 3D demo", code="bad-option",
                                found=", ".join(f"{t}: {w}" for t, w in unsupported.items()),
                                fix="--targets cpu-x86,openvino-cpu")
    project = _write_project(root, config, targets)
    cfg = load_release_config(project)
    out_dir = cfg.path(cfg.release.out) or root / "release"
    out_dir.mkdir(parents=True, exist_ok=True)
    data = dataset_step(cfg, out_dir, StepState(out_dir / ".release-state.json"), say)
    say("training the 3D UNet on the training patients' series")
    xs, ys = _training_arrays(data.train)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    t0 = time.perf_counter()
    net, loss = train_unet(xs, ys, roi=config.roi, steps=config.steps, seed=config.seed)
    seconds = time.perf_counter() - t0
    torch.save(net.state_dict(), root / "demo_unet.pt")
    say(f"trained in {seconds:.0f} s (loss {loss:.3f}); release for {', '.join(targets)}")
    rel = release(project, progress=say)
    res = SegDemoResult(out=root, split={k: int(v.get("files", 0)) for k, v in
                                         (data.report.get("counts") or {}).items()},
                        train_seconds=seconds, final_loss=loss, release=rel.to_dict(),
                        artifact=None, chosen_variant=None, unsupported=unsupported)
    _held_out_segs(res, rel, data.test, root / "seg", say)
    return res


def _keys(root: Path) -> None:
    from .bundle import generate_keypair

    for kind, name in (("publisher", "publisher"), ("device", "demo-device")):
        if not (root / "keys" / f"{name}.key").is_file():
            generate_keypair(root / "keys", kind=kind, name=name)


def _held_out_segs(res: SegDemoResult, rel: Any, test: Path, seg_dir: Path,
                   say: Callable[[str], None]) -> None:
    """DICOM SEG of every held-out series with the first shipped target's artifact."""
    from edgemed_runtime import Artifact, open_artifact, write_seg

    from .release.flow import SHIPPED
    from .volumes import index_series

    first = next((t for t in rel.targets if t.status in SHIPPED), None)
    if first is None or not first.artifact:
        return
    res.artifact, res.chosen_variant = Path(first.artifact), first.chosen
    seg_dir.mkdir(parents=True, exist_ok=True)
    say(f"writing DICOM SEG for the held-out series with {first.target} {first.chosen}")
    with open_artifact(Artifact.load(first.artifact)) as sess:
        for item in index_series(test):
            r = sess.predict(item.folder)
            path = seg_dir / f"{item.folder.parent.name}_{item.name}.seg.dcm"
            write_seg(str(path), r.labels, r.source, label_names=r.label_names,
                      algorithm=("edgemed-demo", "1"))
            res.seg_files.append(str(path))
            res.volumes_ml.append({"series": f"{item.folder.parent.name}/{item.name}",
                                   **{k: round(v, 2) for k, v in r.volumes_ml().items()}})
