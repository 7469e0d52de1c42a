"""De-identification: the DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile.

Neither pydicom nor another dependency ships the Annex E table, so it is data here
(``annex_e_basic.txt``, Table E.1-1). Applied to every level of the dataset (sequence items too):

* X (and X/Z, X/D, X/Z/D) -> removed;  Z, Z/D -> emptied;  D -> a dummy value of the VR;
* U -> the UID replaced by ``2.25.<keyed hash>`` (HMAC-SHA256 with the caller's key), so the same
  input UID always maps to the same output UID and studies / series / references stay linked;
* X/Z/U* sequences (Referenced / Source Image Sequence) are kept with their UIDs remapped;
* Patient ID (Z, "zero length or dummy") becomes a keyed pseudonym, so patient-level splits still
  work; Patient's Name takes the same pseudonym;
* private attributes, curve data (50xx) and overlay data / comments (60xx) are removed;
* Pixel Data is kept; Patient Identity Removed = YES; De-identification Method (+ code 113100).

Not covered (the profile's options): Clean Pixel Data (burned-in text), Clean Descriptors,
Retain Longitudinal Dates, Retain Safe Private.

Outputs: one file goes to a temp name, then is renamed. A folder is written into a staging folder
beside the output, renamed into place once every file is done, so the output tree is complete
or absent. A file that cannot be de-identified is left out and reported by relative path and
error code (never a DICOM value); the rest of the folder is still written.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgemed.errors import EdgemedError, InvalidInputError

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset

PROFILE_FILE = Path(__file__).with_name("annex_e_basic.txt")
METHOD = "edgemed deid: DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile"
_DUMMY_TEXT = {"PN": "ANONYMOUS", "DA": "19000101", "TM": "000000", "DT": "19000101000000",
               "AS": "000Y", "IS": "0", "DS": "0"}
_TEXT_VRS = ("LO", "SH", "CS", "LT", "ST", "UT", "UC", "AE", "UR")


@dataclass(frozen=True)
class ProfileRow:
    """One row of Table E.1-1: tag pattern (8 hex chars, ``x`` wildcards), action, name."""

    pattern: str
    action: str
    name: str

    def matches(self, tag: int) -> bool:
        text = f"{tag:08X}"
        return all(p in ("x", "X") or p == t for p, t in zip(self.pattern, text))


@lru_cache(maxsize=1)
def basic_profile() -> tuple[ProfileRow, ...]:
    """The Basic Profile table, parsed from ``annex_e_basic.txt``."""
    rows = []
    for line in PROFILE_FILE.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        pattern, action, name = line.split(" ", 2)
        rows.append(ProfileRow(pattern.upper().replace("X", "x"), action, name))
    return tuple(rows)


@lru_cache(maxsize=1)
def _exact_actions() -> dict[int, str]:
    return {int(r.pattern, 16): r.action for r in basic_profile() if "x" not in r.pattern}


@lru_cache(maxsize=1)
def _pattern_rows() -> tuple[ProfileRow, ...]:
    return tuple(r for r in basic_profile() if "x" in r.pattern)


def action_for(tag: int) -> str | None:
    """The Basic Profile action for ``tag``, or None if the profile does not list it."""
    action = _exact_actions().get(tag)
    if action is not None:
        return action
    for row in _pattern_rows():
        if row.matches(tag):
            return row.action
    return None


class UidMapper:
    """Maps UIDs to ``2.25.<int>`` with HMAC-SHA256 under ``key``: same input, same output."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise InvalidInputError("the de-identification key is too short", expected=">= 16 bytes",
                                    found=f"{len(key)} bytes", fix="use a 32-byte random key",
                                    code="deid-key")
        self._key = key

    def uid(self, value: str) -> str:
        digest = hmac.new(self._key, b"uid:" + value.strip().encode("ascii", "replace"),
                          hashlib.sha256).digest()
        return "2.25." + str(int.from_bytes(digest[:16], "big"))

    def pseudonym(self, patient_id: str) -> str:
        digest = hmac.new(self._key, b"pid:" + patient_id.strip().encode("utf-8", "replace"),
                          hashlib.sha256).hexdigest()
        return "ANON" + digest[:12].upper()


def _dummy(vr: str) -> Any:
    if vr in _DUMMY_TEXT:
        return _DUMMY_TEXT[vr]
    if vr in _TEXT_VRS:
        return "ANONYMIZED"
    if vr in ("US", "SS", "UL", "SL", "UV", "SV"):
        return 0
    if vr in ("FL", "FD"):
        return 0.0
    return None


