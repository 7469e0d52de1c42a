"""The demo: the whole product on built-in synthetic data.

Synthetic CT DICOM -> patient-level split -> train a small MONAI ResNet -> ``edgemed release``
for every target this host can build and check (cpu-x86, openvino-cpu, mobile-android): build,
accuracy gate, seal for a demo device, open as that device in a runtime-only process, benchmark,
register, report -> FP32 vs INT8 on held-out patients and predictions on held-out DICOM files.

No network and no arguments needed; everything is written under ``out`` (default
``./edgemed-demo``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgemed_runtime import Artifact, PreprocessSpec

DEMO_SPEC = PreprocessSpec(window=(40.0, 400.0), size=(128, 128))


@dataclass(frozen=True)
class DemoConfig:
    """Size of the demo task."""

    n_patients: int = 24
    slices_per_patient: int = 20
    image_size: int = 256
    epochs: int = 8
    seed: int = 0
    targets: tuple[str, ...] = ("cpu-x86", "openvino-cpu", "mobile-android")


@dataclass
class DemoResult:
    """What the demo measured (all figures from one run)."""

    out: Path
    artifact: Path
    split: dict[str, int]
    history: dict[str, list[float]]
    fp32: dict[str, float]
    int8: dict[str, float]
    agreement: dict[str, float]
    size_bytes: dict[str, int]
    latency_ms: dict[str, float]
    chosen_variant: str
    why: str
    predictions: list[dict[str, Any]] = field(default_factory=list)
    release: dict[str, Any] = field(default_factory=dict)


def demo_model() -> Any:
    """A small MONAI ResNet (basic blocks 2-2-2-2, the ResNet-18 layout, widths 32..256,
    stride-2 stem), 1 input channel, 2 classes."""
    from monai.networks.nets import ResNet

    return ResNet(block="basic", layers=[2, 2, 2, 2], block_inplanes=[32, 64, 128, 256],
                  spatial_dims=2, n_input_channels=1, num_classes=2, conv1_t_stride=2)


def demo_targets(wanted: tuple[str, ...]) -> list[str]:
    """The wanted targets whose variants can be built here (packages present)."""
    from .pipeline import variant_unavailable
    from .targets import load_target

    out = []
    for name in wanted:
        prof = load_target(name)
        if any(not variant_unavailable(v) for v in prof.variants):
            out.append(name)
    return out


def _write_project(root: Path, cfg: DemoConfig, targets: list[str]) -> Path:
    size = DEMO_SPEC.size or (128, 128)
    text = f"""# written by `edgemed demo`: the release project for the synthetic task
[model]
source = "edgemed.demo:demo_model"
weights = "demo_model.pt"
input = [1, 1, {size[0]}, {size[1]}]
labels = ["no_lesion", "lesion"]

[data]
dicom = "dicom"
split = [0.6, 0.2, 0.2]
seed = {cfg.seed}
calibration_count = 64

[preprocess]
window = [{DEMO_SPEC.window[0]}, {DEMO_SPEC.window[1]}]

[release]
family = "demo-ct-lesion"
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
runs = 30
processes = 1
"""
    path = root / "edgemed.toml"
    path.write_text(text)
    return path


def run_demo(out: str | os.PathLike[str] = "edgemed-demo", config: DemoConfig = DemoConfig(),
             progress: Callable[[str], None] | None = None) -> DemoResult:
    """Run the whole demo; return its figures. Raises EdgemedError subclasses on failure."""
    from edgemed_runtime.sdk import softmax

    from .evaluate import agreement, classification_metrics

    say = progress or (lambda msg: None)
    root = Path(out)
    xs = _data(root, config, say)
    hist = _train(root, config, xs, say)
    rel, first = _release(root, config, say)
    art = Artifact.load(first.artifact)  # type: ignore[arg-type]
    ref = Artifact.load(Path(first.artifact) / "reference")  # type: ignore[arg-type]
    say("evaluating FP32 and INT8 on held-out patients")
    xt, yt = xs["test"]
    l32, l8, lat, preds = _held_out(root, ref, art, xt, yt)
    return DemoResult(
        out=root, artifact=art.path,
        split={k: int(len(v[1])) for k, v in xs.items()},
        history={"loss": hist.loss, "val_accuracy": hist.val_accuracy},
        fp32=classification_metrics(softmax(l32.astype(np.float64)), yt),
        int8=classification_metrics(softmax(l8.astype(np.float64)), yt),
        agreement=agreement(l32, l8),
        size_bytes={"fp32": ref.model_path.stat().st_size, "int8": art.model_path.stat().st_size},
        latency_ms={"fp32": lat["fp32"].p50, "int8": lat["int8"].p50},
        chosen_variant=str(first.chosen), why=str(first.why), predictions=preds,
        release=rel.to_dict(),
    )


def _data(root: Path, config: DemoConfig,
          say: Callable[[str], None]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Synthetic CT DICOM under ``root``, split by patient and decoded; ``{split: (x, y)}``."""
    from .data.synthetic import make_dataset
    from .dicom import DicomDataset, build_dataset

    say("writing synthetic CT DICOM")
    make_dataset(root / "dicom", n_patients=config.n_patients,
                 slices_per_patient=config.slices_per_patient, size=config.image_size,
                 seed=config.seed)
    say("indexing, patient-level split, decoding")
    build_dataset(root / "dicom", root / "train-data", spec=DEMO_SPEC, fractions=(0.6, 0.2, 0.2),
                  seed=config.seed, decode=True)
    return {s: DicomDataset.from_manifest(root / "train-data", s).arrays()
            for s in ("train", "val", "test")}


