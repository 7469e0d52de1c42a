"""Property-based fuzzing of the DICOM reader (hypothesis): mutated files must only ever raise
edgemed's own errors.

    python -m edgemed.dicom.fuzz --examples 5000      # the long run (the suite runs ~150)

Seeds are small valid files written here plus small compressed files from pydicom's test data
(JPEG baseline, JPEG lossless, JPEG 2000, RLE). Mutations: byte overwrites, truncation,
insertions, and 32-bit length fields set to huge values.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgemed.errors import EdgemedError, MissingDependencyError

PYDICOM_SEEDS = ("JPEG2000.dcm", "MR_small_RLE.dcm", "SC_rgb_jpeg_dcmtk.dcm",
                 "JPGLosslessP14SV1_1s_1f_8b.dcm", "emri_small_jpeg_2k_lossless.dcm", "CT_small.dcm")


@dataclass
class FuzzReport:
    """Cases run, how many raised edgemed errors (by code), and exception types that escaped."""

    cases: int = 0
    ok: int = 0
    codes: collections.Counter = field(default_factory=collections.Counter)
    escaped: collections.Counter = field(default_factory=collections.Counter)

    def to_dict(self) -> dict[str, object]:
        return {"cases": self.cases, "decoded_ok": self.ok, "error_codes": dict(self.codes),
                "escaping_exception_types": dict(self.escaped)}


def seed_files(workdir: Path) -> list[bytes]:
    """Bytes of the seed files (a valid synthetic CT slice, MONOCHROME1 and multi-frame files,
    and small pydicom test files that exist offline)."""
    from edgemed.data.synthetic import make_dataset

    syn = make_dataset(workdir / "syn", n_patients=2, slices_per_patient=2, size=24, seed=7,
                       monochrome1_fraction=0.5, multiframe_patients=1)
    seeds = [p.read_bytes() for p in syn.paths[:3]]
    try:
        from pydicom.data import get_testdata_file

        for name in PYDICOM_SEEDS:
            path = get_testdata_file(name)
            if path is not None and os.path.getsize(path) < 200_000:
                seeds.append(Path(path).read_bytes())
    except Exception:
        pass
    return seeds


def mutate(data: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    """Apply (kind, position, value) mutations: 0 overwrite byte, 1 truncate, 2 insert bytes,
    3 write a huge little-endian 32-bit length, 4 zero a 4-byte field."""
    buf = bytearray(data)
    for kind, pos, value in ops:
        if not buf:
            break
        pos %= len(buf)
        if kind == 0:
            buf[pos] = value & 0xFF
        elif kind == 1:
            del buf[max(pos, 1):]
        elif kind == 2:
            buf[pos:pos] = bytes([value & 0xFF]) * (1 + value % 64)
        elif kind == 3:
            buf[pos:pos + 4] = (0xFFFFFFF0 - value % 4096).to_bytes(4, "little")
        else:
            buf[pos:pos + 4] = b"\0\0\0\0"
    return bytes(buf)


def run_case(path: Path, report: FuzzReport) -> None:
    """Read one file through both entry points; record the outcome."""
    from edgemed_runtime import PreprocessSpec
    from edgemed_runtime.sdk import load_input, read_image

    report.cases += 1
    try:
        read_image(path)
        load_input(path, PreprocessSpec(size=(16, 16)))
        report.ok += 1
    except (EdgemedError, MissingDependencyError) as exc:
        report.codes[exc.code] += 1
    except BaseException as exc:  # noqa: BLE001 - this is what the fuzz run counts
        if isinstance(exc, KeyboardInterrupt):
            raise
        report.escaped[type(exc).__name__] += 1


def fuzz(examples: int, seed: int = 0, derandomize: bool = True) -> FuzzReport:
    """Run ``examples`` hypothesis cases; returns the report (never raises on escapes)."""
    try:
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st
    except ImportError:
        raise MissingDependencyError("the fuzz run needs hypothesis", fix="pip install hypothesis",
                                     code="missing-hypothesis") from None
    report = FuzzReport()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        seeds = seed_files(work)
        target = work / "case.dcm"
        op = st.tuples(st.integers(0, 4), st.integers(0, 1 << 20), st.integers(0, 1 << 16))

        @settings(max_examples=examples, deadline=None, database=None, derandomize=derandomize,
                  suppress_health_check=list(HealthCheck))
        @given(st.integers(0, len(seeds) - 1), st.lists(op, min_size=1, max_size=6))
        def one(index: int, ops: list[tuple[int, int, int]]) -> None:
            target.write_bytes(mutate(seeds[index], ops))
            run_case(target, report)

        if not derandomize:
            from hypothesis import seed as hypothesis_seed

            one = hypothesis_seed(seed)(one)
        one()
    return report


def main(argv: list[str] | None = None) -> int:
    """Command line: run the fuzzer and print the JSON report; exit 1 if anything escaped."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=5000)
    parser.add_argument("--random", action="store_true", help="random (not derandomized) cases")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    report = fuzz(args.examples, seed=args.seed, derandomize=not args.random)
    print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    return 1 if report.escaped else 0


if __name__ == "__main__":
    sys.exit(main())
