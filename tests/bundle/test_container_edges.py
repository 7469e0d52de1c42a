"""Edges of the container and the open path: empty folders, bundles created in the future, a
corrupted own wrapped key, tar hard links, an archive under another suffix, and a payload
replaced by a FIFO after verification. Each is refused (or opened) with a specific code, never
a hang or a misleading one."""

from __future__ import annotations

import json
import os
import tarfile
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import edgemed_runtime as rt
from edgemed_runtime.bundle import RollbackState, open_bundle, open_verified, verify_bundle
from edgemed_runtime.bundle.format import canonical_json
from edgemed_runtime.errors import BundleError, DeviceMismatchError, IntegrityError

from .conftest import NOW, Keys, copy_bundle, open_args, rewrite_archive

X = np.zeros((1, 1, 8, 8), np.float32)


def _refused(b: Path, keys: Keys, state: Path, exc: type[Exception], code: str, **kw: Any) -> BundleError:
    with pytest.raises(exc) as ei:
        rt.open(b, **open_args(keys, state, **kw))
    assert ei.value.code == code, str(ei.value)
    assert ei.value.message and ei.value.fix, "the error names a fix"
    return ei.value


# -- empty folders ------------------------------------------------------------------------------
@pytest.mark.parametrize("folder", ["extra", "payload/empty", "keys/empty"])
def test_empty_folder_in_a_bundle_dir_is_refused(folder: str, keys: Keys, pristine: dict[str, Path],
                                                 tmp_path: Path) -> None:
    b = copy_bundle(pristine["r2"], tmp_path / "b")
    (b / folder).mkdir()
    _refused(b, keys, tmp_path / "state", IntegrityError, "empty-folder")


def test_keys_folder_emptied_by_removing_the_last_device_is_not_an_empty_folder_error(
        keys: Keys, pristine: dict[str, Path], tmp_path: Path) -> None:
    b = copy_bundle(pristine["r2"], tmp_path / "b")
    (b / f"keys/{keys.device.fingerprint}.json").unlink()
    _refused(b, keys, tmp_path / "state", DeviceMismatchError, "no-device-key")


def _rebuild(archive: Path, edit: Callable[[list[tuple[tarfile.TarInfo, bytes]]], None]) -> None:
    rewrite_archive(archive, edit, tarfile.USTAR_FORMAT)