def _remap(elem: Any, mapper: UidMapper) -> None:
    value = elem.value
    if value in (None, ""):
        return
    if isinstance(value, (list, tuple)) or hasattr(value, "__iter__") and not isinstance(value, str):
        elem.value = [mapper.uid(str(v)) for v in value]
    else:
        elem.value = mapper.uid(str(value))


def deidentify_dataset(ds: "Dataset", mapper: UidMapper) -> "Dataset":
    """Apply the Basic Profile to ``ds`` in place (every nesting level) and return it."""
    pid = str(ds.get("PatientID", "") or "")
    _apply(ds, mapper, top=True)
    if hasattr(ds, "file_meta") and "MediaStorageSOPInstanceUID" in ds.file_meta:
        _remap(ds.file_meta["MediaStorageSOPInstanceUID"], mapper)
    pseudonym = mapper.pseudonym(pid) if pid else ""
    ds.PatientID = pseudonym
    ds.PatientName = pseudonym
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    from pydicom.dataset import Dataset as _Dataset

    code = _Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "113100", "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = [code]
    return ds


def _apply(ds: "Dataset", mapper: UidMapper, top: bool) -> None:
    if top:
        ds.remove_private_tags()  # walks every nesting level
    for elem in list(ds):
        tag = int(elem.tag)
        if tag == 0x7FE00010:
            continue
        action = action_for(tag)
        if action is None:
            if elem.VR == "SQ":
                for item in elem.value:
                    _apply(item, mapper, top=False)
            continue
        if action == "X/Z/U*":
            for item in elem.value if elem.VR == "SQ" else ():
                _apply(item, mapper, top=False)
            if elem.VR != "SQ":
                del ds[tag]
            continue
        if action.startswith("X"):
            del ds[tag]
        elif action == "U":
            if elem.VR == "UI":
                _remap(elem, mapper)
            else:
                del ds[tag]
        elif action.startswith("Z") or elem.VR == "SQ":
            elem.value = [] if elem.VR == "SQ" else (None if elem.VR not in _TEXT_VRS + ("PN", "DA", "TM", "DT") else "")
        else:  # D
            dummy = _dummy(elem.VR)
            if dummy is None:
                del ds[tag]
            else:
                elem.value = dummy


NOT_DICOM_CODES = ("not-dicom", "empty-file")  # files that are not DICOM: skipped, not failures


@dataclass(frozen=True)
class DeidReport:
    """What ``deidentify`` did (relative paths, error codes; no DICOM values).

    Fields:
        written: files de-identified and written.
        skipped: (path, code) of files that are not DICOM (``NOT_DICOM_CODES``), left out.
        output: the output file or folder.
        failed: (path, code) of DICOM files that could not be read or de-identified, left out.
    """

    written: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    output: Path
    failed: tuple[tuple[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        """True when no DICOM file failed."""
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {"output": str(self.output), "written": len(self.written),
                "skipped": [{"path": p, "code": c} for p, c in self.skipped],
                "failed": [{"path": p, "code": c} for p, c in self.failed],
                "profile": METHOD}


def load_key(key_file: str | os.PathLike[str] | None) -> bytes:
    """The HMAC key: the file's bytes, else ``EDGEMED_DEID_KEY`` (hex), else a fresh random key.

    Raises:
        InvalidInputError: ``deid-key`` (unreadable or too short).
    """
    if key_file is not None:
        p = Path(key_file)
        if not p.is_file():
            raise InvalidInputError("key file not found", found=str(p), code="deid-key",
                                    fix="create one: python -c 'import secrets;print(secrets.token_hex(32))' > key")
        data = p.read_bytes().strip()
        return bytes.fromhex(data.decode()) if _is_hex(data) else data
    env = os.environ.get("EDGEMED_DEID_KEY")
    if env:
        if not _is_hex(env.encode()):
            raise InvalidInputError("EDGEMED_DEID_KEY is not hex", code="deid-key",
                                    expected="64 hex characters", found=f"{len(env)} characters")
        return bytes.fromhex(env)
    return secrets.token_bytes(32)


def _is_hex(data: bytes) -> bool:
    try:
        bytes.fromhex(data.decode("ascii"))
        return len(data) >= 32
    except (ValueError, UnicodeDecodeError):
        return False


def _write_atomic(ds: "Dataset", out: Path) -> None:
    """Write ``ds`` to a temp file beside ``out``, then rename it to ``out``.

    Raises:
        InvalidInputError: ``missing-file-meta`` (the input had no File Meta Information to
            write), ``deid-failed`` (pydicom cannot encode the dataset), ``output-not-writable``.
    """
    meta = getattr(ds, "file_meta", None)
    missing = [k for k in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID",
                           "TransferSyntaxUID") if not (meta is not None and meta.get(k))]
    if missing:
        raise InvalidInputError("the file has no complete File Meta Information",
                                code="missing-file-meta",
                                expected="(0002,0002), (0002,0003) and (0002,0010)",
                                found="missing: " + ", ".join(missing),
                                fix="re-export the file as DICOM Part 10")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".deid-", suffix=".tmp", dir=out.parent)
        os.close(fd)
    except OSError as exc:
        raise _not_writable(exc) from None
    try:
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, out)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _not_writable(exc) from None
    except Exception as exc:  # pydicom cannot encode a value of this (malformed) dataset
        Path(tmp).unlink(missing_ok=True)
        raise InvalidInputError("the de-identified file cannot be written", code="deid-failed",
                                expected="a dataset pydicom can encode", found=type(exc).__name__,
                                fix="re-export the file from the PACS") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _not_writable(exc: OSError) -> InvalidInputError:
    reason = os.strerror(exc.errno) if exc.errno else "no reason given"
    return InvalidInputError("cannot write the output", code="output-not-writable",
                             expected="a writable output folder with free space",
                             found=f"{type(exc).__name__} ({reason})",
                             fix="check the output path, its permissions and free space")


