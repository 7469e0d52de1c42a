"""Open a DICOM file defensively: every failure becomes an ``InvalidInputError`` with a code.

Checks, in order: the path; the file size; the 128-byte preamble (an executable header there is
refused, PS3.10 7.5 warns about such dual-personality files); the ``DICM`` prefix, or else a raw
dataset (no preamble / File Meta Information, as many exports write: its first bytes must be a
standard even-group tag; it is read as pydicom's ``force=True`` reads it, its transfer syntax
recorded from the encoding found, under the same guards); parsing (with
RecursionError / MemoryError / any pydicom error caught); a deflated dataset is inflated here
within a budget (``deflate``), never by pydicom; declared element lengths against the file (or
inflated) size; an empty dataset; sequence nesting depth. ``image_geometry`` then checks the
image attributes, the pixel budget and the pixel data length before anything is decoded.

Memory: an uncompressed file is read as it is (at most its size, ``MAX_FILE_BYTES``); a deflated
one at most its declared pixel bytes + ``deflate.HEADER_ALLOWANCE``, capped by
``deflate.MAX_INFLATED_BYTES``.

Messages never contain DICOM values (patient data): only attribute keywords, numbers we computed
and exception type names.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, TypeVar

from ..errors import InvalidInputError
from .deflate import HEADER_ALLOWANCE, MAX_INFLATED_BYTES, inflate, parse_inflated

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset

T = TypeVar("T")

MAX_FILE_BYTES = 4 << 30
MAX_FRAME_PIXELS = 1 << 26  # 8192 x 8192 samples in one frame
MAX_TOTAL_PIXELS = 1 << 31  # samples over all frames
MAX_SEQUENCE_DEPTH = 32
MAX_META_ELEMENT = 1 << 20  # a File Meta Information element (group 0002) larger than this is hostile
DEFLATED = "1.2.840.10008.1.2.1.99"

# Magic numbers of executable formats seen at the start of a preamble.
_EXEC_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"MZ", "Windows PE/DOS executable"),
    (b"\x7fELF", "ELF executable"),
    (b"\xfe\xed\xfa\xce", "Mach-O executable"),
    (b"\xfe\xed\xfa\xcf", "Mach-O executable"),
    (b"\xce\xfa\xed\xfe", "Mach-O executable"),
    (b"\xcf\xfa\xed\xfe", "Mach-O executable"),
    (b"\xca\xfe\xba\xbe", "Mach-O universal binary"),
    (b"#!", "script with an interpreter line"),
)


def _bad(message: str, code: str, *, expected: str | None = None, found: str | None = None,
         fix: str | None = None) -> InvalidInputError:
    return InvalidInputError(message, expected=expected, found=found, fix=fix, code=code)


def check_path(path: str | os.PathLike[str]) -> Path:
    """Return ``path`` as a Path if it is a readable regular file of a sane size.

    Raises:
        InvalidInputError: ``not-found`` / ``file-too-large`` / ``empty-file``.
    """
    p = Path(path)
    if not p.is_file():
        raise _bad("DICOM file not found", "not-found", expected="an existing DICOM file",
                   found=str(p), fix="check the path")
    size = p.stat().st_size
    if size == 0:
        raise _bad("file is empty", "empty-file", expected="a DICOM Part 10 file", found="0 bytes")
    if size > MAX_FILE_BYTES:
        raise _bad("file is larger than edgemed reads", "file-too-large",
                   expected=f"<= {MAX_FILE_BYTES} bytes", found=f"{size} bytes")
    return p


def check_preamble(head: bytes) -> None:
    """Refuse a preamble that holds an executable header; require the ``DICM`` prefix.

    Raises:
        InvalidInputError: ``executable-preamble`` or ``not-dicom``.
    """
    if len(head) >= 132 and head[128:132] == b"DICM":
        pre = head[:128]
        for magic, what in _EXEC_MAGIC:
            if pre.startswith(magic):
                raise _bad("the file preamble holds an executable header", "executable-preamble",
                           expected="a zeroed or TIFF preamble", found=what,
                           fix="re-export the file from the PACS; do not open it elsewhere")
        return
    raise _bad("file is not DICOM", "not-dicom",
               expected="a DICOM Part 10 file (DICM at byte 128) or a raw DICOM dataset",
               found="no DICM prefix and no DICOM tag at byte 0",
               fix="pass a .dcm file exported as DICOM Part 10")


RAW_DATASET_WARNING = ("no DICOM Part 10 header (128-byte preamble, DICM, File Meta "
                       "Information): read as a raw dataset")
"""The warning a caller attaches to the result of a file ``is_raw_dataset`` says is raw."""


def looks_like_raw_dataset(head: bytes) -> bool:
    """True when ``head`` (the file's first bytes) has no ``DICM`` at byte 128 but starts with a
    standard DICOM tag of an even group, little endian: a dataset written without the Part 10
    header. Executable headers never qualify (their first bytes are no standard tag)."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return False
    if len(head) < 8:
        return False
    from pydicom.datadict import dictionary_has_tag

    group = int.from_bytes(head[0:2], "little")
    element = int.from_bytes(head[2:4], "little")
    return group % 2 == 0 and 0x0002 <= group < 0x7FE0 and dictionary_has_tag((group << 16) | element)


def is_raw_dataset(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is read as a raw dataset (see ``looks_like_raw_dataset``); False for
    a Part 10 file or a file that cannot be opened."""
    try:
        with open(path, "rb") as f:
            return looks_like_raw_dataset(f.read(132))
    except OSError:
        return False


def _record_raw_encoding(ds: "Dataset") -> None:
    """Give a raw dataset the Transfer Syntax UID of the encoding pydicom found (the decoder
    reads it from the File Meta Information, which a raw dataset lacks)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = FileMetaDataset()
        ds.file_meta = meta
    if not _transfer_syntax(meta):
        implicit = bool(getattr(ds, "original_encoding", (True, True))[0])
        meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian


def read_dataset(
    path: str | os.PathLike[str],
    *,
    stop_before_pixels: bool = False,
    max_inflated_bytes: int = MAX_INFLATED_BYTES,
    header_allowance: int = HEADER_ALLOWANCE,
    defer_size: int | None = None,
) -> "Dataset":
    """Parse a DICOM Part 10 file (or a raw dataset without the Part 10 header, see
    ``looks_like_raw_dataset``; callers warn with ``RAW_DATASET_WARNING``) with every guard above.

    Args:
        path: the file.
        stop_before_pixels: skip Pixel Data (for indexing headers).
        max_inflated_bytes, header_allowance: the budget of a deflated dataset: at most
            ``header_allowance`` + its declared pixel bytes, never over ``max_inflated_bytes``.
        defer_size: elements larger than this many bytes are read when first used (default
            ``DEFER_BYTES``; not for deflated files, which are inflated in memory).
    Returns:
        the pydicom Dataset (its sequences checked to ``MAX_SEQUENCE_DEPTH``).
    Raises:
        InvalidInputError: with codes ``not-found``, ``empty-file``, ``file-too-large``,
            ``executable-preamble``, ``not-dicom``, ``truncated``, ``declared-length``,
            ``nesting-too-deep``, ``too-large``, ``corrupt``, ``inflate-budget``.
    """
    p = check_path(path)
    size = p.stat().st_size
    ds: "Dataset | None" = None
    with open(p, "rb") as f:
        head = f.read(132)
        raw = looks_like_raw_dataset(head)
        if raw:
            f.seek(0)  # a raw dataset: File Meta elements, if any, start at byte 0
        else:
            check_preamble(head)
        meta = _file_meta(f)
        if meta is not None and _transfer_syntax(meta) == DEFLATED:
            ds, size = _parse(lambda: _read_deflated(
                f, str(p), b"\0" * 128 if raw else head[:128], meta, stop_before_pixels,
                max_bytes=max_inflated_bytes, allowance=header_allowance))
        del meta
    if ds is None:
        ds = _parse(lambda: _dcmread(p, stop_before_pixels, force=raw, defer_size=defer_size))
    if raw:
        _record_raw_encoding(ds)
    check_lengths(ds, size)
    if not ds._dict:
        raise _bad("the file holds no DICOM data elements", "truncated",
                   expected="a dataset after the File Meta Information", found="none",
                   fix="the file is truncated or empty; re-export it")
    check_depth(ds)
    return ds


def _file_meta(f: BinaryIO) -> "FileMetaDataset | None":
    """The File Meta Information at ``f``'s position (``f`` left after it), or None when it does
    not parse or holds an element over ``MAX_META_ELEMENT`` bytes (then pydicom's own reading
    handles the file, bounded by its size).

    Raises:
        InvalidInputError: ``declared-length``: such an element in a deflated file's meta (its
            end, where the deflate stream starts, cannot be trusted).
    """
    from pydicom.dataset import FileMetaDataset
    from pydicom.filereader import read_dataset as read_elements

    oversized: list[tuple[int, int]] = []

    def stop(tag: int, vr: str | None, length: int) -> bool:
        if tag >> 16 != 2:
            return True
        if length == 0xFFFFFFFF or length > MAX_META_ELEMENT:
            oversized.append((tag, length))
            return True
        return False

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meta = FileMetaDataset(read_elements(f, False, True, stop_when=stop))
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException:
        return None
    if oversized:
        if _transfer_syntax(meta) == DEFLATED:
            tag, length = oversized[0]
            raise _bad("a File Meta Information element is larger than edgemed reads",
                       "declared-length", expected=f"<= {MAX_META_ELEMENT} bytes",
                       found=f"{length} bytes in {_tag(tag)}", fix="the file is malformed or hostile")
        return None
    return meta


def _transfer_syntax(meta: "FileMetaDataset") -> str:
    try:
        return str(meta.get("TransferSyntaxUID", "") or "").strip("\0 ")
    except Exception:
        return ""


def _read_deflated(f: BinaryIO, name: str, preamble: bytes, meta: "FileMetaDataset",
                   stop_before_pixels: bool, *, max_bytes: int,
                   allowance: int) -> tuple["FileDataset", int]:
    """The dataset after ``f``'s position, inflated within the budget (``deflate.inflate``),
    and its inflated size."""
    from pydicom.dataset import FileDataset

    buf = inflate(f, max_bytes=max_bytes, header_allowance=allowance)
    inflated = len(buf)
    dataset = parse_inflated(buf, stop_before_pixels)
    del buf
    ds = FileDataset(name, dataset, preamble, meta, False, True)
    ds.set_original_encoding(False, True, dataset._character_set)
    return ds, inflated


DEFER_BYTES = 1 << 20
"""Elements larger than this are not read at parse time but when first used (pydicom's
``defer_size``), so a hostile private blob that is never used costs no memory."""


def _dcmread(p: Path, stop_before_pixels: bool, *, force: bool = False,
             defer_size: int | None = None) -> "Dataset":
    import pydicom

    ds = pydicom.dcmread(p, stop_before_pixels=stop_before_pixels,
                         defer_size=DEFER_BYTES if defer_size is None else defer_size,
                         force=force)
    ds.file_meta.get("TransferSyntaxUID")  # force the meta to be parsed
    return ds


def _parse(read: Callable[[], T]) -> T:
    """Run ``read`` (a pydicom parse) with pydicom's warnings off and its errors mapped."""
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return read()
    except InvalidInputError:
        raise
    except RecursionError:
        raise _bad("sequences are nested too deeply", "nesting-too-deep",
                   expected=f"<= {MAX_SEQUENCE_DEPTH} levels", found="deeper than Python can parse",
                   fix="the file is malformed or hostile") from None
    except MemoryError:
        raise _bad("file needs more memory than available", "too-large",
                   found="MemoryError while parsing") from None
    except (EOFError, InvalidDicomError) as exc:
        code = "truncated" if isinstance(exc, EOFError) else "not-dicom"
        raise _bad("file is not readable DICOM", code, expected="a complete DICOM Part 10 file",
                   found=type(exc).__name__) from None
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # pydicom raises many types on malformed input
        raise _bad("file is not readable DICOM", "corrupt", expected="a well-formed DICOM file",
                   found=type(exc).__name__, fix="re-export the file") from None


def _raw_items(ds: Any) -> Any:
    return ds._dict.items()  # the raw (unconverted) elements; reading them converts nothing


def check_lengths(ds: "Dataset", file_size: int) -> None:
    """Refuse an element whose declared length runs past the end of the file.

    Such an element makes the reader consume the rest of the file, so it is the last element
    parsed at its level: the last element of the dataset, or inside the last item of a last
    sequence. Only that chain is checked (cheap on every file).

    Raises:
        InvalidInputError: ``declared-length`` or ``truncated``.
    """
    current: Any = ds
    for _ in range(MAX_SEQUENCE_DEPTH + 1):
        elements = current._dict
        if not elements:
            return
        tag, elem = next(reversed(elements.items()))
        length = getattr(elem, "length", 0) or 0
        if length != 0xFFFFFFFF and length > file_size:
            raise _bad("an element declares a length beyond the end of the file", "declared-length",
                       expected=f"<= {file_size} bytes", found=f"{length} bytes in {_tag(tag)}",
                       fix="the file is truncated or hostile")
        value = getattr(elem, "value", None)
        if (isinstance(value, (bytes, bytearray)) and length not in (0, 0xFFFFFFFF)
                and len(value) < length):
            raise _bad("an element is shorter than its declared length", "truncated",
                       expected=f"{length} bytes in {_tag(tag)}", found=f"{len(value)} bytes",
                       fix="the file is truncated")
        if isinstance(value, list) and value and hasattr(value[-1], "_dict"):
            current = value[-1]  # an already-parsed sequence: descend into its last item
            continue
        return


def _tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def check_depth(ds: "Dataset", limit: int = MAX_SEQUENCE_DEPTH) -> None:
    """Walk sequences iteratively and refuse nesting deeper than ``limit``.

    Raises:
        InvalidInputError: ``nesting-too-deep`` or ``corrupt`` (a sequence that does not parse).
    """
    stack: list[tuple[Any, int]] = [(ds, 0)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            while stack:
                current, depth = stack.pop()
                for tag, raw in list(_raw_items(current)):
                    vr = getattr(raw, "VR", None)
                    if vr != "SQ" or tag == 0x7FE00010:
                        continue
                    if depth + 1 > limit:
                        raise _bad("sequences are nested too deeply", "nesting-too-deep",
                                   expected=f"<= {limit} levels", found=f"more than {limit}",
                                   fix="the file is malformed or hostile")
                    for item in current[tag].value:
                        stack.append((item, depth + 1))
    except InvalidInputError:
        raise
    except RecursionError:
        raise _bad("sequences are nested too deeply", "nesting-too-deep",
                   expected=f"<= {limit} levels", found="deeper than Python can parse") from None
    except Exception as exc:
        raise _bad("a sequence in the file does not parse", "corrupt",
                   expected="well-formed sequences", found=type(exc).__name__) from None


@dataclass(frozen=True)
class Geometry:
    """The image attributes the decoder relies on, validated."""

    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str
    planar: int
    transfer_syntax: str

    @property
    def frame_pixels(self) -> int:
        return self.rows * self.columns * self.samples


def _int(ds: "Dataset", keyword: str, default: int | None = None) -> int:
    try:
        value = ds.get(keyword, default)
        if value is None or value == "":
            if default is None:
                raise _bad("a required image attribute is missing", "missing-attribute",
                           expected=keyword, found="absent")
            return default
        return int(value)
    except InvalidInputError:
        raise
    except Exception as exc:
        raise _bad("an image attribute has an invalid value", "bad-attribute",
                   expected=f"an integer {keyword}", found=type(exc).__name__) from None


def image_geometry(
    ds: "Dataset",
    *,
    max_frame_pixels: int = MAX_FRAME_PIXELS,
    max_total_pixels: int = MAX_TOTAL_PIXELS,
) -> Geometry:
    """Validate the image attributes and the pixel budget, before any decoding.

    Raises:
        InvalidInputError: ``no-pixel-data``, ``missing-attribute``, ``bad-attribute``,
            ``pixel-budget``, ``pixel-length-mismatch``.
    """
    if "PixelData" not in ds:
        kinds = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        raise _bad("DICOM file has no pixel data", "no-pixel-data",
                   expected="an image object with Pixel Data",
                   found=kinds[0] if kinds else "no (7FE0,0010) element",
                   fix="pass an image file, not a report/structure/presentation object")
    try:
        ts = str(ds.file_meta.TransferSyntaxUID)
    except Exception:
        raise _bad("file has no Transfer Syntax UID", "missing-attribute",
                   expected="(0002,0010) Transfer Syntax UID", found="absent") from None
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    samples = _int(ds, "SamplesPerPixel", 1)
    bits_alloc = _int(ds, "BitsAllocated")
    bits_stored = _int(ds, "BitsStored", bits_alloc)
    pixrep = _int(ds, "PixelRepresentation", 0)
    planar = _int(ds, "PlanarConfiguration", 0)
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except Exception:
        raise _bad("Number of Frames is not a number", "bad-attribute",
                   expected="an integer NumberOfFrames", found="unparseable") from None
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    checks = (
        (rows >= 1 and cols >= 1, "Rows and Columns >= 1", f"{rows} x {cols}"),
        (frames >= 1, "NumberOfFrames >= 1", str(frames)),
        (samples in (1, 3), "SamplesPerPixel 1 or 3", str(samples)),
        (bits_alloc in (1, 8, 16, 32, 64), "BitsAllocated 1, 8, 16, 32 or 64", str(bits_alloc)),
        (1 <= bits_stored <= bits_alloc, "1 <= BitsStored <= BitsAllocated",
         f"{bits_stored} / {bits_alloc}"),
        (pixrep in (0, 1), "PixelRepresentation 0 or 1", str(pixrep)),
        (photometric != "", "a Photometric Interpretation", "absent"),
    )
    for ok, expected, found in checks:
        if not ok:
            raise _bad("image attributes are invalid", "bad-attribute", expected=expected,
                       found=found)
    frame_px = rows * cols * samples
    if frame_px > max_frame_pixels or frame_px * frames > max_total_pixels:
        raise _bad("image is larger than the pixel budget", "pixel-budget",
                   expected=f"<= {max_frame_pixels} samples a frame, {max_total_pixels} in all",
                   found=f"{rows} x {cols} x {samples} x {frames} frames",
                   fix="downsample the image, or raise the budget if the device has the memory")
    geo = Geometry(rows, cols, frames, samples, bits_alloc, bits_stored, bool(pixrep),
                   photometric, planar, ts)
    _check_native_length(ds, geo)
    return geo


def _check_native_length(ds: "Dataset", geo: Geometry) -> None:
    from pydicom.uid import UID

    if UID(geo.transfer_syntax).is_compressed:
        value = ds["PixelData"].value
        if not value:
            raise _bad("compressed pixel data is empty", "pixel-length-mismatch",
                       expected="encapsulated frames", found="0 bytes")
        return
    total = geo.frame_pixels * geo.frames
    if geo.photometric == "YBR_FULL_422" and geo.samples == 3:
        total = total * 2 // 3
    expected = (total + 7) // 8 if geo.bits_allocated == 1 else total * (geo.bits_allocated // 8)
    actual = len(ds["PixelData"].value or b"")
    if actual < expected:
        raise _bad("pixel data is shorter than the image attributes say", "pixel-length-mismatch",
                   expected=f"{expected} bytes (Rows x Columns x Frames x Samples x Bits)",
                   found=f"{actual} bytes", fix="the file is truncated or its attributes are wrong")
