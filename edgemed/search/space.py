"""The search space: which compression and recovery settings a trial may pick.

Every knob is a list of choices (so grid search, TPE and simulated annealing share one space).
``chain(params)`` turns one trial's choices into the pass chain a target profile would list.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from .._config import Strict

PRECISIONS = ("fp32", "int8-u8s8", "int8-s8s8")


class SearchSpace(Strict):
    """Choices per knob (a single choice fixes the knob)."""

    structured_ratio: tuple[float, ...] = (0.0, 0.3, 0.5)
    importance: tuple[str, ...] = ("l1", "bn_scale")
    sparsity: tuple[float, ...] = (0.0, 0.5, 0.7)
    clusters: tuple[int, ...] = (0, 16, 8)
    precision: tuple[str, ...] = ("int8-u8s8", "int8-s8s8", "fp32")
    calibration: tuple[str, ...] = ("minmax", "percentile")
    finetune_epochs: tuple[int, ...] = (0, 2)
    finetune_lr: tuple[float, ...] = (1e-4, 3e-4)
    distill: tuple[float, ...] = (0.5,)

    def choices(self) -> dict[str, list[Any]]:
        """knob -> its choices (the GridSampler's search space)."""
        return {k: list(v) for k, v in self.model_dump().items()}

    def grid_size(self) -> int:
        n = 1
        for v in self.choices().values():
            n *= len(v)
        return n


def suggest(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """Ask the trial for one choice per knob (categorical, in the listed order)."""
    return {k: trial.suggest_categorical(k, v) for k, v in space.choices().items()}


def chain(params: dict[str, Any], *, seed: int = 0) -> list[tuple[str, dict[str, Any]]]:
    """The pass chain of one trial: prune -> fine-tune -> cluster -> export -> quantize."""
    steps: list[tuple[str, dict[str, Any]]] = []
    if params.get("structured_ratio", 0) > 0:
        steps.append(("prune_structured", {"ratio": params["structured_ratio"],
                                           "importance": params.get("importance", "l1")}))
    if params.get("sparsity", 0) > 0:
        steps.append(("prune_unstructured", {"sparsity": params["sparsity"], "scope": "global"}))
    if steps and params.get("finetune_epochs", 0) > 0:
        steps.append(("finetune", {"epochs": params["finetune_epochs"],
                                   "full_lr": params.get("finetune_lr", 1e-4),
                                   "distill": params.get("distill", 0.5), "seed": seed,
                                   "patience": max(1, params["finetune_epochs"])}))
    if params.get("clusters", 0) > 0:
        steps.append(("cluster_weights", {"clusters": params["clusters"]}))
    steps.append(("export_onnx", {}))
    precision = params.get("precision", "fp32")
    if precision != "fp32":
        act = "uint8" if precision == "int8-u8s8" else "int8"
        steps.append(("quantize_onnxruntime", {"activation_type": act, "weight_type": "int8",
                                               "calibration": params.get("calibration", "minmax")}))
    return steps


def space_field(**kw: Any) -> Any:
    return Field(default_factory=SearchSpace, **kw)
