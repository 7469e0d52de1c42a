"""IO specification of a model: input name/shape/dtype, output names, class labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import InvalidInputError

_DTYPES = ("float32", "float16", "uint8", "int8")


@dataclass(frozen=True)
class IOSpec:
    """What a model takes and returns.

    ``input_shape`` includes the batch dimension; with ``dynamic_batch`` the first dimension is
    a placeholder (stored as given, usually 1) and any batch size is accepted. With
    ``dynamic_spatial`` (fully-convolutional models) the spatial sizes after the channel axis are
    the example's (the ROI) and any size of the same rank is accepted.
    """

    input_name: str = "input"
    input_shape: tuple[int, ...] = (1, 1, 224, 224)
    input_dtype: str = "float32"
    output_names: tuple[str, ...] = ("logits",)
    dynamic_batch: bool = True
    labels: tuple[str, ...] = field(default_factory=tuple)
    dynamic_spatial: bool = False

    def __post_init__(self) -> None:
        if len(self.input_shape) < 2 or any(int(d) <= 0 for d in self.input_shape):
            raise InvalidInputError(
                "invalid input shape",
                expected="a shape like 1x1x224x224 (batch, channels, spatial...) with positive sizes",
                found=str(tuple(self.input_shape)),
                fix="pass --input NxCxHxW, e.g. 1x1x224x224",
            )
        if self.input_dtype not in _DTYPES:
            raise InvalidInputError(
                "unsupported input dtype",
                expected=" / ".join(_DTYPES),
                found=self.input_dtype,
                fix="use float32 unless the model really takes another type",
            )

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one sample (without the batch dimension)."""
        return tuple(self.input_shape[1:])

    def check_batch(self, shape: tuple[int, ...]) -> None:
        """Raise InvalidInputError if ``shape`` (with batch) does not fit this spec."""
        if self.dynamic_spatial:
            fits = len(shape) == len(self.input_shape) and shape[1] == self.input_shape[1] and (
                self.dynamic_batch or shape[0] == self.input_shape[0])
        else:
            fits = tuple(shape[1:]) == self.sample_shape and (
                self.dynamic_batch or shape[0] == self.input_shape[0])
        if not fits:
            if self.dynamic_spatial:
                raise InvalidInputError(
                    "input tensor has the wrong rank or channel count",
                    expected=f"Nx{self.input_shape[1]}" + "x?" * (len(self.input_shape) - 2),
                    found="x".join(map(str, shape)),
                    fix="give predict() a series folder, a Volume or a DICOM path so the stored "
                    "preprocessing shapes the input",
                )
        if not fits:
            want = ("N" if self.dynamic_batch else str(self.input_shape[0])) + "x" + "x".join(
                map(str, self.sample_shape)
            )
            raise InvalidInputError(
                "input tensor has the wrong shape",
                expected=want,
                found="x".join(map(str, shape)),
                fix="resize/reshape the input, or give predict() a DICOM path so the stored "
                "PreprocessSpec does it",
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_name": self.input_name,
            "input_shape": list(self.input_shape),
            "input_dtype": self.input_dtype,
            "output_names": list(self.output_names),
            "dynamic_batch": self.dynamic_batch,
            "labels": list(self.labels),
            **({"dynamic_spatial": True} if self.dynamic_spatial else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "IOSpec":
        return cls(
            input_name=str(d["input_name"]),
            input_shape=tuple(int(x) for x in d["input_shape"]),
            input_dtype=str(d.get("input_dtype", "float32")),
            output_names=tuple(str(x) for x in d.get("output_names", ("logits",))),
            dynamic_batch=bool(d.get("dynamic_batch", True)),
            labels=tuple(str(x) for x in d.get("labels", ())),
            dynamic_spatial=bool(d.get("dynamic_spatial", False)),
        )


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse ``"1x1x224x224"`` (or comma-separated) into a tuple; raise InvalidInputError."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts if p.strip())
    except ValueError:
        shape = ()
    if len(shape) < 2 or any(d <= 0 for d in shape):
        raise InvalidInputError(
            "cannot parse the input shape",
            expected="NxCxHxW with positive integers, e.g. 1x1x224x224",
            found=repr(text),
            fix="pass --input 1x1x224x224",
        )
    return shape