def _entry(name: str, type_: bytes, link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname, ti.size = type_, link, 0
    return ti, b""


def test_empty_folder_entry_in_an_archive_is_refused(keys: Keys, pristine: dict[str, Path],
                                                     tmp_path: Path) -> None:
    a = copy_bundle(pristine["r2a"], tmp_path / "b.edgemed")
    _rebuild(a, lambda ms: ms.append(_entry("extra", tarfile.DIRTYPE)))
    _refused(a, keys, tmp_path / "state", IntegrityError, "empty-folder")


def test_folder_entries_of_present_files_are_skipped(keys: Keys, pristine: dict[str, Path],
                                                     tmp_path: Path) -> None:
    a = copy_bundle(pristine["r2a"], tmp_path / "b.edgemed")
    _rebuild(a, lambda ms: ms.insert(0, _entry("payload", tarfile.DIRTYPE)))
    with rt.open(a, **open_args(keys, tmp_path / "state")) as s:
        assert s.run({"input": X})["logits"].shape == (1, 2)


def test_tar_hardlink_is_reported_as_a_hardlink(keys: Keys, pristine: dict[str, Path],
                                                tmp_path: Path) -> None:
    a = copy_bundle(pristine["r2a"], tmp_path / "b.edgemed")
    _rebuild(a, lambda ms: ms.append(_entry("notes", tarfile.LNKTYPE, "bundle.json")))
    err = _refused(a, keys, tmp_path / "state", IntegrityError, "hardlink")
    assert "hard link" in err.message


# -- created in the future ----------------------------------------------------------------------
def test_bundle_created_beyond_the_clock_skew_is_refused(
        keys: Keys, make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    b = make_bundle(tmp_path / "b", 2, created=NOW + timedelta(days=2))
    err = _refused(b, keys, tmp_path / "state", BundleError, "not-yet-valid")
    assert "clock" in err.fix
    assert RollbackState(tmp_path / "state").get("tiny") is None


def test_bundle_created_within_the_clock_skew_opens(
        keys: Keys, make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    b = make_bundle(tmp_path / "b", 2, created=NOW + timedelta(hours=23))
    with rt.open(b, **open_args(keys, tmp_path / "state")) as s:
        assert s.info["release"] == 2


# -- a corrupted own wrapped key ----------------------------------------------------------------
def _edit_key(b: Path, keys: Keys, fn: Callable[[dict], None]) -> None:
    p = b / f"keys/{keys.device.fingerprint}.json"
    d = json.loads(p.read_bytes())
    fn(d)
    p.write_bytes(canonical_json(d))


def test_corrupted_scheme_in_own_key_says_corrupted(keys: Keys, pristine: dict[str, Path],
                                                    tmp_path: Path) -> None:
    b = copy_bundle(pristine["r2"], tmp_path / "b")
    _edit_key(b, keys, lambda d: d.update(scheme=d["scheme"][:-1] + chr(ord(d["scheme"][-1]) ^ 1)))
    err = _refused(b, keys, tmp_path / "state", IntegrityError, "wrapped-key-invalid")
    assert "corrupt" in err.message


def test_unparseable_own_key_says_corrupted(keys: Keys, pristine: dict[str, Path],
                                            tmp_path: Path) -> None:
    b = copy_bundle(pristine["r2"], tmp_path / "b")
    p = b / f"keys/{keys.device.fingerprint}.json"
    p.write_bytes(p.read_bytes()[:40])
    err = _refused(b, keys, tmp_path / "state", IntegrityError, "wrapped-key-invalid")
    assert "corrupt" in err.message


def test_valid_scheme_of_another_key_type_is_still_wrong_device_key_type(
        keys: Keys, pristine: dict[str, Path], tmp_path: Path) -> None:
    b = copy_bundle(pristine["r2"], tmp_path / "b")
    _edit_key(b, keys, lambda d: d.update(scheme="rsa-oaep-sha256"))
    _refused(b, keys, tmp_path / "state", DeviceMismatchError, "wrong-device-key-type")


# -- open by content, not by suffix -------------------------------------------------------------
@pytest.mark.parametrize("name", ["bundle.tar", "bundle", "bundle.onnx"])
def test_archive_under_another_name_opens_with_both_entry_points(
        name: str, keys: Keys, pristine: dict[str, Path], tmp_path: Path) -> None:
    a = copy_bundle(pristine["r2a"], tmp_path / name)
    with open_bundle(a, **open_args(keys, tmp_path / "s1")) as s:
        ref = s.run({"input": X})["logits"]
    with rt.open(a, **open_args(keys, tmp_path / "s2")) as s:
        np.testing.assert_array_equal(s.run({"input": X})["logits"], ref)


def test_a_non_archive_named_edgemed_is_refused_as_a_bad_archive(keys: Keys, tmp_path: Path) -> None:
    p = tmp_path / "x.edgemed"
    p.write_bytes(b"not a tar file" * 100)
    _refused(p, keys, tmp_path / "state", IntegrityError, "bad-archive")


# -- a payload replaced by a FIFO after verification --------------------------------------------
def _open_in_thread(fn: Callable[[], Any], fifo: Path) -> BaseException | None:
    """Run ``fn`` in a thread; a call still blocked after 20 s is a hang (then unblocked by
    opening the FIFO for writing, so the test ends)."""
    result: list[BaseException | None] = []

    def run() -> None:
        try:
            fn().close()
            result.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported below
            result.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(20)
    if t.is_alive():
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(10)
        pytest.fail("opening the bundle hung on a FIFO")
    return result[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("form", ["r2", "r2a"])
def test_payload_replaced_by_fifo_after_verification_is_refused(
        form: str, keys: Keys, pristine: dict[str, Path], tmp_path: Path) -> None:
    src = pristine[form]
    b = copy_bundle(src, tmp_path / ("b.edgemed" if src.is_file() else "b"))
    vb = verify_bundle(b, trust=keys.publisher.public_path, now=NOW, defer_payload_hashes=True)
    target = b if b.is_file() else b / "payload/model.onnx.enc"
    target.unlink()
    os.mkfifo(target)
    err = _open_in_thread(lambda: open_verified(vb, device_key=keys.device.private_path,
                                                state=RollbackState(tmp_path / "state")), target)
    assert isinstance(err, IntegrityError), repr(err)
    assert err.code == "not-regular-file", str(err)
