"""Which received series the bundle runs on: the ``[selection]`` table as a ``SeriesFilter``.

The same ``edgemed_runtime.dicom.series_filter.SeriesFilter`` the dataset builder uses
(modality, body part, orientation, frames, image type, slice count), applied to the series'
headers with ``accepts_series``. A refused series is acknowledged (its C-STORE already
succeeded), journalled ``skipped`` and audited with the reason (attribute names and counts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..dicom.series_filter import SeriesFilter
from ..errors import InvalidInputError

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset

LIST_KEYS = ("modality", "body_part", "orientation", "image_type")
INT_KEYS = ("min_frames", "max_frames", "min_slices", "max_slices")


def series_filter(table: Mapping[str, Any]) -> SeriesFilter:
    """The SeriesFilter of a ``[selection]`` table (absent keys: any).

    Raises:
        InvalidInputError: ``bad-node-config`` (unknown key, wrong type, or a value the
            filter refuses).
    """
    extra = sorted(set(table) - set(LIST_KEYS) - set(INT_KEYS))
    if extra:
        raise InvalidInputError("unknown key in the node configuration", code="bad-node-config",
                                expected=", ".join(LIST_KEYS + INT_KEYS),
                                found=", ".join(f"selection.{k}" for k in extra)[:200])
    kw: dict[str, Any] = {}
    for k, v in table.items():
        ok = (isinstance(v, list) and all(isinstance(s, str) and s for s in v)) \
            if k in LIST_KEYS else (isinstance(v, int) and not isinstance(v, bool) and v >= 0)
        if not ok:
            raise InvalidInputError(f"node configuration key 'selection.{k}' is invalid",
                                    code="bad-node-config", found=type(v).__name__,
                                    expected="a list of strings" if k in LIST_KEYS
                                    else "an integer >= 0")
        kw[k] = tuple(v) if k in LIST_KEYS else v
    try:
        return SeriesFilter(**kw)
    except InvalidInputError as exc:
        raise InvalidInputError("the [selection] table is invalid", code="bad-node-config",
                                expected=exc.expected, found=exc.found) from None


def rejection(rules: SeriesFilter, headers: Sequence["Dataset"]) -> str | None:
    """Why the series is refused (attribute names and counts), or None when it is selected."""
    ok, reason = rules.accepts_series(list(headers))
    return None if ok else (reason or "refused")
