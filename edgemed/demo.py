"""The demo: synthetic CT DICOM -> train a small MONAI network -> CPU INT8 artifact -> evaluate
FP32 vs INT8 on held-out patients -> predict on held-out DICOM files through the runtime.

No network and no arguments needed; everything is written under ``out`` (default
``./edgemed-demo``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgemed_runtime.preprocess import PreprocessSpec

DEMO_SPEC = PreprocessSpec(window=(40.0, 400.0), size=(128, 128))


@dataclass(frozen=True)
class DemoConfig:
    """Size of the demo task (defaults finish in about a minute on 2 cores)."""

    n_patients: int = 24
    slices_per_patient: int = 20
    image_size: int = 256
    epochs: int = 8
    seed: int = 0
    target: str = "cpu-x86"


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


def demo_model() -> Any:
    """A small MONAI ResNet (basic blocks 2-2-2-2 (ResNet-18 layout), widths 32..256, stride-2 stem), 2 classes."""
    from monai.networks.nets import ResNet

    return ResNet(block="basic", layers=[2, 2, 2, 2], block_inplanes=[32, 64, 128, 256],
                  spatial_dims=2, n_input_channels=1, num_classes=2, conv1_t_stride=2)


def patient_split(patients: list[str], seed: int, fractions: tuple[float, float] = (0.6, 0.2)
                  ) -> dict[str, str]:
    """Assign each patient to train / val / test (no patient in two splits)."""
    uniq = sorted(set(patients))
    rng = np.random.default_rng(seed)
    rng.shuffle(uniq)
    n_train = int(round(len(uniq) * fractions[0]))
    n_val = int(round(len(uniq) * fractions[1]))
    return {p: ("train" if i < n_train else "val" if i < n_train + n_val else "test")
            for i, p in enumerate(uniq)}


def run_demo(out: str | os.PathLike[str] = "edgemed-demo", config: DemoConfig = DemoConfig(),
             progress: Callable[[str], None] | None = None) -> DemoResult:
    """Run the whole demo; return its figures. Raises EdgemedError subclasses on failure."""
    import torch

    from edgemed_runtime.api import open_artifact
    from edgemed_runtime.artifact import Artifact
    from edgemed_runtime.dicom import load_input
    from edgemed_runtime.session import softmax

    from .bench.timing import interleaved_latency
    from .data.synthetic import make_dataset
    from .dicom.folder import LabelledArrays
    from .evaluate import agreement, classification_metrics
    from .pipeline import BuildOptions, build
    from .train import TrainConfig, train_classifier

    say = progress or (lambda msg: None)
    root = Path(out)
    say("writing synthetic CT DICOM")
    ds = make_dataset(root / "dicom", n_patients=config.n_patients,
                      slices_per_patient=config.slices_per_patient, size=config.image_size,
                      seed=config.seed)
    split = patient_split(list(ds.patients), config.seed)
    say("decoding and preprocessing")
    x = np.stack([load_input(p, DEMO_SPEC) for p in ds.paths])
    y = np.asarray(ds.labels, dtype=np.int64)
    parts = {s: np.array([split[p] == s for p in ds.patients]) for s in ("train", "val", "test")}
    torch.manual_seed(config.seed)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    model = demo_model()
    say(f"training for {config.epochs} epochs")
    hist = train_classifier(
        model, x[parts["train"]], y[parts["train"]], TrainConfig(epochs=config.epochs, seed=config.seed),
        val=(x[parts["val"]], y[parts["val"]]),
        on_epoch=lambda e, r: say(f"epoch {e + 1}/{config.epochs}: loss {r['loss']:.3f}, "
                                  f"val acc {r.get('val_accuracy', float('nan')):.3f}"),
    )
    torch.save(model.state_dict(), root / "demo_model.pt")
    names = ds.class_names
    val = LabelledArrays(x[parts["val"]], y[parts["val"]], names, ())
    say(f"building the {config.target} artifact")
    art = build(model, torch.zeros(1, *x.shape[1:]), calibration=x[parts["train"]], validation=val,
                target=config.target, out=root / "artifact", labels=names, preprocess=DEMO_SPEC,
                options=BuildOptions(seed=config.seed), progress=say)
    ref = Artifact.load(root / "artifact" / "reference")
    say("evaluating FP32 and INT8 on held-out patients")
    xt, yt = x[parts["test"]], y[parts["test"]]
    with open_artifact(ref) as s32, open_artifact(art) as s8:
        l32 = s32.logits(xt)
        l8 = s8.logits(xt)
        one = xt[:1]
        lat = interleaved_latency({"fp32": lambda: s32.logits(one), "int8": lambda: s8.logits(one)},
                                  runs=50, warmup=5)
        test_files = [p for p, part in zip(ds.paths, parts["test"]) if part][:4]
        preds = []
        for p in test_files:
            probs = s8.predict(str(p))[0]
            preds.append({"file": str(p.relative_to(root)), "label": names[ds.labels[ds.paths.index(p)]],
                          "predicted": names[int(probs.argmax())], "p_lesion": round(float(probs[1]), 4)})
    sel = next(r for r in art.provenance if r.get("pass") == "select_variant")
    return DemoResult(
        out=root, artifact=art.path,
        split={k: int(v.sum()) for k, v in parts.items()},
        history={"loss": hist.loss, "val_accuracy": hist.val_accuracy},
        fp32=classification_metrics(softmax(l32.astype(np.float64)), yt),
        int8=classification_metrics(softmax(l8.astype(np.float64)), yt),
        agreement=agreement(l32, l8),
        size_bytes={"fp32": ref.model_path.stat().st_size, "int8": art.model_path.stat().st_size},
        latency_ms={"fp32": lat["fp32"].p50, "int8": lat["int8"].p50},
        chosen_variant=str(sel["chosen"]), why=str(sel["why"]), predictions=preds,
    )
