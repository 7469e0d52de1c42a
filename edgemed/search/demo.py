"""The built-in synthetic task of ``edgemed search --demo``: a newcomer's first search.

Writes the synthetic CT DICOM set (edgemed.data.synthetic), loads it through the DICOM layer,
splits by patient (train / validation), and trains a small CNN (``small_cnn``) once; the trained
weights are cached beside the data (``fp32.pt`` + ``fp32.json``), so a resumed search reuses them.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from edgemed_runtime.sdk import atomic_write_bytes

from .study import SearchTask


def small_cnn(in_channels: int = 1, classes: int = 2, width: int = 16) -> Any:
    """Conv-BN-ReLU blocks (stride 2) + global pooling + Linear: prunable, quick to train."""
    import torch.nn as nn

    def block(i: int, o: int) -> Any:
        return nn.Sequential(nn.Conv2d(i, o, 3, stride=2, padding=1, bias=False),
                             nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                             nn.Conv2d(o, o, 3, padding=1, bias=False), nn.BatchNorm2d(o),
                             nn.ReLU(inplace=True))

    w = width
    return nn.Sequential(block(in_channels, w), block(w, 2 * w), block(2 * w, 4 * w),
                         block(4 * w, 8 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8 * w, classes))


def demo_arrays(root: str | Path, *, n_patients: int = 16, slices_per_patient: int = 16,
                size: int = 64, seed: int = 0) -> tuple[tuple[np.ndarray, np.ndarray],
                                                        tuple[np.ndarray, np.ndarray], tuple[str, ...]]:
    """Write (if missing) and load the synthetic DICOM set; split the patients 3:1."""
    from edgemed_runtime import PreprocessSpec

    from ..data.synthetic import make_dataset
    from ..dicom.folder import load_folder

    root = Path(root)
    if not (root / "labels.csv").is_file():
        make_dataset(root, n_patients=n_patients, slices_per_patient=slices_per_patient,
                     size=size, seed=seed)
    data = load_folder(root, PreprocessSpec(size=(size, size), window=(40, 400)))
    patients = np.array([p.parent.name for p in data.paths])
    ids = sorted(set(patients))
    val_ids = ids[:: 4]
    is_val = np.isin(patients, val_ids)
    y = np.asarray(data.y)
    return ((data.x[~is_val], y[~is_val]), (data.x[is_val], y[is_val]), tuple(data.class_names))


def demo_task(root: str | Path, *, seed: int = 0, epochs: int = 12, size: int = 64,
              n_patients: int = 24, progress: Any = None) -> SearchTask:
    """The synthetic task with a trained FP32 ``small_cnn`` (trained once, then cached)."""
    import torch

    from .._torch import predict_logits
    from ..train import TrainConfig, train_classifier

    root = Path(root)
    train, val, names = demo_arrays(root / "dicom", size=size, seed=seed, n_patients=n_patients)
    model = small_cnn(train[0].shape[1], len(names))
    meta = {"seed": seed, "epochs": epochs, "size": size, "n_patients": n_patients,
            "model": "small_cnn(width=16)", "bn": "recalibrated"}
    weights, meta_file = root / "fp32.pt", root / "fp32.json"
    if weights.is_file() and meta_file.is_file() and json.loads(meta_file.read_text()) == meta:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    else:
        torch.manual_seed(seed)
        train_classifier(model, train[0], train[1], TrainConfig(epochs=epochs, lr=3e-3,
                                                                seed=seed, recalibrate_bn=True),
                         val=val,
                         on_epoch=(lambda e, r: progress(f"training FP32 model: epoch {e + 1}/"
                                                         f"{epochs}, val accuracy "
                                                         f"{r['val_accuracy']:.3f}"))
                         if progress else None)
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        atomic_write_bytes(weights, buf.getvalue())
        atomic_write_bytes(meta_file, json.dumps(meta).encode())
    model.eval()
    acc = float((predict_logits(model, val[0]).argmax(1) == val[1]).mean())
    rng = np.random.default_rng(seed)
    calib = train[0][rng.permutation(len(train[0]))[:64]]
    return SearchTask(model=model, train=train, val=val, calibration=calib, class_names=names,
                      description=f"synthetic CT lesion task {size}x{size}, {len(train[1])} train "
                      f"/ {len(val[1])} val slices, small_cnn FP32 val accuracy {acc:.3f}")
