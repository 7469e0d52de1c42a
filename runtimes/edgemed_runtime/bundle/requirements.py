"""What a bundle needs on the device (bundle.json ``requires``, docs/bundle-format.md): its
backend, the ``edgemed-runtime`` extra that installs that backend, and the minimum versions of the
backend's packages (the versions the build used). Checked before a bundle is opened, so a device
without the extra is told the one install line that is missing."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import MissingDependencyError
from ..backends.base import RUNTIME_DIST
from .format import parse_version

DIST = RUNTIME_DIST
"""The runtime's distribution name (what ``pip install`` takes)."""


def backend_extra(backend: str) -> str | None:
    """The ``edgemed-runtime`` extra that installs ``backend`` (None: the base runtime), from
    the backend class (``Backend.extra``; runtimes/pyproject.toml).

    Raises:
        InvalidInputError: ``unknown-backend``.
    """
    from ..backends.base import backend_class

    return backend_class(backend).extra


@dataclass(frozen=True)
class DeviceRequirements:
    """The backend, the runtime extras and ``{package: minimum version}`` a bundle needs."""

    backend: str
    extras: tuple[str, ...] = ()
    packages: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``requires`` object of bundle.json."""
        return {"backend": self.backend, "extras": list(self.extras),
                "packages": dict(sorted(self.packages.items()))}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DeviceRequirements:
        """From a schema-checked ``requires`` object."""
        return cls(str(d["backend"]), tuple(d.get("extras", ())), dict(d.get("packages", {})))

    @property
    def install_line(self) -> str:
        """The one pip command that installs what the device needs."""
        if not self.extras:
            return f"pip install {DIST}"
        return f"pip install '{DIST}[{','.join(self.extras)}]'"

    def pip_requirements(self, runtime: str = DIST) -> list[str]:
        """pip requirement strings: ``runtime`` (a name or a path) with the extras, then every
        package with its minimum version."""
        head = f"{runtime}[{','.join(self.extras)}]" if self.extras else runtime
        return [head, *(f"{p}>={v}" for p, v in sorted(self.packages.items()))]


def installed_version(package: str) -> str | None:
    """The installed version of distribution ``package``, or None."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def requirements_for(backend: str, *, versions: bool = True) -> DeviceRequirements:
    """What a device needs to run a model on ``backend``; with ``versions``, the minimum version
    of each of its packages is the one installed here (the build host).

    Raises:
        InvalidInputError: ``unknown-backend``.
    """
    from ..backends.base import backend_class

    cls = backend_class(backend)
    extra = cls.extra
    pkgs: dict[str, str] = {}
    if versions:
        for pkg in cls.requires:
            v = installed_version(pkg)
            if v is not None:
                pkgs[pkg] = ".".join(str(n) for n in parse_version(v))
    return DeviceRequirements(backend, (extra,) if extra else (), pkgs)


def requirements_of(manifest: Any) -> DeviceRequirements:
    """A parsed manifest's ``requires`` (a bundle sealed before the field: derived from its
    backend, without versions)."""
    raw = manifest.raw.get("requires")
    if raw is not None:
        return DeviceRequirements.from_dict(raw)
    extra = backend_extra(manifest.backend)
    return DeviceRequirements(manifest.backend, (extra,) if extra else ())


def unmet(req: DeviceRequirements) -> list[str]:
    """What of ``req`` this environment lacks (empty: all there), one phrase per package."""
    from ..backends.base import backend_class

    out: list[str] = []
    missing = set(backend_class(req.backend).missing())
    names = dict.fromkeys([*req.packages, *sorted(missing)])
    for pkg in names:
        have = installed_version(pkg)
        need = req.packages.get(pkg)
        if pkg in missing or have is None:
            out.append(f"{pkg} not installed")
        elif need is not None and parse_version(have) < parse_version(need):
            out.append(f"{pkg} {have} (needs >= {need})")
    return out


def check_requirements(req: DeviceRequirements) -> None:
    """Refuse when this environment cannot run a bundle with requirements ``req``.

    Raises:
        MissingDependencyError: ``missing-extra``, naming the exact install line.
        InvalidInputError: ``unknown-backend`` (a backend this runtime does not know).
    """
    gaps = unmet(req)
    if not gaps:
        return
    extra = f"the '{req.extras[0]}' extra of {DIST}" if req.extras else DIST
    versions = [f"{p} >= {v}" for p, v in sorted(req.packages.items())]
    upgrade = any("needs >=" in g for g in gaps)
    fix = req.install_line if not upgrade else \
        "pip install --upgrade " + " ".join(f"'{r}'" for r in req.pip_requirements())
    raise MissingDependencyError(
        f"this bundle runs on backend '{req.backend}': it needs {extra}",
        expected=", ".join([f"backend {req.backend}", *versions]), found="; ".join(gaps),
        fix=fix, code="missing-extra")
