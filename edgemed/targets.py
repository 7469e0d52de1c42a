"""Hardware target profiles: TOML data validated with pydantic (unknown keys rejected).

A profile lists candidate variants (a pass chain + a backend each), the declared default variant,
host-matching rules (can this build host stand in for the target when timing?), runtime options and
budgets. ``load_target`` checks every pass name and config, that each pass accepts the previous
pass's output format, and that the variant's backend can run the final format.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from edgemed_runtime.sdk import backend_class, cpu_flags, host_rule_matches

from ._config import Strict, validation_problems
from .errors import InvalidInputError, ProfileError
from .evaluate import GateConfig
from .passes.base import get_pass_class, make_config

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "targets"
SOURCE_FORMATS = ("torch", "onnx")
IMPLICIT_BASELINE = "fp32-baseline"


class HostMatch(Strict):
    """When the build host can stand in for the target (for timing variants)."""

    arch: tuple[str, ...] = ()
    cpu_flags_any: tuple[str, ...] = ()
    cpu_flags_all: tuple[str, ...] = ()
    needs_gpu: bool = False


class CpuCondition(Strict):
    """A rule on the device CPU's feature flags (``/proc/cpuinfo`` names, e.g. ``avx512_vnni``)."""

    cpu_flags_any: tuple[str, ...] = ()
    cpu_flags_all: tuple[str, ...] = ()

    def holds(self, flags: frozenset[str]) -> bool:
        """Whether a CPU with ``flags`` satisfies the rule (an empty rule always holds)."""
        if self.cpu_flags_all and not set(self.cpu_flags_all) <= flags:
            return False
        return not self.cpu_flags_any or bool(set(self.cpu_flags_any) & flags)

    def describe(self) -> str:
        parts = []
        if self.cpu_flags_any:
            parts.append("any of " + ", ".join(self.cpu_flags_any))
        if self.cpu_flags_all:
            parts.append("all of " + ", ".join(self.cpu_flags_all))
        return " and ".join(parts) or "always"


class Budget(Strict):
    latency_ms: float | None = Field(None, gt=0)
    memory_mb: float | None = Field(None, gt=0)


class CalibrationSettings(Strict):
    count: int = Field(64, ge=1)
    seed: int = 0


class Variant(Strict):
    """One candidate: a pass chain and the backend that runs its output."""

    name: str
    backend: str
    passes: tuple[dict[str, Any], ...]
    backend_options: dict[str, Any] = Field(default_factory=dict)
    gate_backend: str | None = None
    """Backend that gates the variant on a build host where ``backend`` is not available
    (e.g. onnxruntime running the ONNX of a TensorRT recipe); recorded in provenance."""
    when: CpuCondition | None = None
    """A candidate only on devices whose CPU satisfies this (e.g. VNNI for U8S8 kernels)."""
    unless: CpuCondition | None = None
    """Not a candidate on devices whose CPU satisfies this."""
    tasks: tuple[str, ...] | None = None
    """A candidate only for builds of these tasks (e.g. ``["segmentation"]``); None: every task."""
    baseline: bool = False
    """The uncompressed (FP32) candidate: compressed candidates must beat its latency on a
    host-matched build, and it ships as ``fallback-fp32`` when no compressed candidate can."""

    def eligible(self, flags: frozenset[str] | None, *,
                 task: str = "classification") -> tuple[bool, str]:
        """Whether the variant is a candidate on a device CPU with ``flags`` (None: unknown,
        e.g. the build host cannot stand in for the target) for a build of ``task``, and why
        not."""
        if self.tasks is not None and task not in self.tasks:
            return False, f"only for {' / '.join(self.tasks)} models"
        if flags is None:
            if self.when is not None:
                return False, f"needs a device CPU with {self.when.describe()} (device CPU unknown)"
            return True, ""
        if self.when is not None and not self.when.holds(flags):
            return False, f"needs a device CPU with {self.when.describe()}"
        if self.unless is not None and self.unless.holds(flags):
            return False, f"not for a device CPU with {self.unless.describe()}"
        return True, ""

    def pass_specs(self) -> list[tuple[str, dict[str, Any]]]:
        """``[(pass_name, settings), ...]``."""
        return [(str(p["pass"]), {k: v for k, v in p.items() if k != "pass"}) for p in self.passes]


