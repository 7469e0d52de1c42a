"""Peer pipelines built from the same FP32 ONNX model with the libraries' defaults.

* ``ort-fp32``: the FP32 ONNX through onnxruntime (its default graph optimisation).
* ``ort-quantize_static``: ``onnxruntime.quantization.quantize_static(model, out, reader)`` with
  every default (QDQ, S8S8, per-tensor, MinMax), then onnxruntime.
* ``nncf+openvino``: ``openvino.convert_model`` + ``nncf.quantize(model, Dataset)`` with defaults,
  compiled by OpenVINO for CPU with its defaults.

Only the thread count is set (the same for everyone). Built peers are cached by the hash of the
FP32 model and of the calibration data, so repeated benchmarks do not re-quantize.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from edgemed_runtime.sdk import sha256_file

from ..errors import ExportError
from .candidates import Candidate
from .ceiling import cache_dir

PEERS = ("ort-fp32", "ort-quantize_static", "nncf+openvino")


@dataclass(frozen=True)
class PeerSet:
    """Peers ready to time, and the ones skipped with the reason."""

    candidates: tuple[Candidate, ...]
    skipped: dict[str, str]


def _key(reference: Path, calib: np.ndarray) -> str:
    h = hashlib.sha256(sha256_file(reference).encode())
    h.update(hashlib.sha256(np.ascontiguousarray(calib, np.float32).tobytes()).digest())
    return h.hexdigest()[:24]


def _cached_peer(marker: Path, make: Callable[[Path], None], what: str,
                 say: Callable[[str], None]) -> None:
    """Build a peer into ``marker``'s folder unless it is already there; ExportError on failure."""
    if marker.is_file():
        return
    say(f"peer: {what}")
    try:
        _atomic_dir(marker.parent, make)
    except Exception as exc:
        raise ExportError(f"the peer {what} failed on this model",
                          found=f"{type(exc).__name__}: {exc}"[:400], code="peer-failed") from None


def _atomic_dir(final: Path, make: Callable[[Path], None]) -> None:
    """Build into a temporary sibling folder, then rename it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        make(tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _ort_static(reference: Path, calib: np.ndarray, out_dir: Path) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    name = onnx.load(str(reference), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.it, None)
            return None if x is None else {name: x[None]}

    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(str(reference), str(out_dir / "model.onnx"), Reader())


def _nncf_ov(reference: Path, calib: np.ndarray, out_dir: Path) -> None:
    from .._openvino import no_telemetry

    no_telemetry()
    import nncf
    import openvino as ov

    logging.getLogger("nncf").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ov.convert_model(str(reference))
        q = nncf.quantize(model, nncf.Dataset([x[None] for x in calib]))
        ov.save_model(q, str(out_dir / "model.xml"))


def build_peers(reference: str | Path, calib: np.ndarray, *, threads: int,
                which: tuple[str, ...] = PEERS, cache: Path | None = None,
                progress: Callable[[str], None] | None = None) -> PeerSet:
    """Build (or load from the cache) the peer models of the FP32 ONNX ``reference``.

    Raises:
        ExportError: a peer library failed on this model (its message is kept).
    """
    say = progress or (lambda m: None)
    ref = Path(reference)
    root = (cache or cache_dir()) / "peers" / _key(ref, calib)
    opts = {"threads": threads}
    cands: list[Candidate] = []
    skipped: dict[str, str] = {}
    if "ort-fp32" in which:
        cands.append(Candidate("ort-fp32", "onnx", str(ref), role="fp32", options=opts,
                               label="onnxruntime, FP32 ONNX, default settings",
                               precision="fp32", size_bytes=ref.stat().st_size))
    if "ort-quantize_static" in which:
        d = root / "ort-quantize_static"
        _cached_peer(d / "model.onnx", lambda tmp: _ort_static(ref, calib, tmp),
                     "onnxruntime quantize_static (defaults)", say)
        cands.append(Candidate("ort-quantize_static", "onnx", str(d / "model.onnx"), role="peer",
                               options=opts, precision="int8",
                               label="onnxruntime quantize_static defaults (QDQ, S8S8, per-tensor, "
                                     "MinMax)", size_bytes=(d / "model.onnx").stat().st_size))
    if "nncf+openvino" in which:
        missing = [m for m in ("openvino", "nncf") if importlib.util.find_spec(m) is None]
        if missing:
            skipped["nncf+openvino"] = f"not installed: {', '.join(missing)} (pip install " \
                                       f"'edgemed[openvino]')"
        else:
            d = root / "nncf-openvino"
            _cached_peer(d / "model.xml", lambda tmp: _nncf_ov(ref, calib, tmp),
                         "NNCF quantize + OpenVINO (defaults)", say)
            size = sum(f.stat().st_size for f in d.iterdir() if f.suffix in (".xml", ".bin"))
            cands.append(Candidate("nncf+openvino", "openvino-ir", str(d / "model.xml"),
                                   role="peer", options=opts, precision="int8", size_bytes=size,
                                   label="NNCF quantize defaults + OpenVINO CPU defaults"))
    return PeerSet(tuple(cands), skipped)
