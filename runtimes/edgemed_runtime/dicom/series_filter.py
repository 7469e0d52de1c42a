"""Which DICOM files or series to keep: the rules the dataset builder and the device share.

``SeriesFilter.accepts(record)`` judges one indexed file (the SDK's ``Record``, or anything with
``modality``, ``body_part``, ``orientation``, ``frames`` and optionally ``image_type``);
``SeriesFilter.accepts_series(headers)`` judges one series from its pydicom headers (the
device's ``read_series`` and the DICOM node). Reasons name attributes and counts, never values
that identify a patient.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Iterable, Protocol, Sequence

from ..errors import InvalidInputError

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset

ORIENTATIONS = ("axial", "coronal", "sagittal", "oblique", "unknown")


class FileFacts(Protocol):
    """What ``SeriesFilter.accepts`` reads from one indexed file."""

    modality: str
    body_part: str
    orientation: str
    frames: int


def orientation_of(iop: Iterable[float] | None) -> str:
    """Axial / coronal / sagittal / oblique from Image Orientation (Patient), by the slice normal
    ('unknown' when absent or not six numbers)."""
    try:
        v = [float(x) for x in iop] if iop is not None else []
    except (TypeError, ValueError):
        return "unknown"
    if len(v) != 6:
        return "unknown"
    r, c = v[:3], v[3:]
    n = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
    mags = [abs(x) for x in n]
    if max(mags) < 0.8:
        return "oblique"
    return ("sagittal", "coronal", "axial")[mags.index(max(mags))]


def _upper(values: Sequence[str] | None) -> set[str] | None:
    return None if values is None else {str(v).strip().upper() for v in values}


def _text(ds: Any, keyword: str) -> str:
    try:
        value = ds.get(keyword, "")
        return str(value).strip() if value not in (None, "") else ""
    except Exception:
        return ""


def image_type_of(ds: Any) -> tuple[str, ...]:
    """The ImageType values of a dataset, upper-case (empty when absent or unreadable); for
    enhanced multi-frame objects the FrameType of the shared functional groups is a fallback."""
    try:
        value = ds.get("ImageType")
        if value is None:
            shared = ds.get("SharedFunctionalGroupsSequence")
            inner = shared[0].get("FrameContentSequence") if shared else None
            value = ds.get("FrameType") or (inner[0].get("FrameType") if inner else None)
        if value is None:
            return ()
        values = [value] if isinstance(value, str) else list(value)
        return tuple(str(v).strip().upper() for v in values)
    except Exception:
        return ()


def header_orientation(ds: Any) -> str:
    """``orientation_of`` a header's ImageOrientationPatient (or, for enhanced multi-frame
    objects, of its first Plane Orientation functional group)."""
    try:
        iop = ds.get("ImageOrientationPatient")
    except Exception:
        return "unknown"
    if iop is None:
        for name in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            try:
                seq = ds.get(name)
                inner = seq[0].get("PlaneOrientationSequence") if seq else None
                if inner:
                    iop = inner[0].get("ImageOrientationPatient")
                    break
            except Exception:
                continue
    return orientation_of(iop)


def _frames(ds: Any) -> int:
    try:
        return int(ds.get("NumberOfFrames", 1) or 1)
    except Exception:
        return 1


@dataclass(frozen=True)
class SeriesFilter:
    """Which files / series to keep: each given criterion must match (None = any).

    Fields:
        modality, body_part, orientation: accepted values (case-insensitive).
        min_frames, max_frames: frames per file (inclusive).
        image_type: ImageType values that must all be present, e.g. ("ORIGINAL", "PRIMARY").
        min_slices, max_slices: slices in a series (inclusive; ``accepts_series`` only).
    Raises:
        InvalidInputError: ``bad-filter`` (unknown orientation, negative or crossed bounds).
    """

    modality: tuple[str, ...] | None = None
    body_part: tuple[str, ...] | None = None
    orientation: tuple[str, ...] | None = None
    min_frames: int | None = None
    max_frames: int | None = None
    image_type: tuple[str, ...] | None = None
    min_slices: int | None = None
    max_slices: int | None = None

    def __post_init__(self) -> None:
        if self.orientation:
            bad = [o for o in self.orientation if o.lower() not in ORIENTATIONS]
            if bad:
                raise InvalidInputError("unknown orientation", expected=", ".join(ORIENTATIONS),
                                        found=", ".join(bad), code="bad-filter")
        for low, high, what in ((self.min_frames, self.max_frames, "frames"),
                                (self.min_slices, self.max_slices, "slices")):
            if (low is not None and low < 0) or (high is not None and high < 0) or (
                    low is not None and high is not None and low > high):
                raise InvalidInputError(f"invalid {what} bounds in the series filter",
                                        expected="0 <= min <= max", found=f"{low}..{high}",
                                        code="bad-filter")

    def _value_reason(self, what: str, accepted: Sequence[str] | None, value: str) -> str:
        allowed = _upper(accepted)
        if allowed is None or value.upper() in allowed:
            return ""
        return f"{what} {value or '(none)'} is not one of {', '.join(sorted(allowed))}"

    def _image_type_reason(self, values: Sequence[str]) -> str:
        wanted = _upper(self.image_type)
        if not wanted:
            return ""
        missing = sorted(wanted - {v.upper() for v in values})
        return f"ImageType lacks {', '.join(missing)}" if missing else ""

    def _frames_reason(self, frames: int) -> str:
        if self.min_frames is not None and frames < self.min_frames:
            return f"{frames} frames, fewer than {self.min_frames}"
        if self.max_frames is not None and frames > self.max_frames:
            return f"{frames} frames, more than {self.max_frames}"
        return ""

    def refusal(self, r: FileFacts) -> str:
        """Why one indexed file is refused ('' when accepted). A record without ``image_type``
        fails an ``image_type`` criterion."""
        return (self._value_reason("modality", self.modality, r.modality)
                or self._value_reason("body part", self.body_part, r.body_part)
                or self._value_reason("orientation", self.orientation, r.orientation)
                or self._frames_reason(r.frames)
                or self._image_type_reason(tuple(getattr(r, "image_type", ()) or ())))

    def accepts(self, r: FileFacts) -> bool:
        """Whether one indexed file passes every file-level criterion."""
        return not self.refusal(r)

    def accepts_series(self, headers: "Sequence[Dataset]") -> tuple[bool, str]:
        """Whether one series (its instances' headers) passes: modality, body part and
        orientation of the first instance, image type and frames of every instance, and the
        slice count (frames summed over instances). Returns (accepted, reason when refused)."""
        if not headers:
            return False, "the series has no instances"
        first = headers[0]
        reason = (self._value_reason("modality", self.modality, _text(first, "Modality").upper())
                  or self._value_reason("body part", self.body_part,
                                        _text(first, "BodyPartExamined").upper())
                  or self._value_reason("orientation", self.orientation, header_orientation(first)))
        if reason:
            return False, reason
        for n, ds in enumerate(headers):
            reason = self._frames_reason(_frames(ds)) or self._image_type_reason(image_type_of(ds))
            if reason:
                return False, f"instance {n}: {reason}"
        slices = sum(_frames(ds) for ds in headers)
        if self.min_slices is not None and slices < self.min_slices:
            return False, f"{slices} slices, fewer than {self.min_slices}"
        if self.max_slices is not None and slices > self.max_slices:
            return False, f"{slices} slices, more than {self.max_slices}"
        return True, ""

    def to_dict(self) -> dict[str, Any]:
        """The filter as a JSON-ready dict."""
        return asdict(self)