def _train(root: Path, config: DemoConfig, xs: dict[str, tuple[np.ndarray, np.ndarray]],
           say: Callable[[str], None]) -> Any:
    """Train the demo model, save it as ``demo_model.pt``; the training history."""
    import torch

    from .train import TrainConfig, train_classifier

    torch.manual_seed(config.seed)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    model = demo_model()
    say(f"training for {config.epochs} epochs")
    hist = train_classifier(
        model, *xs["train"], TrainConfig(epochs=config.epochs, seed=config.seed), val=xs["val"],
        on_epoch=lambda e, r: say(f"epoch {e + 1}/{config.epochs}: loss {r['loss']:.3f}, "
                                  f"val acc {r.get('val_accuracy', float('nan')):.3f}"),
    )
    torch.save(model.state_dict(), root / "demo_model.pt")
    return hist


def _release(root: Path, config: DemoConfig, say: Callable[[str], None]) -> tuple[Any, Any]:
    """The demo keys (kept if there), the project file and ``edgemed release``; the release
    and its first shipped target. Raises GateError / EdgemedError when none shipped."""
    from .bundle import generate_keypair
    from .release import release
    from .release.flow import SHIPPED

    for kind, name in (("publisher", "publisher"), ("device", "demo-device")):
        if not (root / "keys" / f"{name}.key").is_file():
            generate_keypair(root / "keys", kind=kind, name=name)
    targets = demo_targets(config.targets)
    project = _write_project(root, config, targets)
    say(f"release for {', '.join(targets)}")
    rel = release(project, progress=say)
    first = next((t for t in rel.targets if t.status in SHIPPED), None)
    if first is None:
        from .errors import EdgemedError, GateError

        cls = GateError if rel.exit_code == 1 else EdgemedError
        raise cls("no target was released", found="; ".join(
            f"{t.target}: {t.status}: {(t.error or {}).get('message')}" for t in rel.targets),
            fix=f"see {rel.report}")
    return rel, first


def _held_out(root: Path, ref: Artifact, art: Artifact, xt: np.ndarray, yt: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, dict[str, Any], list[dict[str, Any]]]:
    """FP32 and INT8 logits on the test split, their interleaved latency, and INT8 predictions
    on the first four held-out DICOM files."""
    from edgemed_runtime import open_artifact

    from .bench.timing import interleaved_latency
    from .dicom import DicomDataset

    names = ("no_lesion", "lesion")
    manifest = DicomDataset.from_manifest(root / "train-data", "test")
    test_files = [manifest.manifest.root / manifest.manifest.records[i].path
                  for i in manifest.indices][:4]
    with open_artifact(ref) as s32, open_artifact(art) as s8:
        l32 = s32.logits(xt)
        l8 = s8.logits(xt)
        one = xt[:1]
        lat = interleaved_latency({"fp32": lambda: s32.logits(one), "int8": lambda: s8.logits(one)},
                                  runs=50, warmup=5)
        preds = []
        for p, lab in zip(test_files, yt[: len(test_files)]):
            probs = s8.predict(str(p))[0]
            preds.append({"file": os.path.relpath(p, root.resolve()), "label": names[int(lab)],
                          "predicted": names[int(probs.argmax())], "p_lesion": round(float(probs[1]), 4)})
    return l32, l8, lat, preds
