"""Building an engine from a recipe: the network and builder flags per TensorRT version and the
optimization profile (plain Python), and the build itself (needs TensorRT, passed in)."""

from __future__ import annotations

from typing import Any

from ...errors import BackendError
from ...iospec import IOSpec
from .recipe import TrtRecipe


def trt_major(version: str) -> int:
    """Major version number of a TensorRT version string ("10.7.0" -> 10)."""
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def network_flags(recipe: TrtRecipe, major: int) -> list[str]:
    """Names of the ``NetworkDefinitionCreationFlag`` members to set."""
    if recipe.typing == "strong" or major >= 11:
        return ["STRONGLY_TYPED"]
    return []  # weak / auto on TensorRT 10: precision comes from builder flags


def builder_flags(recipe: TrtRecipe, major: int) -> list[str]:
    """Names of the ``BuilderFlag`` members to set.

    Raises:
        BackendError: weak typing asked of TensorRT >= 11 (precision flags no longer exist).
    """
    if recipe.typing == "strong" or (recipe.typing == "auto" and major >= 11):
        return []
    if major >= 11:
        raise BackendError(
            "TensorRT >= 11 builds only strongly typed networks", expected="typing = 'strong'",
            found=f"typing = 'weak' with TensorRT {major}", code="trt-weak-typing",
            fix="set typing = 'strong' in the recipe (use the fp16 pass for FP16 layers)",
        )
    flags: list[str] = []
    if recipe.precision == "int8":
        flags.append("INT8")
        if recipe.fp16_fallback:
            flags.append("FP16")
    elif recipe.precision == "fp16":
        flags.append("FP16")
    return flags


def profile_shapes(recipe: TrtRecipe, io: IOSpec) -> dict[str, tuple[tuple[int, ...], ...]]:
    """``{input: (min, opt, max)}`` shapes of the optimization profile (batch from the recipe)."""
    if not io.dynamic_batch:
        shape = tuple(io.input_shape)
        return {io.input_name: (shape, shape, shape)}
    s = tuple(io.sample_shape)
    return {io.input_name: ((recipe.min_batch, *s), (recipe.opt_batch, *s),
                            (recipe.max_batch, *s))}


class TrtLogger:
    """Collects TensorRT's warnings and errors (so they can be put in a BackendError)."""

    def __new__(cls, trt: Any) -> Any:
        class Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.messages: list[str] = []

            def log(self, severity: Any, msg: str) -> None:
                if severity <= trt.ILogger.Severity.WARNING:
                    self.messages.append(f"{severity.name}: {msg}")

        return Logger()


def build_engine(trt: Any, model: bytes, io: IOSpec, recipe: TrtRecipe, logger: Any) -> bytes:
    """Parse the ONNX and build a serialized engine with ``recipe``.

    Raises:
        BackendError: the parser rejects the model or the build fails.
    """
    major = trt_major(trt.__version__)
    flags = 0
    for name in network_flags(recipe, major):
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    builder = trt.Builder(logger)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BackendError("TensorRT cannot parse the ONNX model",
                           expected="ONNX TensorRT's parser supports (QDQ: symmetric INT8)",
                           found="; ".join(errors)[:800] or "parser failed", code="trt-parse")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, recipe.workspace_mb << 20)
    config.builder_optimization_level = recipe.optimization_level
    for name in builder_flags(recipe, major):
        config.set_flag(getattr(trt.BuilderFlag, name))
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile_shapes(recipe, io).items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BackendError("TensorRT failed to build the engine",
                           found="; ".join(logger.messages[-5:])[:800] or "no engine",
                           code="trt-build", fix="check the recipe (workspace_mb, batch range)")
    return bytes(plan)
