"""The one strict pydantic base and the one way a ValidationError is put into words.

Every settings model (target profiles, pass configs, release projects, searches) derives from
``Strict``; every loader that validates user-written settings reports failures through
``validation_problems`` before raising its own typed error.
"""

from __future__ import annotations

from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, ValidationError


class Strict(BaseModel):
    """Frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def validation_problems(exc: ValidationError, root: str,
                        where: Callable[[tuple[Any, ...]], str] | None = None) -> str:
    """``"loc.path: message; ..."`` for each error (``root`` names an error at the top level);
    ``where(loc)``, if given, prefixes each entry (e.g. ``"edgemed.toml:12: "``)."""
    return "; ".join(
        f"{where(tuple(e['loc'])) if where else ''}{'.'.join(map(str, e['loc'])) or root}: "
        f"{e['msg']}" for e in exc.errors())
