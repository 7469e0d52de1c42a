"""Property-based fuzzing (hypothesis) of the reader: only edgemed errors may escape.
The default run has a bounded budget; ``pytest -m slow`` (or ``python -m edgemed.dicom.fuzz``)
runs the long one."""

from __future__ import annotations

import pytest

from edgemed.dicom.fuzz import fuzz, mutate


def test_mutate_is_deterministic():
    data = bytes(range(200))
    ops = [(0, 5, 300), (2, 10, 3), (3, 20, 7), (1, 150, 0)]
    assert mutate(data, ops) == mutate(data, ops)
    assert len(mutate(data, [(1, 50, 0)])) == 50


def test_fuzz_bounded_no_escapes():
    report = fuzz(400)
    print("\nfuzz:", report.to_dict())
    assert report.cases >= 400
    assert not report.escaped, report.escaped
    assert report.codes, "the mutations produced coded errors"


@pytest.mark.slow
def test_fuzz_long_no_escapes():
    """3000 random mutations in a child process whose address space is capped at 6 GiB, as on a
    device: a hostile file that asks for a huge buffer must become a coded error there too,
    never take the process (or a CI machine) down."""
    import json
    import subprocess
    import sys

    code = (
        "import json, resource\n"
        "resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))\n"
        "from edgemed.dicom.fuzz import fuzz\n"
        "print(json.dumps(fuzz(3000, derandomize=False, seed=1).to_dict()))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    print("\nfuzz (long):", report)
    assert report["cases"] == 3000 and not report["escaping_exception_types"], report
