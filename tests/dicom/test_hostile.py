"""Hostile and broken files -> InvalidInputError with a specific code; never a RecursionError,
MemoryError or raw pydicom exception; no message or log line carries patient data."""

from __future__ import annotations

import logging
import warnings

import pytest

from edgemed_runtime.dicom import load_input, read_image
from edgemed_runtime.errors import InvalidInputError
from edgemed_runtime.preprocess import PreprocessSpec

from . import hostile

CASES = {
    "not_dicom": (hostile.not_dicom, "not-dicom"),
    "truncated_header": (lambda p: hostile.truncated(p, 0.1), None),
    "truncated_pixels": (lambda p: hostile.truncated(p, 0.8), None),
    "huge_length": (hostile.huge_length, "declared-length"),
    "deep_nesting": (lambda p: hostile.nested_sequences(p, 400), "nesting-too-deep"),
    "very_deep_nesting": (lambda p: hostile.nested_sequences(p, 3000), "nesting-too-deep"),
    "missing_pixels": (hostile.missing_pixels, "no-pixel-data"),
    "wrong_pixel_length": (hostile.wrong_pixel_length, "pixel-length-mismatch"),
    "absurd_dimensions": (hostile.absurd_dimensions, "pixel-budget"),
    "executable_preamble": (hostile.executable_preamble, "executable-preamble"),
    "preamble_only": (hostile.preamble_only, "truncated"),
    # deflated datasets inflating 64 MiB past what their 32 x 32 image needs (the 1 GiB ones and
    # the memory they take are in test_deflate_bomb_is_refused_within_the_memory_bound)
    "deflate_bomb_private": (lambda p: hostile.deflated_bomb(p, 64 << 20, "private"),
                             "inflate-budget"),
    "deflate_bomb_late": (lambda p: hostile.deflated_bomb(p, 64 << 20, "late"), "inflate-budget"),
    "deflate_bomb_pixels": (lambda p: hostile.deflated_bomb(p, 64 << 20, "pixels"),
                            "inflate-budget"),
    "deflated_truncated": (lambda p: hostile.truncate_file(
        hostile.deflated_twin(hostile.valid_file(p.with_suffix(".src")), p), 0.6), "truncated"),
    "deflated_garbage": (hostile.deflated_garbage, "corrupt"),
    "deflated_huge_meta_element": (hostile.deflated_huge_meta_element, "declared-length"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_file_gives_coded_error(case, tmp_path, caplog):
    build, code = CASES[case]
    path = build(tmp_path / f"{case}.dcm")
    caplog.set_level(logging.DEBUG)
    for call in (lambda: read_image(path), lambda: load_input(path, PreprocessSpec())):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(InvalidInputError) as info:
                call()
        err = info.value
        assert err.code != "invalid-input", "a specific code, not the default"
        if code is not None:
            assert err.code == code
        else:
            assert err.code in ("truncated", "pixel-length-mismatch", "corrupt", "declared-length",
                                "no-pixel-data")
        texts = [str(err), repr(err), str(err.to_dict())] + [str(w.message) for w in caught]
        texts += [r.getMessage() for r in caplog.records]
        for text in texts:
            assert hostile.SENTINEL not in text and "ZZSENTINEL" not in text
        assert err.__cause__ is None


def test_process_keeps_serving_after_hostile_files(tmp_path):
    for case, (build, _) in sorted(CASES.items()):
        with pytest.raises(InvalidInputError):
            load_input(build(tmp_path / f"{case}.dcm"), PreprocessSpec())
    good = hostile.valid_file(tmp_path / "good.dcm")
    assert load_input(good, PreprocessSpec(size=(16, 16))).shape == (1, 16, 16)


def test_missing_path_and_frame_out_of_range(tmp_path):
    with pytest.raises(InvalidInputError) as info:
        read_image(tmp_path / "nope.dcm")
    assert info.value.code == "not-found"
    good = hostile.valid_file(tmp_path / "good.dcm")
    with pytest.raises(InvalidInputError) as info:
        read_image(good, frame=3)
    assert info.value.code == "frame-out-of-range"


def test_pixel_budget_is_checked_before_decoding(tmp_path):
    good = hostile.valid_file(tmp_path / "good.dcm", rows=64, cols=64)
    with pytest.raises(InvalidInputError) as info:
        read_image(good, max_frame_pixels=64 * 64 - 1)
    assert info.value.code == "pixel-budget"
    assert read_image(good, max_frame_pixels=64 * 64).stored.shape == (64, 64)


def test_missing_decoder_names_the_package(tmp_path):
    """In a fresh interpreter where the JPEG 2000 plugins cannot be imported (as if not installed),
    a JPEG 2000 file raises MissingDependencyError naming the package to install."""
    import subprocess
    import sys
    import textwrap

    from pydicom.data import get_testdata_file

    from edgemed.release.device_check import import_blocker

    path = get_testdata_file("MR_small_jp2klossless.dcm")
    code = import_blocker(("openjpeg", "PIL", "gdcm", "pylibjpeg")) + textwrap.dedent(f"""
        from edgemed_runtime.dicom import read_image
        from edgemed_runtime.errors import MissingDependencyError
        try:
            read_image({str(path)!r})
        except MissingDependencyError as e:
            print('CODE', e.code); print('FIX', e.fix)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "CODE missing-decoder" in out.stdout, out.stdout + out.stderr
    assert "pylibjpeg" in out.stdout


def test_sentinel_never_in_messages_logs_or_warnings(tmp_path, caplog, capfd):
    """A sentinel PatientName (plus invalid values that make pydicom warn, quoting them) goes
    through every reading entry point and every failure; it appears in no message, log or warning."""
    import pydicom

    from edgemed.dicom.deid import deidentify
    from edgemed.dicom.index import index_folder

    caplog.set_level(logging.DEBUG)
    folder = tmp_path / "data"
    folder.mkdir()
    good = hostile.valid_file(folder / "good.dcm")
    ds = pydicom.dcmread(good)
    with warnings.catch_warnings():  # building the bad file warns here, in the test's own code
        warnings.simplefilter("ignore")
        ds.PatientName = (hostile.SENTINEL + "^") * 5  # too long for PN: pydicom quotes it
        ds.StudyInstanceUID = "1.2." + hostile.SENTINEL  # not a valid UID: pydicom quotes it
        ds.AccessionNumber = hostile.SENTINEL * 3
        ds.save_as(folder / "bad_values.dcm", enforce_file_format=True)
    for case, (build, _) in sorted(CASES.items()):
        build(folder / f"{case}.dcm")
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for path in sorted(folder.iterdir()):
            for call in (lambda: read_image(path), lambda: load_input(path, PreprocessSpec())):
                try:
                    call()
                except InvalidInputError as err:
                    messages += [str(err), repr(err), str(err.to_dict())]
        records, skipped = index_folder(folder)
        messages += [str(s) for s in skipped]  # records carry Patient ID by design: data, not messages
        report = deidentify(folder, tmp_path / "out", key=bytes(range(32)))
        messages.append(str(report.to_dict()))
    messages += [str(w.message) for w in caught]
    messages += [r.getMessage() for r in caplog.records]
    out, err = capfd.readouterr()
    messages += [out, err]
    assert {c for _, c in skipped} >= {"not-dicom", "executable-preamble", "pixel-budget"}
    assert any(r.path == "bad_values.dcm" for r in records)
    for text in messages:
        assert "ZZSENTINEL" not in text, text[:200]


def test_codestream_declaring_a_huge_image_is_refused_before_decoding(tmp_path):
    """The DICOM header passes the pixel budget, but the JPEG 2000 SIZ marker asks for more."""
    from pydicom.data import get_testdata_file

    from edgemed_runtime.dicom import read_image
    from edgemed_runtime.errors import InvalidInputError

    src = get_testdata_file("MR_small_jp2klossless.dcm")
    data = bytearray(open(src, "rb").read())
    siz = data.find(b"\xff\x4f\xff\x51") + 2
    data[siz + 6:siz + 14] = (60000).to_bytes(4, "big") + (60000).to_bytes(4, "big")  # Xsiz, Ysiz
    path = tmp_path / "bomb.dcm"
    path.write_bytes(bytes(data))
    try:
        read_image(path)
    except InvalidInputError as exc:
        assert exc.code == "codestream-size" and "60000x60000" in exc.found
    else:
        raise AssertionError("a 60000x60000 codestream in a 64x64 image was decoded")


_PEAK_CHILD = """
import json, resource, sys, tracemalloc
from pathlib import Path

from edgemed_runtime.dicom import read_image
from edgemed_runtime.errors import InvalidInputError


def peak() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB on Linux


target, *warm = sys.argv[1:]
for path in warm:  # every lazy import and first-use allocation happens here, before the baseline
    read_image(path)
statm = Path("/proc/self/statm")
if statm.exists():  # a safety net for the machine: the address space may grow 3 GiB at most
    vm = int(statm.read_text().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (vm + (3 << 30), resource.RLIM_INFINITY))
base = peak()
tracemalloc.start()
try:
    read_image(target)
    result = "ok"
except InvalidInputError as exc:
    result = exc.code
traced = tracemalloc.get_traced_memory()[1]
print(json.dumps({"result": result, "grew": peak() - base, "traced": traced}))
"""


def _read_in_child(path, tmp_path) -> dict:
    """Read ``path`` with ``read_image`` in a fresh interpreter: its result (``"ok"`` or the
    error code), how much its peak RSS grew during that read (``grew``) and the peak of the
    memory Python and numpy allocated for it (``traced``, tracemalloc), in bytes. ``grew`` can
    read low when the machine evicts the interpreter's file-backed pages during the read;
    ``traced`` does not depend on that."""
    import json
    import subprocess
    import sys

    warm = hostile.valid_file(tmp_path / "warm.dcm")
    warm_deflated = hostile.deflated_twin(warm, tmp_path / "warm_deflated.dcm")
    out = subprocess.run([sys.executable, "-c", _PEAK_CHILD, str(path), str(warm), str(warm_deflated)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


BOUND = 64 << 20  # the bar: peak RSS reading any hostile file <= its declared pixel bytes + 64 MiB


@pytest.mark.parametrize("where", ["private", "late", "pixels"])
def test_deflate_bomb_is_refused_within_the_memory_bound(where, tmp_path):
    """~1 MB on disk, 1 GiB of zeros once inflated (pydicom alone: ~2 GiB RSS, then reads it)."""
    path = hostile.deflated_bomb(tmp_path / "bomb.dcm", 1 << 30, where)
    assert path.stat().st_size < 2 << 20
    got = _read_in_child(path, tmp_path)
    assert got["result"] == "inflate-budget", got
    for what in ("grew", "traced"):
        assert got[what] <= 32 * 32 * 2 + BOUND, f"{what}: {got[what] >> 20} MiB"


def test_large_unused_element_costs_no_memory(tmp_path):
    """An uncompressed 32 x 32 image carrying a 256 MiB private blob: read, and the blob (never
    used) is not loaded (pydicom alone reads it whole)."""
    import pydicom

    path = hostile.valid_file(tmp_path / "blob.dcm")
    ds = pydicom.dcmread(path)
    ds.add_new((0x0009, 0x0010), "LO", "HOSTILE")
    ds.add_new((0x0009, 0x1000), "OB", bytes(256 << 20))
    ds.save_as(path)
    del ds
    got = _read_in_child(path, tmp_path)
    assert got["result"] == "ok", got
    for what in ("grew", "traced"):
        assert got[what] <= 32 * 32 * 2 + BOUND, f"{what}: {got[what] >> 20} MiB"


def test_large_deflated_image_reads_within_the_memory_bound(tmp_path):
    """A consistent deflated 8192 x 8192 16-bit image (128 MiB of pixels): read, and the pixels
    are inflated once (pydicom alone holds them twice)."""
    path = hostile.deflated_image(tmp_path / "big.dcm", 8192, 8192)
    got = _read_in_child(path, tmp_path)
    assert got["result"] == "ok", got
    for what in ("grew", "traced"):
        assert got[what] <= 8192 * 8192 * 2 + BOUND, f"{what}: {got[what] >> 20} MiB"


def test_deflated_file_reads_like_its_uncompressed_twin(tmp_path):
    import numpy as np
    import pydicom

    from edgemed_runtime.dicom import read_dataset

    plain = hostile.valid_file(tmp_path / "plain.dcm", rows=48, cols=40)
    deflated = hostile.deflated_twin(plain, tmp_path / "deflated.dcm")
    assert pydicom.dcmread(deflated).file_meta.TransferSyntaxUID == hostile.DEFLATED_TS.decode()
    a, b = read_image(plain), read_image(deflated)
    assert a.stored.dtype == b.stored.dtype and np.array_equal(a.stored, b.stored)
    assert (a.window, a.photometric) == (b.window, b.photometric)
    assert np.array_equal(a.pixels, b.pixels) and np.array_equal(a.display(), b.display())
    spec = PreprocessSpec(window=(40.0, 400.0), size=(16, 16))
    assert np.array_equal(load_input(plain, spec), load_input(deflated, spec))
    ours, theirs = read_dataset(deflated), pydicom.dcmread(deflated)
    assert [e.tag for e in ours] == [e.tag for e in theirs]
    assert all(ours[e.tag].value == e.value for e in theirs)
    assert "PixelData" not in read_dataset(deflated, stop_before_pixels=True)


def test_inflate_budget_is_configurable(tmp_path):
    from edgemed_runtime.dicom import read_dataset

    path = hostile.deflated_image(tmp_path / "img.dcm", 1024, 1024)  # 2 MiB of pixels
    assert len(read_dataset(path).PixelData) == 1024 * 1024 * 2
    with pytest.raises(InvalidInputError) as info:
        read_dataset(path, max_inflated_bytes=1 << 20)
    assert info.value.code == "inflate-budget" and str(1 << 20) in info.value.expected
    bomb = hostile.deflated_bomb(tmp_path / "bomb.dcm", 4 << 20, "private")
    with pytest.raises(InvalidInputError) as info:
        read_dataset(bomb, header_allowance=1 << 20)
    assert info.value.code == "inflate-budget"
    assert read_dataset(bomb, header_allowance=8 << 20).Rows == 32  # allowed: it reads
