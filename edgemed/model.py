"""Model intake: an nn.Module, ``module:factory`` (+ weights), TorchScript, ONNX, or ``monai:Arch``.

``load_model(...)`` returns a ModelSource: the model in memory (torch) or on disk (ONNX), with a
content hash for provenance.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from edgemed_runtime.sdk import sha256_file

from .errors import InvalidInputError


@dataclass(frozen=True)
class ModelSource:
    """A model ready for the passes: ``module`` (torch) or ``onnx_path``, plus its hash."""

    kind: str  # "torch" | "onnx"
    description: str
    sha256: str
    module: Any = None
    onnx_path: Path | None = None


def torch_hash(module: Any) -> str:
    """SHA-256 over a module's class name and state_dict (names, shapes, bytes)."""
    import torch

    h = hashlib.sha256(type(module).__qualname__.encode())
    for name, t in module.state_dict().items():
        h.update(name.encode())
        t = t.detach().cpu().contiguous()
        h.update(str(tuple(t.shape)).encode())
        if t.dtype == torch.bfloat16:
            t = t.float()
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _parse_kwargs(tokens: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tok in tokens:
        if "=" not in tok:
            raise InvalidInputError(
                "cannot parse a model argument", expected="key=value", found=tok,
                fix='e.g. "monai:DenseNet121 spatial_dims=2 in_channels=1 out_channels=2"',
            )
        k, v = tok.split("=", 1)
        out[k] = _literal(v)
    return out


def _literal(v: str) -> Any:
    import ast

    try:
        return ast.literal_eval(v)
    except (ValueError, SyntaxError):
        return v


def _load_weights(module: Any, weights: str | os.PathLike[str]) -> None:
    import torch

    p = Path(weights)
    if not p.is_file():
        raise InvalidInputError("weights file not found", found=str(p), code="not-found")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InvalidInputError(
            "cannot read the weights file", expected="a torch state_dict or checkpoint (.pt)",
            found=f"{p.name}: {type(exc).__name__}", fix="save with torch.save(model.state_dict())",
        ) from None
    if isinstance(state, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in state and isinstance(state[key], Mapping):
                state = state[key]
                break
    try:
        module.load_state_dict(state)
    except Exception as exc:
        raise InvalidInputError(
            "weights do not fit the model", found=str(exc).splitlines()[0][:300],
            fix="pass the checkpoint that was trained with this architecture",
        ) from None


def load_model(
    model: Any,
    *,
    weights: str | os.PathLike[str] | None = None,
    kwargs: Mapping[str, Any] | None = None,
) -> ModelSource:
    """Resolve any supported model form.

    Args:
        model: an ``nn.Module``; ``"pkg.mod:factory"``; ``"monai:Arch k=v ..."``; a path to a
            TorchScript file (.pt/.ts/.pth) or an ``.onnx`` file.
        weights: a state_dict/checkpoint for factory or MONAI models.
        kwargs: keyword arguments for the factory / MONAI class.
    Raises:
        InvalidInputError: the model cannot be found, imported or loaded.
    """
    import torch

    if isinstance(model, torch.nn.Module):
        if weights:
            _load_weights(model, weights)
        model.eval()
        return ModelSource("torch", type(model).__name__, torch_hash(model), module=model)
    if not isinstance(model, (str, os.PathLike)):
        raise InvalidInputError(
            "unsupported model", expected="nn.Module, 'module:factory', 'monai:Arch', a file path",
            found=type(model).__name__,
        )
    text = str(model)
    if text.startswith("monai:"):
        return load_model(_monai_module(text, kwargs), weights=weights)
    path = Path(text)
    if path.suffix == ".onnx" or (path.exists() and path.is_file()):
        return _file_source(path)
    if ":" in text:
        return load_model(_factory_module(text, kwargs), weights=weights)
    raise InvalidInputError(
        "model not found", expected="an existing file, 'module:factory' or 'monai:Arch'",
        found=text, code="not-found",
    )


def _monai_module(text: str, kwargs: Mapping[str, Any] | None) -> Any:
    """The ``monai.networks.nets`` model that ``"monai:Arch k=v ..."`` names, built."""
    tokens = shlex.split(text[len("monai:"):])
    if not tokens:
        raise InvalidInputError("no MONAI architecture named", found=text,
                                fix="e.g. monai:DenseNet121 spatial_dims=2 ...")
    import monai.networks.nets as nets

    cls = getattr(nets, tokens[0], None)
    if cls is None:
        raise InvalidInputError(
            "unknown MONAI architecture", expected="a class of monai.networks.nets",
            found=tokens[0], fix="e.g. DenseNet121, ResNet, EfficientNetBN",
        )
    kw = {**_parse_kwargs(tokens[1:]), **dict(kwargs or {})}
    try:
        return cls(**kw)
    except Exception as exc:
        raise InvalidInputError(
            f"cannot build monai {tokens[0]}", found=f"{type(exc).__name__}: {exc}"[:300],
            fix="check the architecture's keyword arguments",
        ) from None


def _file_source(path: Path) -> ModelSource:
    """An ``.onnx`` file, or a TorchScript file loaded on the CPU in eval mode."""
    import torch

    if not path.is_file():
        raise InvalidInputError("model file not found", found=str(path), code="not-found")
    if path.suffix == ".onnx":
        return ModelSource("onnx", path.name, sha256_file(path), onnx_path=path)
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise InvalidInputError(
            "file is not a model", expected="a TorchScript file or an .onnx file",
            found=f"{path.name}: {type(exc).__name__}",
            fix="export with torch.jit.script/trace, or pass 'module:factory' + --weights",
            code="not-a-model",
        ) from None
    module.eval()
    return ModelSource("torch", f"torchscript:{path.name}", sha256_file(path), module=module)


def _factory_module(text: str, kwargs: Mapping[str, Any] | None) -> Any:
    """The ``nn.Module`` that ``"package.module:factory"`` returns (or names)."""
    import torch

    mod_name, _, attr = text.partition(":")
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InvalidInputError(
            "cannot import the model factory", expected="'package.module:callable'",
            found=f"{text}: {type(exc).__name__}: {exc}"[:300],
            fix="make the module importable (pip install -e your package or set PYTHONPATH)",
        ) from None
    built = factory(**dict(kwargs or {})) if callable(factory) else factory
    if not isinstance(built, torch.nn.Module):
        raise InvalidInputError("factory did not return an nn.Module", found=type(built).__name__)
    return built