def deidentify(src: str | os.PathLike[str], out: str | os.PathLike[str], *, key: bytes) -> DeidReport:
    """De-identify one file (``src`` a file -> ``out`` a file) or a folder tree (mirrored).

    A folder goes to a staging folder renamed to ``out`` at the end (``out`` must not exist, or be
    an empty folder); files that fail are listed in ``DeidReport.failed`` and left out.
    Raises:
        InvalidInputError: ``not-found``; ``same-path`` (out inside src or equal);
            ``output-exists`` (a folder run whose ``out`` is a file or a non-empty folder);
            ``output-not-writable``; for a single file, any read or write error of the file.
    """
    from edgemed_runtime.sdk import quiet

    with quiet():
        return _deidentify(Path(src), Path(out), key)


def _deid_one(path: Path, out: Path, mapper: UidMapper) -> None:
    from edgemed_runtime.sdk import read_dataset

    ds = read_dataset(path)
    try:
        ds = deidentify_dataset(ds, mapper)
    except EdgemedError:
        raise
    except Exception as exc:  # a value of a malformed file that pydicom cannot convert
        raise InvalidInputError("the file cannot be de-identified", code="deid-failed",
                                expected="well-formed attribute values", found=type(exc).__name__,
                                fix="re-export the file from the PACS") from None
    _write_atomic(ds, out)


def _deidentify(src_p: Path, out_p: Path, key: bytes) -> DeidReport:
    if not src_p.exists():
        raise InvalidInputError("input not found", found=str(src_p), code="not-found",
                                fix="pass a DICOM file or a folder of them")
    if out_p.resolve() == src_p.resolve() or (src_p.is_dir() and src_p.resolve() in out_p.resolve().parents):
        raise InvalidInputError("the output would overwrite or sit inside the input", code="same-path",
                                expected="an output outside the input", found=str(out_p))
    mapper = UidMapper(key)
    if src_p.is_file():
        _deid_one(src_p, out_p, mapper)
        return DeidReport((src_p.name,), (), out_p)
    if out_p.exists() and not (out_p.is_dir() and not any(out_p.iterdir())):
        raise InvalidInputError("the output folder already exists", code="output-exists",
                                expected="a new or empty output folder", found=str(out_p),
                                fix="choose another output folder, or remove this one")
    try:
        out_p.parent.mkdir(parents=True, exist_ok=True)
        staging = out_p.parent / f".{out_p.name}.deid-{secrets.token_hex(6)}"
        staging.mkdir()  # the umask's mode, as the renamed output folder should have
    except OSError as exc:
        raise _not_writable(exc) from None
    written: list[str] = []
    skipped: list[tuple[str, str]] = []
    failed: list[tuple[str, str]] = []
    try:
        for path in sorted(p for p in src_p.rglob("*") if p.is_file()):
            rel = path.relative_to(src_p).as_posix()
            try:
                _deid_one(path, staging / rel, mapper)
            except EdgemedError as exc:
                if exc.code == "output-not-writable":
                    raise
                (skipped if exc.code in NOT_DICOM_CODES else failed).append((rel, exc.code))
                continue
            written.append(rel)
        try:
            if out_p.is_dir():
                out_p.rmdir()  # empty (checked above): os.replace cannot replace a folder everywhere
            os.replace(staging, out_p)
        except OSError as exc:
            raise _not_writable(exc) from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return DeidReport(tuple(written), tuple(skipped), out_p, tuple(failed))
