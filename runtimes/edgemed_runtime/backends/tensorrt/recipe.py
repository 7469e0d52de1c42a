"""The TensorRT recipe: the one schema of a ``trt-plan-recipe`` model file, written by the SDK's
``tensorrt_recipe`` pass and read by the backend (and by onnxruntime, which runs the ONNX inside).

File layout: ``RECIPE_MAGIC`` | uint32 little-endian length n | n bytes of recipe JSON (the
``TrtRecipe`` fields) | the ONNX model the engine is built from.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from ...errors import InvalidInputError

RECIPE_MAGIC = b"EMTRTR1\0"
PRECISIONS = ("int8", "fp16", "fp32")
TYPINGS = ("auto", "strong", "weak")


@dataclass(frozen=True)
class TrtRecipe:
    """How to build the engine.

    Attributes:
        precision: what the ONNX carries: ``int8`` (QDQ), ``fp16`` (FP16 ONNX) or ``fp32``.
        typing: ``strong`` (types from the network), ``weak`` (builder precision flags;
            TensorRT 10 only) or ``auto`` (weak on TensorRT 10, strong on >= 11).
        fp16_fallback: with ``weak`` typing, let unquantized layers run in FP16.
        workspace_mb: builder workspace memory pool limit (>= 16).
        min_batch, opt_batch, max_batch: the optimization profile of a dynamic batch dimension
            (1 <= min <= opt <= max).
        optimization_level: builder optimization level (0-5; TensorRT's default is 3).
    """

    precision: str = "int8"
    typing: str = "auto"
    fp16_fallback: bool = True
    workspace_mb: int = 1024
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 8
    optimization_level: int = 3

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The recipe's settings, in declaration order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_options(cls, options: Mapping[str, Any],
                     base: Mapping[str, Any] | None = None) -> "TrtRecipe":
        """The recipe ``base`` (e.g. from the artifact) overridden by ``options["recipe"]``.

        Raises:
            InvalidInputError: an unknown key or an invalid value.
        """
        raw = {**dict(base or {}), **dict(options.get("recipe", {}) or {})}
        unknown = set(raw) - set(cls.field_names())
        if unknown:
            raise InvalidInputError("unknown TensorRT recipe settings",
                                    expected=", ".join(cls.field_names()),
                                    found=", ".join(sorted(unknown)), code="bad-option")
        try:
            r = cls(**raw)
            ints = {k: int(getattr(r, k)) for k in ("workspace_mb", "min_batch", "opt_batch",
                                                     "max_batch", "optimization_level")}
            r = cls(precision=str(r.precision), typing=str(r.typing),
                    fp16_fallback=bool(r.fp16_fallback), **ints)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError("invalid TensorRT recipe", found=str(exc),
                                    code="bad-option") from None
        r.validate()
        return r

    def validate(self) -> None:
        """Raise InvalidInputError(code="bad-option") naming every value out of range."""
        problems: list[str] = []
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} not in {PRECISIONS}")
        if self.typing not in TYPINGS:
            problems.append(f"typing {self.typing!r} not in {TYPINGS}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            problems.append(f"need 1 <= min_batch <= opt_batch <= max_batch, got "
                            f"{self.min_batch}/{self.opt_batch}/{self.max_batch}")
        if self.workspace_mb < 16:
            problems.append(f"workspace_mb {self.workspace_mb} < 16")
        if not 0 <= self.optimization_level <= 5:
            problems.append(f"optimization_level {self.optimization_level} not in 0..5")
        if problems:
            raise InvalidInputError("invalid TensorRT recipe", found="; ".join(problems),
                                    code="bad-option")

    def to_dict(self) -> dict[str, Any]:
        """The recipe JSON's fields."""
        return asdict(self)


def pack_recipe(recipe: TrtRecipe, onnx_model: bytes) -> bytes:
    """A ``trt-plan-recipe`` model file: magic, u32 JSON length, recipe JSON, ONNX bytes."""
    meta = json.dumps(recipe.to_dict(), sort_keys=True).encode()
    return RECIPE_MAGIC + len(meta).to_bytes(4, "little") + meta + onnx_model


def unpack_recipe(blob: bytes) -> tuple[dict[str, Any], bytes]:
    """Split a recipe file into (recipe settings, ONNX bytes); the settings are checked when
    they become a TrtRecipe (``TrtRecipe.from_options(options, base=settings)``).

    Raises:
        InvalidInputError(code="bad-model"): not a recipe file, or a corrupt header.
    """
    head = len(RECIPE_MAGIC) + 4
    if len(blob) < head or blob[: len(RECIPE_MAGIC)] != RECIPE_MAGIC:
        raise InvalidInputError("not a TensorRT recipe", expected="edgemed recipe (EMTRTR1)",
                                found=f"{len(blob)} bytes starting {blob[:8]!r}", code="bad-model")
    n = int.from_bytes(blob[len(RECIPE_MAGIC):head], "little")
    try:
        meta = json.loads(blob[head:head + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidInputError("corrupt TensorRT recipe header", code="bad-model") from None
    if not isinstance(meta, dict):
        raise InvalidInputError("corrupt TensorRT recipe header", code="bad-model")
    return meta, blob[head + n:]
