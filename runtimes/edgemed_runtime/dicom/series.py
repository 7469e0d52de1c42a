"""A DICOM series (a folder or a list of files) -> one ``Volume``. pydicom + numpy, no torch.

``read_series`` parses every file once with the defensive parser (Pixel Data left in the file:
pydicom's deferred read), groups instances by Series Instance UID, drops localizers (ImageType
LOCALIZER) by default, picks one series (``series_uid`` or a ``SeriesFilter``), checks and sorts
its slices (``series_geometry``), then decodes one instance at a time into a preallocated float32
array with each slice's own Modality LUT (Rescale Slope / Intercept, or the frame's Pixel Value
Transformation group). Classic single-frame series and enhanced multi-frame CT / MR (per-frame
functional groups) both work; pixel data goes through the 2D reader's decoders, so every transfer
syntax it reads works here (small or deflated pixel data is dropped after the header pass and
read again when decoded).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import EdgemedError, InvalidInputError
from ..volume.core import SliceRef, Volume
from . import attributes as attrs
from .decode import decode_frame, require_decoder
from .guard import MAX_TOTAL_PIXELS, image_geometry, read_dataset
from .multiframe import frame_count, frame_geometries
from .quiet import quiet
from .reader import reading
from .series_filter import SeriesFilter, image_type_of
from .series_geometry import SeriesPlan, SliceSource, listing, plan_series, series_tag

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset

_SUFFIXES = (".dcm", ".dicom", ".ima", "")
PIXEL_DEFER = 4096
"""Pixel Data larger than this is left in the file by the header pass and read when its slice is
decoded (pydicom's deferred read): one parse per file, one slice's bytes in memory at a time."""
_PIXEL_TAG = 0x7FE00010


@dataclass(frozen=True, eq=False)
class Instance:
    """One DICOM file of a series: its path, its name (relative to the folder read), its header
    (pixel data not in memory: deferred in the file, or dropped and read again to decode)."""

    path: Path
    name: str
    header: "Dataset"
    pixels_deferred: bool = False

    @property
    def short(self) -> str:
        """The file name alone (messages name files by it, never by the folders above)."""
        return Path(self.name).name

    def text(self, keyword: str) -> str:
        """A header attribute as stripped text ('' when absent or unreadable)."""
        try:
            value = self.header.get(keyword, "")
            return str(value).strip() if value not in (None, "") else ""
        except Exception:
            return ""


def _with_context(exc: EdgemedError, where: str) -> EdgemedError:
    """The same error (type, code, expected, fix) with ``where`` in front of its message."""
    return type(exc)(f"{where}: {exc.message}", expected=exc.expected, found=exc.found,
                     fix=exc.fix, code=exc.code)


def list_files(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
               ) -> tuple[list[Path], Path | None]:
    """(files, root): every DICOM-looking file under a folder (recursive, sorted; root = the
    folder), or the given list of files (root None).

    Raises:
        InvalidInputError: ``not-found`` (no such folder or file), ``empty`` (nothing to read).
    """
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        if not root.is_dir():
            if root.is_file():
                return [root], None
            raise InvalidInputError("series folder not found", code="not-found",
                                    expected="a folder of DICOM files", found=str(root),
                                    fix="check the path")
        files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
                       and p.suffix.lower() in _SUFFIXES and p.name.upper() != "DICOMDIR")
        if not files:
            raise InvalidInputError("no DICOM files in the series folder", code="empty",
                                    expected="DICOM files (.dcm or no suffix)", found=f"none under {root}")
        return files, root
    files = [Path(p) for p in source]
    if not files:
        raise InvalidInputError("no DICOM files given", code="empty",
                                expected="a folder or a non-empty list of files", found="an empty list")
    return files, None


def read_headers(files: Sequence[Path], root: Path | None) -> tuple[list[Instance], list[dict[str, str]]]:
    """Parse every file's header (pixels skipped). In a folder, files that are not DICOM or hold
    no image are skipped (listed with their code); a given file that fails raises.

    Raises:
        InvalidInputError: the parser's codes, the file named in the message.
    """
    instances: list[Instance] = []
    skipped: list[dict[str, str]] = []
    for path in files:
        name = path.relative_to(root).as_posix() if root is not None else path.name
        try:
            with reading():
                ds = read_dataset(path, defer_size=PIXEL_DEFER)
        except EdgemedError as exc:
            if root is not None and exc.code in ("not-dicom", "empty-file"):
                skipped.append({"file": name, "code": exc.code})
                continue
            raise _with_context(exc, f"file {path.name}") from None
        if "Rows" not in ds or "Columns" not in ds:
            if root is not None:
                skipped.append({"file": name, "code": "no-pixel-data"})
                continue
            raise InvalidInputError(f"file {path.name}: not an image", code="no-pixel-data",
                                    expected="an image object (Rows, Columns, Pixel Data)",
                                    found="no Rows/Columns", fix="pass the image files of the series")
        deferred = _pixels_deferred(ds)
        if not deferred and "PixelData" in ds:
            del ds.PixelData  # small or deflated: read again when decoded
        instances.append(Instance(path, name, ds, deferred))
    if not instances:
        raise InvalidInputError("no DICOM images to make a volume of", code="empty",
                                expected="DICOM image files", found=f"{len(skipped)} files skipped "
                                f"({listing([Path(s['file']).name for s in skipped])})")
    return instances, skipped


def _pixels_deferred(ds: "Dataset") -> bool:
    """Whether the Pixel Data element was parsed but its value left in the file."""
    raw = ds._dict.get(_PIXEL_TAG)
    return type(raw).__name__ == "RawDataElement" and raw.value is None and bool(raw.length)


def drop_localizer_instances(instances: list[Instance]) -> tuple[list[Instance], list[dict[str, str]]]:
    """(kept, dropped): instances whose ImageType holds LOCALIZER are dropped, unless nothing
    else is left."""
    kept = [i for i in instances if "LOCALIZER" not in image_type_of(i.header)]
    if not kept or len(kept) == len(instances):
        return instances, []
    dropped = [{"file": i.name, "reason": "ImageType LOCALIZER"} for i in instances if i not in kept]
    return kept, dropped


def drop_localizer_series(groups: dict[str, list[Instance]]) -> list[dict[str, str]]:
    """Remove (in place) the series made only of localizers when other series remain; returns
    their instances as dropped."""
    only = [u for u, members in groups.items()
            if all("LOCALIZER" in image_type_of(m.header) for m in members)]
    if not only or len(only) == len(groups):
        return []
    dropped = []
    for u in only:
        dropped += [{"file": m.name, "reason": f"ImageType LOCALIZER ({series_tag(u)})"}
                    for m in groups.pop(u)]
    return dropped


def _describe(uid: str, members: Sequence[Instance]) -> str:
    slices = sum(frame_count(m.header) for m in members)
    return (f"{uid} ({members[0].text('Modality') or 'no modality'}, {slices} "
            f"slice{'' if slices == 1 else 's'})")


def choose_series(groups: dict[str, list[Instance]], series_uid: str | None,
                  series_filter: SeriesFilter | None) -> str:
    """The Series Instance UID to read.

    Raises:
        InvalidInputError: ``series-not-found`` (``series_uid`` absent), ``empty`` (the filter
            refuses every series, each with its reason), ``several-series`` (more than one left).
    """
    if series_uid is not None:
        if series_uid not in groups:
            raise InvalidInputError("the requested series is not in the input", code="series-not-found",
                                    expected=f"one of {len(groups)} series: "
                                             f"{listing([_describe(u, m) for u, m in groups.items()])}",
                                    found=series_tag(series_uid), fix="check series_uid")
        candidates = [series_uid]
    else:
        candidates = list(groups)
    if series_filter is not None:
        verdicts = {u: series_filter.accepts_series([m.header for m in groups[u]]) for u in candidates}
        refused = [f"{series_tag(u)}: {why}" for u, (ok, why) in verdicts.items() if not ok]
        candidates = [u for u in candidates if verdicts[u][0]]
        if not candidates:
            raise InvalidInputError("no series passes the series filter", code="empty",
                                    expected="a series the SeriesFilter accepts",
                                    found=listing(refused), fix="relax the filter")
    if len(candidates) > 1:
        raise InvalidInputError(f"the input holds {len(candidates)} series", code="several-series",
                                expected="one series",
                                found="; ".join(_describe(u, groups[u]) for u in candidates),
                                fix="pass series_uid=..., or a SeriesFilter that picks one")
    return candidates[0]


def slice_sources(instances: Sequence[Instance]) -> list[SliceSource]:
    """One ``SliceSource`` per frame of every instance (file order).

    Raises:
        InvalidInputError: ``corrupt`` (a header that cannot be read at all; file named).
    """
    out = []
    for n, inst in enumerate(instances):
        try:
            frames = frame_geometries(inst.header)
        except Exception as exc:  # a last net: the accessors above are already defensive
            raise InvalidInputError(f"file {inst.short}: the header does not parse", code="corrupt",
                                    expected="a well-formed DICOM header", found=type(exc).__name__) from None
        for g in frames:
            name = inst.short if g.frame is None or len(frames) == 1 else f"{inst.short} frame {g.frame + 1}"
            out.append(SliceSource(
                instance=n, name=name, sop_class_uid=inst.text("SOPClassUID"),
                sop_instance_uid=inst.text("SOPInstanceUID"), rows=_int(inst.header, "Rows"),
                columns=_int(inst.header, "Columns"), samples=_int(inst.header, "SamplesPerPixel", 1),
                geometry=g))
    return out


def _int(ds: Any, keyword: str, default: int = 0) -> int:
    try:
        return int(ds.get(keyword, default) or default)
    except Exception:
        return -1


def decode_volume(plan: SeriesPlan, instances: Sequence[Instance], uid: str) -> np.ndarray:
    """The (z, y, x) float32 array of ``plan``: one instance parsed and decoded at a time, each
    slice through its own Modality LUT.

    Raises:
        InvalidInputError: ``pixel-budget``; the decoder's codes (``decode-failed``, ...) with the
            slice and file named. MissingDependencyError: no decoder for the transfer syntax.
    """
    n = len(plan.slices)
    if n * plan.rows * plan.columns > MAX_TOTAL_PIXELS:
        raise InvalidInputError(f"{series_tag(uid)}: the volume is larger than the pixel budget",
                                code="pixel-budget", expected=f"<= {MAX_TOTAL_PIXELS} voxels",
                                found=f"{n} x {plan.rows} x {plan.columns}")
    out = np.empty((n, plan.rows, plan.columns), dtype=np.float32)
    by_instance: dict[int, list[int]] = {}
    for k, s in enumerate(plan.slices):
        by_instance.setdefault(s.instance, []).append(k)
    for inst_index, ks in by_instance.items():
        inst = instances[inst_index]
        k = ks[0]
        try:
            with reading():
                ds = inst.header if inst.pixels_deferred else read_dataset(inst.path)
                geo = image_geometry(ds)
                require_decoder(geo.transfer_syntax)
                for k in ks:
                    frame = plan.slices[k].geometry.frame
                    arr = decode_frame(ds, geo, frame or 0)
                    if arr.ndim == 3:
                        arr = arr[0]
                    out[k] = attrs.modality_lut(ds, frame or 0)(arr)
        except EdgemedError as exc:
            raise _with_context(exc, f"{series_tag(uid)}, slice {k} ({plan.slices[k].name})") from None
        finally:
            if _PIXEL_TAG in inst.header:
                del inst.header[_PIXEL_TAG]  # the headers a Volume keeps hold no pixel data
    return out


def read_series(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    series_uid: str | None = None,
    *,
    series_filter: SeriesFilter | None = None,
    spacing_tolerance: float = 0.01,
    drop_localizers: bool = True,
) -> Volume:
    """Read one DICOM series into a ``Volume``.

    Args:
        source: a folder (searched recursively) or a list of files.
        series_uid: the Series Instance UID to read when the input holds several.
        series_filter: picks the series by rules (modality, orientation, image type, slices...).
        spacing_tolerance: the largest deviation of a slice step from the median, as a fraction
            of it (0.01 = 1%).
        drop_localizers: drop instances whose ImageType holds LOCALIZER, and series made only
            of them when another series is there (listed in ``info["dropped"]``); a localizer
            without that tag is refused (``series-orientation``).
    Returns:
        a ``Volume``: array (z, y, x) float32 in modality units, affine voxel -> LPS, one
        ``SliceRef`` per slice, one header (no pixel data) per instance in slice order, and
        ``info`` {slices, rows, columns, dropped, skipped, files}.
    Raises:
        InvalidInputError: ``bad-option`` (tolerance), ``not-found``, ``empty``,
            ``several-series``, ``series-not-found``, ``corrupt`` (a header that does not parse),
            ``series-single``, ``series-geometry``, ``series-orientation``, ``series-shape``,
            ``series-duplicate``, ``series-gap``, ``pixel-budget``, the parser's and decoder's
            codes (file named). MissingDependencyError: no decoder for the transfer syntax.
    """
    if not spacing_tolerance >= 0.0:  # NaN fails too
        raise InvalidInputError("spacing_tolerance is a fraction of the slice step", code="bad-option",
                                expected="spacing_tolerance >= 0 (0.01 = 1%)", found=str(spacing_tolerance))
    with quiet():  # pydicom's warnings quote DICOM values
        return _read(source, series_uid, series_filter=series_filter, tolerance=spacing_tolerance,
                     drop_localizers=drop_localizers)


def _read(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], series_uid: str | None,
          *, series_filter: SeriesFilter | None, tolerance: float, drop_localizers: bool) -> Volume:
    """``read_series`` once its arguments are checked."""
    files, root = list_files(source)
    instances, skipped = read_headers(files, root)
    groups: dict[str, list[Instance]] = {}
    for inst in instances:
        groups.setdefault(inst.text("SeriesInstanceUID"), []).append(inst)
    dropped: dict[str, list[dict[str, str]]] = {}
    other: list[dict[str, str]] = []
    if drop_localizers:
        for key in list(groups):
            groups[key], dropped[key] = drop_localizer_instances(groups[key])
        if series_uid is None:
            other = drop_localizer_series(groups)
    uid = choose_series(groups, series_uid, series_filter)
    members = groups[uid]
    plan = plan_series(uid, slice_sources(members), tolerance)
    array = decode_volume(plan, members, uid)
    order = list(dict.fromkeys(s.instance for s in plan.slices))
    first = members[0]
    return Volume(
        array=array, affine=plan.affine, series_uid=uid, study_uid=first.text("StudyInstanceUID"),
        frame_of_reference_uid=first.text("FrameOfReferenceUID"), modality=first.text("Modality"),
        slices=tuple(SliceRef(s.sop_class_uid, s.sop_instance_uid,
                              None if s.geometry.frame is None else s.geometry.frame + 1)
                     for s in plan.slices),
        headers=tuple(members[i].header for i in order),
        info={"slices": len(plan.slices), "rows": plan.rows, "columns": plan.columns,
              "dropped": dropped.get(uid, []) + other, "skipped": skipped,
              "files": [members[i].name for i in order]})
