"""Issue 19 bar: Ray Data evaluation of 2,000 synthetic images on the local 3-node cluster.

Metrics (the whole gate verdict, CIs included) equal to the single-process gate, and the
driver's peak RSS independent of the dataset size: the 2,000-image run within 10% of the
200-image run. Each driver is a fresh process (``python benchmarks/test_ray_eval.py driver``)
whose VmHWM is its peak. Then ``edgemed evaluate`` of the 2,000 files with and without
``--ray``: the same JSON. Run: ``pytest -m slow benchmarks/test_ray_eval.py -s``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

if __name__ != "__main__":  # the driver process must not set up a second cluster folder / token
    from tests.ray.conftest import ray_cluster  # noqa: E402,F401  (the fixture)
from tests.ray.helpers import SPEC, dicom_set, int8_of, tiny_onnx  # noqa: E402


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def driver(argv: list[str]) -> int:
    """A fresh driver: join, gate the listed files through Ray Data, print verdict + peak RSS."""
    import numpy as np

    from edgemed.distributed import gate_on_ray
    from edgemed.evaluate import GateConfig

    address, ref, cand, listing = argv
    doc = json.loads(Path(listing).read_text())
    t0 = time.perf_counter()
    g = gate_on_ray(ref, cand, doc["files"], np.asarray(doc["labels"]), GateConfig(bootstrap=500),
                    address=address, preprocess=SPEC, actors=2)
    print(json.dumps({"gate": g.to_dict(), "seconds": time.perf_counter() - t0,
                      "peak_rss_mb": _peak_rss_mb()}, default=str))
    return 0


@pytest.mark.slow
def test_bar_ray_data_2000_images(ray_cluster, tmp_path: Path) -> None:  # noqa: F811
    import numpy as np

    from edgemed.distributed import gate_on_ray
    from edgemed.evaluate import GateConfig

    files, y = dicom_set(tmp_path / "dicom", 2000)
    ref = tiny_onnx(tmp_path / "ref.onnx", seed=3)
    cand = int8_of(ref, tmp_path / "cand.onnx")
    runs = {}
    for n in (200, 2000):
        listing = tmp_path / f"files-{n}.json"
        listing.write_text(json.dumps({"files": [str(f) for f in files[:n]],
                                       "labels": [int(v) for v in y[:n]]}))
        out = subprocess.run([sys.executable, __file__, "driver", ray_cluster.address, str(ref),
                              str(cand), str(listing)], env=ray_cluster.env, cwd=ROOT,
                             capture_output=True, text=True, timeout=1500)
        assert out.returncode == 0, out.stderr[-3000:]
        runs[n] = json.loads(out.stdout.strip().splitlines()[-1])
        t0 = time.perf_counter()
        local = gate_on_ray(ref, cand, files[:n], np.asarray(y[:n]), GateConfig(bootstrap=500),
                            preprocess=SPEC)
        runs[n]["local_seconds"] = time.perf_counter() - t0
        assert json.dumps(runs[n]["gate"], sort_keys=True, default=str) == json.dumps(
            json.loads(json.dumps(local.to_dict(), default=str)), sort_keys=True, default=str)
    small, big = runs[200]["peak_rss_mb"], runs[2000]["peak_rss_mb"]
    print(f"\nbar: driver peak RSS 200 images {small:.1f} MB, 2000 images {big:.1f} MB "
          f"({big / small - 1:+.1%}); Ray {runs[200]['seconds']:.1f} s / "
          f"{runs[2000]['seconds']:.1f} s, single process {runs[200]['local_seconds']:.1f} s / "
          f"{runs[2000]['local_seconds']:.1f} s; accuracy {runs[2000]['gate']['candidate']}")
    assert abs(big / small - 1) <= 0.10
    # edgemed evaluate over the same 2,000 files: the --ray JSON is the single-process one
    docs = {}
    for extra in ([], ["--ray", ray_cluster.address, "--actors", "2"]):
        t0 = time.perf_counter()
        out = subprocess.run([str(Path(sys.executable).parent / "edgemed"), "evaluate", str(cand),
                              str(tmp_path / "dicom"), "--reference", str(ref), "--input",
                              "1x1x8x8", "--window", "40,400", "--json", *extra],
                             env=ray_cluster.env, capture_output=True, text=True, timeout=1500)
        assert out.returncode == 0, out.stderr[-3000:]
        docs[bool(extra)] = json.loads(out.stdout)
        docs[bool(extra)]["engine"]["seconds"] = time.perf_counter() - t0
    eng = {k: d.pop("engine") for k, d in docs.items()}
    assert docs[False]["n"] == 2000
    assert json.dumps(docs[False], sort_keys=True) == json.dumps(docs[True], sort_keys=True)
    print(f"bar: edgemed evaluate of 2000 images identical with --ray; "
          f"{eng[False]['seconds']:.1f} s in one process, {eng[True]['seconds']:.1f} s on Ray")


if __name__ == "__main__" and sys.argv[1:2] == ["driver"]:
    sys.exit(driver(sys.argv[2:]))