class TargetProfile(Strict):
    """A hardware target as data."""

    name: str
    description: str = ""
    kind: str = Field("cpu", pattern="^(cpu|gpu|mobile)$")
    host: HostMatch = HostMatch()
    runtime: dict[str, Any] = Field(default_factory=dict)
    budget: Budget = Budget()
    calibration: CalibrationSettings = CalibrationSettings()
    gate: GateConfig = GateConfig()
    default_variant: str
    require_compressed: bool = False
    """True: fail rather than ship the FP32 baseline (``fallback-fp32``)."""
    variants: tuple[Variant, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> "TargetProfile":
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names repeat: {names}")
        if self.default_variant not in names:
            raise ValueError(f"default_variant {self.default_variant!r} is not one of {names}")
        if self.variant(self.default_variant).when is not None:
            raise ValueError(f"default_variant {self.default_variant!r} has a `when` rule: the "
                             "default must be a candidate on every device of the target")
        if any(v.tasks is not None for v in self.variants
               if v.baseline or v.name == self.default_variant):
            raise ValueError("the baseline and the default variant must serve every task (no "
                             "`tasks` rule)")
        baselines = [v.name for v in self.variants if v.baseline]
        if len(baselines) > 1:
            raise ValueError(f"more than one baseline variant: {baselines}")
        return self

    @model_validator(mode="before")
    @classmethod
    def _fp32_always(cls, data: Any) -> Any:
        """A CPU profile without a baseline gets one: the FP32 ONNX run by onnxruntime (the
        base device runtime), so FP32 is always a candidate and always the fallback."""
        if not isinstance(data, dict) or data.get("kind", "cpu") != "cpu":
            return data
        variants = list(data.get("variants") or [])
        if variants and not any(isinstance(v, dict) and v.get("baseline") for v in variants):
            variants.append({"name": IMPLICIT_BASELINE, "backend": "onnxruntime", "baseline": True,
                             "passes": [{"pass": "export_onnx"}]})
            data = {**data, "variants": variants}
        return data

    @property
    def baseline(self) -> Variant | None:
        """The FP32 baseline variant, if the profile has one."""
        return next((v for v in self.variants if v.baseline), None)

    @property
    def sha256(self) -> str:
        """Hash of the profile's canonical JSON (recorded in artifacts and bundles)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise ProfileError("unknown variant", expected=", ".join(v.name for v in self.variants),
                           found=name)

    def backend_options(self, variant: Variant) -> dict[str, Any]:
        """Runtime options for ``variant``: the profile's, overridden by the variant's."""
        return {**self.runtime, **variant.backend_options}


def check_chain(profile: TargetProfile) -> None:
    """Validate every variant's pass chain and backend; raise ProfileError with the reason."""
    for v in profile.variants:
        fmt: tuple[str, ...] = SOURCE_FORMATS
        for i, (pname, settings) in enumerate(v.pass_specs()):
            cls = get_pass_class(pname)
            make_config(pname, cls.Config, settings)
            if not set(fmt) & set(cls.accepts):
                raise ProfileError(
                    f"variant {v.name!r}: pass {i + 1} ({pname}) cannot take the previous output",
                    expected=f"one of {', '.join(cls.accepts)}", found=" / ".join(fmt),
                    fix="reorder the passes or add a conversion pass", code="format-mismatch",
                )
            fmt = (cls.produces,)
        for role, name in (("backend", v.backend), ("gate_backend", v.gate_backend)):
            if name is None:
                continue
            try:
                be = backend_class(name)
            except InvalidInputError as exc:
                raise ProfileError(f"variant {v.name!r}: unknown {role}", expected=exc.expected,
                                   found=name, code="unknown-backend") from None
            if fmt[0] not in be.formats:
                raise ProfileError(
                    f"variant {v.name!r}: {role} {name!r} cannot run {fmt[0]!r}",
                    expected=", ".join(be.formats), found=fmt[0], code="backend-format",
                    fix="change the backend or the last pass",
                )


def search_dirs(extra: list[str | os.PathLike[str]] | None = None) -> list[Path]:
    """Where profiles are looked up: ``extra``, $EDGEMED_TARGETS (os.pathsep list), built-ins."""
    dirs = [Path(d) for d in (extra or [])]
    env = os.environ.get("EDGEMED_TARGETS")
    if env:
        dirs += [Path(d) for d in env.split(os.pathsep) if d]
    return [*dirs, BUILTIN_DIR]


def parse_profile(text: str, origin: str) -> TargetProfile:
    """Parse and validate TOML text into a checked TargetProfile."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError("target profile is not valid TOML", found=f"{origin}: {exc}") from None
    try:
        profile = TargetProfile(**data)
    except ValidationError as exc:
        raise ProfileError(f"invalid target profile {origin}",
                           found=validation_problems(exc, "(profile)"),
                           fix="see targets/cpu-x86.toml for a complete example") from None
    check_chain(profile)
    return profile


def load_target(name_or_path: str | os.PathLike[str] | TargetProfile,
                dirs: list[str | os.PathLike[str]] | None = None) -> TargetProfile:
    """Load a profile by name (searched in ``search_dirs``) or from a ``.toml`` path.

    Raises:
        ProfileError: unknown target or an invalid profile.
    """
    if isinstance(name_or_path, TargetProfile):
        return name_or_path
    p = Path(name_or_path)
    if p.suffix == ".toml":
        if not p.is_file():
            raise ProfileError("target profile file not found", found=str(p), code="not-found")
        return parse_profile(p.read_text(), str(p))
    for d in search_dirs(dirs):
        f = d / f"{name_or_path}.toml"
        if f.is_file():
            return parse_profile(f.read_text(), str(f))
    raise ProfileError("unknown target", expected=", ".join(list_targets(dirs)),
                       found=str(name_or_path), fix="edgemed targets list", code="unknown-target")


def list_targets(dirs: list[str | os.PathLike[str]] | None = None) -> list[str]:
    """Names of every profile found (user folders first; a user profile shadows a built-in)."""
    seen: dict[str, None] = {}
    for d in search_dirs(dirs):
        if d.is_dir():
            for f in sorted(d.glob("*.toml")):
                seen.setdefault(f.stem, None)
    return list(seen)


ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16",
             "asimddp", "i8mm", "bf16", "fphp", "asimdhp")
"""The flags that change which integer / reduced-precision kernels a CPU runs (recorded)."""


def isa_summary(flags: frozenset[str] | None = None) -> list[str]:
    """The ISA-relevant flags of ``flags`` (default: this host's), sorted."""
    return sorted(set(ISA_FLAGS) & (cpu_flags() if flags is None else flags))


def host_matches(profile: TargetProfile) -> tuple[bool, str]:
    """Whether this host can stand in for the target, and why (or why not): the profile's
    ``[host]`` rules, matched as an ``edgemed-run agent`` matches them on a device."""
    h = profile.host
    gpu, why = nvidia_gpu() if h.needs_gpu else (False, "")
    ok, reason = host_rule_matches(h.model_dump(), arch=platform.machine(), flags=cpu_flags(),
                                   gpu=gpu)
    if not ok and h.needs_gpu and not gpu and reason.startswith("needs an NVIDIA GPU"):
        return False, f"target needs an NVIDIA GPU; {why}"
    return ok, f"host {reason}"


def nvidia_gpu() -> tuple[bool, str]:
    """Whether this host has a usable NVIDIA GPU, and how that was decided."""
    if Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia/version").exists():
        return True, "NVIDIA driver present"
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            return True, "onnxruntime CUDA EP available"
    except ImportError:
        pass
    return False, "no NVIDIA driver (/proc/driver/nvidia) on this host"


def check_target(profile: TargetProfile) -> dict[str, Any]:
    """What ``edgemed targets check`` reports: host match and, per variant, whether its backend
    (and the execution providers it asks for) can run here, and what is missing.

    Returns ``{"target", "host": {...}, "variants": [{name, backend, available, missing,
    build_missing (packages its passes need), providers: {available, missing}, gate_backend,
    runnable_here}], "ok": bool}``.
    """
    match, why = host_matches(profile)
    variants = []
    for v in profile.variants:
        cls = backend_class(v.backend)
        row: dict[str, Any] = {"name": v.name, "backend": v.backend,
                               "available": cls.is_available(), "missing": cls.missing(),
                               "default": v.name == profile.default_variant}
        opts = profile.backend_options(v)
        build_missing: list[str] = []
        for pname, _ in v.pass_specs():
            build_missing += [m for m in get_pass_class(pname).missing() if m not in build_missing]
        row["build_missing"] = build_missing
        if v.backend == "onnxruntime" and cls.is_available():
            import onnxruntime as ort

            from edgemed_runtime.sdk import wanted_providers

            have = set(ort.get_available_providers())
            wanted = wanted_providers(opts)
            row["providers"] = {"available": [p for p in wanted if p in have],
                                "missing": [p for p in wanted if p not in have]}
        if v.backend == "tensorrt":
            gpu, gwhy = nvidia_gpu()
            row["gpu"] = gwhy
            row["available"] = row["available"] and gpu
        if v.gate_backend:
            row["gate_backend"] = v.gate_backend
            row["gate_backend_available"] = backend_class(v.gate_backend).is_available()
        row["runnable_here"] = not build_missing and bool(
            row["available"] or row.get("gate_backend_available"))
        variants.append(row)
    default = next(r for r in variants if r["default"])
    return {"target": profile.name, "kind": profile.kind,
            "host": {"matches": match, "why": why, "arch": platform.machine()},
            "variants": variants, "ok": bool(default["runnable_here"])}
