"""The release project file (``edgemed.toml``): validated, unknown keys rejected, errors that
point at the line."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from .._config import Strict, validation_problems
from ..errors import InvalidInputError


class ModelSection(Strict):
    """Any intake form ``load_model`` takes, its weights, input shape and class names."""

    source: str
    weights: str | None = None
    input: tuple[int, ...] = (1, 1, 224, 224)
    labels: tuple[str, ...] = ()
    task: Literal["classification", "segmentation"] = "classification"
    """"segmentation": a volume model (``[preprocess] kind = "volume"``, ``[inference]``),
    data = series folders with masks (edgemed.release.segmentation)."""


class DataSection(Strict):
    """A DICOM folder with labels (labels.csv or one folder per class)."""

    dicom: str
    labels_csv: str | None = None
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 0
    calibration_count: int = Field(64, ge=1)


class PreprocessSection(Strict):
    """The PreprocessSpec, or ``model_card`` (a JSON file with a "preprocess" object)."""

    window: tuple[float, float] | None = None
    size: tuple[int, int] | None = None
    mean: float = 0.0
    std: float = 1.0
    channels: int | None = None
    model_card: str | None = None
    kind: Literal["slice", "volume"] = "slice"
    """"volume": the VolumeSpec fields below (a segmentation model on whole series)."""
    axcodes: str = "RAS"
    spacing: tuple[float, float, float] | None = None
    intensity: tuple[float, float, float, float] | None = None
    clip: bool = True


class InferenceSection(Strict):
    """How the device runs a volume (edgemed_runtime.InferenceSpec)."""

    mode: Literal["whole", "sliding_window"] = "sliding_window"
    roi_size: tuple[int, ...] = ()
    overlap: float = Field(0.25, ge=0, lt=1)
    blend: Literal["constant", "gaussian"] = "gaussian"
    sw_batch_size: int = Field(4, ge=1)


class GateSection(Strict):
    """Overrides of the profiles' gates (see ``edgemed.evaluate.GateConfig``)."""

    decision: Literal["non-inferiority", "absolute"] | None = None
    non_inferiority_margin: float | None = Field(None, gt=0, le=1)
    min_labelled_agreement: float | None = Field(None, ge=0, le=1)
    max_accuracy_drop: float | None = Field(None, ge=0)
    max_auc_drop: float | None = Field(None, ge=0)
    max_dice_drop: float | None = Field(None, ge=0)
    min_agreement_dice: float | None = Field(None, ge=0, le=1)


class SigningSection(Strict):
    """Publisher key (ECDSA P-256), device public keys, and an optional device private key the
    release uses to open each bundle exactly as a device would."""

    publisher_key: str
    publisher_pub: str
    passphrase_env: str | None = None
    devices: tuple[str, ...] = Field(min_length=1)
    verify_device_key: str | None = None


class ReleaseSection(Strict):
    family: str
    version: str
    counter: int = Field(ge=1)
    targets: tuple[str, ...] = Field(min_length=1)
    expiry_days: int = Field(365, ge=1)
    hardware_ids: tuple[str, ...] = ()
    out: str = "release"
    require_compressed: bool = False
    """True: a target whose only shippable candidate is the FP32 baseline fails instead."""
    device_runtime: Literal["any", "base"] = "any"
    """"base": choose only variants the base device runtime runs (``pip install
    edgemed-runtime``, onnxruntime formats); "any": extras such as openvino may be needed."""
    device_check: Literal["isolated", "host"] = "isolated"
    """"isolated": the device check runs in a cached venv holding only the runtime and the
    bundle's declared extra (edgemed.release.device_env); "host": in this interpreter."""


class BenchSection(Strict):
    enabled: bool = True
    runs: int = Field(50, ge=5)
    processes: int = Field(2, ge=1)


class ReleaseConfig(Strict):
    """The whole project file; relative paths are relative to the file's folder."""

    model: ModelSection
    data: DataSection
    release: ReleaseSection
    signing: SigningSection
    preprocess: PreprocessSection = PreprocessSection()
    gate: GateSection = GateSection()
    bench: BenchSection = BenchSection()
    inference: InferenceSection | None = None
    base_dir: str = "."

    @model_validator(mode="after")
    def _check(self) -> "ReleaseConfig":
        if len(set(self.release.targets)) != len(self.release.targets):
            raise ValueError("targets repeat")
        if abs(sum(self.data.split) - 1.0) > 1e-6:
            raise ValueError("data.split must sum to 1")
        seg = self.model.task == "segmentation"
        if seg != (self.preprocess.kind == "volume"):
            raise ValueError('model.task = "segmentation" goes with preprocess.kind = "volume" '
                             "(and a slice model with the default kind)")
        if seg and self.inference is None:
            raise ValueError("a segmentation release needs an [inference] section "
                             '(mode = "whole", or "sliding_window" with roi_size)')
        if not seg and self.inference is not None:
            raise ValueError("[inference] is for segmentation models only")
        return self

    def path(self, p: str | None) -> Path | None:
        """Resolve ``p`` against the project file's folder."""
        if p is None:
            return None
        q = Path(os.path.expandvars(os.path.expanduser(p)))
        return q if q.is_absolute() else Path(self.base_dir) / q


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line where the last named key of ``loc`` appears (best effort)."""
    keys = [k for k in loc if isinstance(k, str)]
    if not keys:
        return None
    lines = text.splitlines()
    section = keys[0] if len(keys) > 1 else None
    start = 0
    if section is not None:
        for i, line in enumerate(lines):
            if re.match(rf"^\s*\[\s*{re.escape(section)}\s*\]", line):
                start = i
                break
    pat = re.compile(rf"^\s*{re.escape(keys[-1])}\s*=|^\s*\[\s*{re.escape(keys[-1])}\s*\]")
    for i in range(start, len(lines)):
        if pat.match(lines[i]):
            return i + 1
    return None


def load_release_config(path: str | os.PathLike[str]) -> ReleaseConfig:
    """Read and validate a release project file.

    Raises:
        InvalidInputError: missing file, bad TOML (with line), unknown or invalid keys (with line).
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError("release project file not found", found=str(p), code="not-found",
                                fix="write an edgemed.toml (see docs/release.md)")
    text = p.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInputError("project file is not valid TOML", found=f"{p}: {exc}",
                                code="bad-config") from None
    data.setdefault("base_dir", str(p.resolve().parent))
    try:
        return ReleaseConfig(**data)
    except ValidationError as exc:
        def where(loc: tuple[Any, ...]) -> str:
            line = _line_of(text, loc)
            return f"{p.name}:{line}: " if line else f"{p.name}: "

        raise InvalidInputError("invalid release project file",
                                found=validation_problems(exc, "(file)", where),
                                fix="fix the keys named (unknown keys are rejected)",
                                code="bad-config") from None
