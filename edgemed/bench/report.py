"""``edgemed report``: one self-contained HTML file (images as base64 data URIs) plus the PNGs.

Sections: latency distributions per candidate (batch 1, and end to end from DICOM), per-process
medians (how much a figure moves between processes), accuracy vs latency vs size with the Pareto
front, the accuracy gate table with confidence intervals (from the artifact's metrics), Grad-CAM
panels when the artifact has them, the machine and the load during the run, and provenance.
Plots use matplotlib's Agg backend; nothing needs a server or a network to be read.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from edgemed_runtime.sdk import atomic_write_bytes

from ..errors import InvalidInputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class ReportFiles:
    """What ``build_report`` wrote."""

    html: Path
    pngs: tuple[Path, ...]


# ------------------------------------------------------------------------------------ inputs
def load_artifact_info(path: Path) -> dict[str, Any]:
    """``artifact.json`` of an artifact directory (metrics, provenance, target)."""
    f = path / "artifact.json" if path.is_dir() else path
    try:
        return json.loads(f.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError("cannot read the artifact manifest", expected="artifact.json",
                                found=f"{f}: {type(exc).__name__}", code="not-found") from None


def gradcam_images(artifact_dir: Path | None, info: dict[str, Any] | None) -> list[tuple[str, Path]]:
    """Grad-CAM panels: images named in the metrics (``metrics.gradcam`` as a list of paths or
    ``{path, caption}``, or any ``{"png": path}`` record such as ``edgemed.explain``'s report;
    relative paths are relative to the artifact) and images under the artifact's ``gradcam/``."""
    if artifact_dir is None:
        return []
    found: list[tuple[str, Path]] = []

    def add(rel: Any, caption: str) -> None:
        if not isinstance(rel, str):
            return
        p = Path(rel) if Path(rel).is_absolute() else artifact_dir / rel
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and p not in {q for _, q in found}:
            found.append((caption or p.stem, p))

    metrics = (info or {}).get("metrics") or {}
    listed = metrics.get("gradcam")
    if isinstance(listed, list):
        for e in listed:
            if isinstance(e, dict):
                add(e.get("path") or e.get("png"), str(e.get("caption", "")))
            else:
                add(e, "")
    for path, d in _walk(metrics):
        if "png" in d:
            sim = d.get("mean_similarity", d.get("similarity"))
            cap = "/".join(path) + (f" (similarity {sim:.3f})" if isinstance(sim, float) else "")
            add(d["png"], cap)
    folder = artifact_dir / "gradcam"
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            add(str(p), p.stem)
    return found


def _value_ci(v: Any) -> tuple[float | None, tuple[float, float] | None]:
    """A metric as (value, (lo, hi) or None) from a float or a {value, ci / ci_low, ci_high} dict."""
    if isinstance(v, bool):
        return float(v), None
    if isinstance(v, (int, float)):
        return float(v), None
    if isinstance(v, dict):
        val = next((v[k] for k in ("value", "point", "estimate", "mean") if k in v), None)
        ci = v.get("ci")
        if ci is None and "ci_low" in v and "ci_high" in v:
            ci = (v["ci_low"], v["ci_high"])
        if isinstance(val, (int, float)):
            return float(val), (float(ci[0]), float(ci[1])) if isinstance(ci, (list, tuple)) \
                and len(ci) == 2 else None
    return None, None


def _walk(d: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    if isinstance(d, dict):
        yield path, d
        for k, v in d.items():
            yield from _walk(v, (*path, str(k)))


def gate_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows ``{source, metric, reference, candidate}`` (each (value, ci)) from artifact metrics.

    Reads the gate's reference/candidate metrics and any clinical report (``overall`` + ``ci``)
    found in the metrics, whatever key the build stored it under.
    """
    rows: list[dict[str, Any]] = []
    gate = metrics.get("gate") or {}
    ref, cand = gate.get("reference") or {}, gate.get("candidate") or {}
    for name in sorted(set(ref) | set(cand)):
        rows.append({"source": "gate", "metric": name, "reference": _value_ci(ref.get(name)),
                     "candidate": _value_ci(cand.get(name))})
    for name, v in sorted((gate.get("agreement") or {}).items()):
        rows.append({"source": "gate (agreement)", "metric": name, "reference": (None, None),
                     "candidate": _value_ci(v)})
    ni = gate.get("non_inferiority")
    if isinstance(ni, dict) and "difference" in ni:
        ci = ni.get("ci")
        rows.append({"source": f"non-inferiority (margin {ni.get('margin')})",
                     "metric": f"{ni.get('metric', '')} difference", "reference": (None, None),
                     "candidate": (float(ni["difference"]), tuple(ci) if ci else None)})
    for path, d in _walk(metrics):
        if "overall" in d and isinstance(d.get("ci"), dict) and isinstance(d["overall"], dict):
            src = "/".join(path) or "clinical"
            for name, val in sorted(d["overall"].items()):
                ci = d["ci"].get(name)
                rows.append({"source": src, "metric": name, "reference": (None, None),
                             "candidate": (float(val), tuple(ci) if ci else None)})
    return rows


# ------------------------------------------------------------------------------------ plots
def _fig_png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_latency(data: dict[str, Any]) -> bytes | None:
    """Box + strip plot of batch-1 latency per candidate (and end to end from DICOM)."""
    c = data["candidates"]
    series = [(n, c[n]["samples_ms"]) for n in data["order"] if c[n].get("samples_ms")]
    series += [(f"{n} (DICOM e2e)", c[n]["end_to_end_samples_ms"]) for n in data["order"]
               if c[n].get("end_to_end_samples_ms")]
    if not series:
        return None
    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(series) + 1.6))
    ax.boxplot([s for _, s in series], vert=False, showfliers=False, widths=0.6)
    rng = np.random.default_rng(0)
    for i, (_, s) in enumerate(series, start=1):
        ax.scatter(s, i + rng.uniform(-0.2, 0.2, len(s)), s=4, alpha=0.35)
    ax.set_yticks(range(1, len(series) + 1), [n for n, _ in series])
    ax.set_xlabel("latency per call (ms), batch 1, all processes pooled")
    ax.set_title("Latency distributions (candidates interleaved in rotating turns)")
    ax.grid(axis="x", alpha=0.3)
    return _fig_png(fig)


def plot_processes(data: dict[str, Any]) -> bytes | None:
    """Median latency of each fresh process, per candidate: the between-process spread."""
    c = data["candidates"]
    names = [n for n in data["order"] if "process_p50_ms" in c[n]]
    if not names:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.6))
    for i, n in enumerate(names):
        pp = c[n]["process_p50_ms"]["per_process"]
        ax.plot(pp, [i] * len(pp), "o", alpha=0.8)
        ax.plot([min(pp), max(pp)], [i, i], "-", color="grey", alpha=0.6)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("p50 latency of one process (ms)")
    ax.set_title("Between-process spread (each dot is one fresh process)")
    ax.grid(axis="x", alpha=0.3)
    return _fig_png(fig)


def pareto_points(data: dict[str, Any]) -> list[dict[str, Any]]:
    """(latency, agreement with FP32, size) per candidate, flagged when on the Pareto front."""
    c = data["candidates"]
    pts = []
    for n in data["order"]:
        d = c[n]
        if "latency_ms" not in d:
            continue
        acc = 1.0 if d["role"] == "fp32" else d.get("agreement_with_baseline", {}).get("top1_agreement")
        if acc is None:
            continue
        pts.append({"name": n, "latency_ms": d["latency_ms"]["p50"], "accuracy": float(acc),
                    "size_mb": (d.get("size_bytes") or 0) / 2**20})
    for p in pts:
        p["pareto"] = not any(
            q is not p and q["latency_ms"] <= p["latency_ms"] and q["accuracy"] >= p["accuracy"]
            and q["size_mb"] <= p["size_mb"] and (q["latency_ms"], q["accuracy"], q["size_mb"])
            != (p["latency_ms"], p["accuracy"], p["size_mb"]) for q in pts)
    return pts


def plot_pareto(data: dict[str, Any]) -> bytes | None:
    """Agreement with FP32 vs latency; marker area is model size; the front is outlined."""
    pts = pareto_points(data)
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    top = max(p["size_mb"] for p in pts) or 1.0
    for p in pts:
        ax.scatter(p["latency_ms"], p["accuracy"], s=60 + 900 * p["size_mb"] / top, alpha=0.55,
                   edgecolors="black" if p["pareto"] else "none", linewidths=1.5)
        ax.annotate(f"{p['name']}\n{p['size_mb']:.1f} MB", (p["latency_ms"], p["accuracy"]),
                    fontsize=8, xytext=(6, 6), textcoords="offset points")
    front = sorted((p for p in pts if p["pareto"]), key=lambda p: p["latency_ms"])
    if len(front) > 1:
        ax.plot([p["latency_ms"] for p in front], [p["accuracy"] for p in front], "--", alpha=0.5)
    ax.margins(x=0.15, y=0.2)
    ax.set_xlabel("p50 latency, batch 1 (ms)")
    ax.set_ylabel("top-1 agreement with ORT FP32 (check set)")
    ax.set_title("Accuracy vs latency vs size\n(marker area = size; outlined = Pareto front)",
                 pad=12)
    ax.grid(alpha=0.3)
    return _fig_png(fig)


def plot_gate(rows: list[dict[str, Any]]) -> bytes | None:
    """Forest plot of every gate figure that has a confidence interval."""
    with_ci = [(f"{r['metric']} ({side}, {r['source']})", *r[side]) for r in rows
               for side in ("reference", "candidate") if r[side][1] is not None]
    if not with_ci:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(with_ci) + 1.4))
    for i, (_, v, (lo, hi)) in enumerate(with_ci):
        ax.errorbar([v], [i], xerr=[[v - lo], [hi - v]], fmt="o", capsize=3)
    ax.set_yticks(range(len(with_ci)), [w[0] for w in with_ci], fontsize=8)
    ax.set_title("Accuracy gate figures with confidence intervals")
    ax.grid(axis="x", alpha=0.3)
    return _fig_png(fig)


# ------------------------------------------------------------------------------------ HTML
_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;
padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}.warn{color:#a60}
.bad{color:#b00;font-weight:bold}.ok{color:#070}pre{background:#f7f7f7;padding:1em;overflow:auto;
font-size:12px}.panels img{max-width:300px;margin:4px}figure{display:inline-block;margin:4px}"""

_JS = """window.addEventListener('load',function(){var im=document.images,ok=0;
for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)ok++;}
document.body.setAttribute('data-images-loaded',ok+'/'+im.length);});"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _num(v: Any, nd: int = 3) -> str:
    return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else _e(v))


def _vc(v: tuple[float | None, tuple[float, float] | None]) -> str:
    val, ci = v
    if val is None:
        return "-"
    return f"{val:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _bench_sections(data: dict[str, Any]) -> list[str]:
    c = data["candidates"]
    out = ["<h2>Warm latency (batch 1)</h2>"]
    rows = []
    for n in data["order"]:
        d = c[n]
        if "latency_ms" not in d:
            rows.append([_e(n)] + ["-"] * 7 + [f"<span class=bad>{_e(d.get('error', 'not timed'))}</span>"])
            continue
        lat, pp = d["latency_ms"], d["process_p50_ms"]
        thr = ", ".join(f"b{b}: {v:.1f}/s" for b, v in d["throughput"].items())
        rows.append([_e(n), *(_num(lat[k], 2) for k in ("p50", "p90", "p99", "mean", "std")),
                     " / ".join(f"{x:.1f}" for x in pp["per_process"]), _num(pp["spread_pct"], 1),
                     _e(thr)])
    out.append(_table(["candidate", "p50 ms", "p90", "p99", "mean", "std", "p50 per process",
                       "spread %", "throughput"], rows))
    rt = data.get("ratio_table", [])
    if rt:
        out.append("<h2>Ratios (same processes, interleaved; per-process median [min, max])</h2>")
        rr = []
        for r in rt:
            def rng(k: str, r: dict[str, Any] = r) -> str:
                return f"{r[k]:.3f} [{r[k + '_range'][0]:.2f}, {r[k + '_range'][1]:.2f}]" if k in r else "-"
            rr.append([_e(r["name"]), rng("vs_fp32"), rng("vs_best_peer"), rng("vs_edgemed"),
                       _num(r.get("size_vs_fp32")), _num(r.get("top1_agreement")),
                       f"{100 * r['fraction_of_ceiling']:.0f}%" if "fraction_of_ceiling" in r else "-"])
        out.append(_table(["candidate", "x ORT FP32", "x best peer", "x edgemed", "size x FP32",
                           "top-1 agreement", "of GEMM ceiling"], rr))
    cold_rows = []
    for n in data["order"]:
        cold = {k: v["median"] for k, v in c[n].get("cold", {}).items()}
        size = c[n].get("size_bytes")
        cold_rows.append([_e(n), *(_num(cold.get(k), 1) for k in ("import_ms", "open_ms",
                          "first_inference_ms", "peak_rss_mb", "model_rss_mb")),
                          _num(size / 2**20 if size else None, 2), _num(c[n].get("gmacs"), 3)])
    out.append("<h2>Cold start, memory, size</h2>")
    out.append(_table(["candidate", "import ms", "open ms", "first inference ms", "peak RSS MB",
                       "model RSS MB", "size MB", "GMACs"], cold_rows))
    e = c.get("edgemed", {})
    if "end_to_end_ms" in e:
        dec = data.get("decode+preprocess_ms", {}).get("p50")
        out.append(f"<p>End to end from DICOM ({_e(data['data'].get('dicom'))}): p50 "
                   f"{e['end_to_end_ms']['p50']:.2f} ms = {e['end_to_end_over_model']:.2f}x model-only "
                   f"({e['latency_ms']['p50']:.2f} ms); decode + preprocess alone {_num(dec, 2)} ms.</p>")
    return out


def _machine_section(data: dict[str, Any]) -> str:
    m, load, ceil = data.get("machine", {}), data.get("load", {}), data.get("ceilings")
    rows = [["CPU", _e(m.get("cpu_model"))], ["flags", _e(", ".join(m.get("cpu_flags", [])))],
            ["cores (logical / usable)", f"{m.get('logical_cores')} / {m.get('usable_cores')}"],
            ["libraries", _e(", ".join(f"{k} {v}" for k, v in m.get("libraries", {}).items()))],
            ["run config", _e(json.dumps(data.get("config", {})))],
            ["data", _e(json.dumps(data.get("data", {})))]]
    if ceil:
        rows.append(["GEMM ceilings", f"INT8 {ceil['int8_gmacs']:.0f} GMAC/s, FP32 "
                     f"{ceil['fp32_gmacs']:.0f} GMAC/s ({ceil['threads']} threads)"])
    ir = data.get("inrun_ceilings")
    if ir:
        rows.append(["GEMM ceilings in the same rounds", f"INT8 {ir['int8']['median']:.0f} GMAC/s, "
                     f"FP32 {ir['fp32']['median']:.0f} GMAC/s (used for the fractions)"])
    if load:
        cls = "warn" if load.get("others_mean_cores", 0) > 0.25 else "ok"
        rows.append(["other processes' load", f"<span class={cls}>{load['others_mean_cores']:.2f} "
                     f"cores mean, {load['others_max_cores']:.2f} max, steal "
                     f"{load['steal_pct']:.1f}% over {load.get('wall_s', 0):.0f} s</span>"])
    for k, v in {**data.get("skipped", {}), **data.get("notes", {})}.items():
        rows.append([_e(k), _e(v)])
    b = data.get("budget", {})
    if b.get("checked"):
        rows.append(["budget", f"<span class={'bad' if b['exceeded'] else 'ok'}>"
                     f"{_e(b['target'])}: {'exceeded: ' + _e('; '.join(b['reasons'])) if b['exceeded'] else 'within budget'}</span>"])
    return "<h2>Machine and run</h2>" + _table(["", ""], rows)


def build_report(out_dir: str | os.PathLike[str], *, result: dict[str, Any] | None = None,
                 artifact: str | os.PathLike[str] | None = None, title: str = "edgemed report") -> ReportFiles:
    """Write ``report.html`` and the PNGs into ``out_dir``; return their paths.

    Args:
        result: a benchmark result (``BenchResult.data``); its ``artifact`` is used when
            ``artifact`` is not given.
        artifact: an artifact directory (gate table, Grad-CAM, provenance).
    Raises:
        InvalidInputError: neither a result nor an artifact, or an unreadable artifact.
    """
    art_dir = Path(artifact) if artifact else (
        Path(result["artifact"]) if result and result.get("artifact") else None)
    if art_dir is not None and not (art_dir / "artifact.json").is_file():
        if artifact:
            raise InvalidInputError("no edgemed artifact here", expected="a folder with artifact.json",
                                    found=str(art_dir), code="not-found")
        art_dir = None  # the result names an artifact that is no longer there
    if result is None and art_dir is None:
        raise InvalidInputError("nothing to report", expected="a benchmark result and/or an artifact",
                                fix="edgemed bench ARTIFACT --save bench.json; edgemed report bench.json")
    info = load_artifact_info(art_dir) if art_dir else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images: dict[str, bytes] = {}
    parts = [f"<h1>{_e(title)}</h1>"]
    if result is not None:
        parts += _benchmark_parts(result, images)
    if info is not None and art_dir is not None:
        parts += _artifact_parts(art_dir, info, images)
    if result is not None:
        parts.append(_machine_section(result))
    pngs = []
    for name, png in images.items():
        p = out / f"{name}.png"
        atomic_write_bytes(p, png)
        os.chmod(p, 0o644)  # a report is meant to be shared
        pngs.append(p)
    doc = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
           f"<style>{_CSS}</style><script>{_JS}</script></head><body>{''.join(parts)}</body></html>")
    html_path = out / "report.html"
    atomic_write_bytes(html_path, doc.encode())
    os.chmod(html_path, 0o644)
    return ReportFiles(html_path, tuple(pngs))


def _benchmark_parts(result: dict[str, Any], images: dict[str, bytes]) -> list[str]:
    """The HTML sections of a benchmark result; its plots are added to ``images``."""
    parts = [f"<p>Benchmark of <code>{_e(result.get('source'))}</code> at {_e(result.get('time'))}.</p>"]
    parts += _bench_sections(result)
    for name, fn in (("latency", plot_latency), ("processes", plot_processes),
                     ("pareto", plot_pareto)):
        png = fn(result)
        if png:
            images[name] = png
            parts.append(f"<h2>{_e(name.capitalize())}</h2>" + _img(png, name))
    pts = pareto_points(result)
    if pts:
        parts.append(_table(["candidate", "p50 ms", "top-1 agreement", "size MB", "Pareto"],
                            [[_e(p["name"]), _num(p["latency_ms"], 2), _num(p["accuracy"], 4),
                              _num(p["size_mb"], 2), "yes" if p["pareto"] else ""] for p in pts]))
    return parts


def _artifact_parts(art_dir: Path, info: dict[str, Any], images: dict[str, bytes]) -> list[str]:
    """The HTML sections of an artifact (gate, Grad-CAM, provenance, artifact.json); the gate
    plot is added to ``images``."""
    metrics = info.get("metrics") or {}
    rows = gate_rows(metrics)
    gate = metrics.get("gate") or {}
    verdict = ("passed" if gate.get("passed") else "failed") if gate else "no gate recorded"
    parts = [f"<h2>Accuracy gate ({_e(verdict)}; {_e(gate.get('mode', ''))}, n={_e(gate.get('n', '-'))})</h2>"]
    parts.append(_table(["source", "metric", "FP32 reference [CI]", "candidate [CI]"],
                        [[_e(r["source"]), _e(r["metric"]), _vc(r["reference"]),
                          _vc(r["candidate"])] for r in rows]) if rows else "<p>No metrics.</p>")
    png = plot_gate(rows)
    if png:
        images["gate"] = png
        parts.append(_img(png, "gate confidence intervals"))
    cams = gradcam_images(art_dir, info)
    if cams:
        parts.append("<h2>Grad-CAM</h2><div class=panels>")
        for cap, p in cams:
            data64 = base64.b64encode(p.read_bytes()).decode()
            mime = "png" if p.suffix.lower() == ".png" else "jpeg"
            parts.append(f'<figure><img alt="{_e(cap)}" src="data:image/{mime};base64,{data64}">'
                         f"<figcaption>{_e(cap)}</figcaption></figure>")
        parts.append("</div>")
    prov = info.get("provenance") or []
    parts.append("<h2>Provenance</h2>")
    parts.append(_table(["#", "pass", "details"], [
        [str(i + 1), _e(r.get("pass", "?")),
         _e(", ".join(f"{k}={v}" for k, v in r.items() if k != "pass" and not isinstance(v, (dict, list)))[:300])]
        for i, r in enumerate(prov)]))
    parts.append(f"<details><summary>artifact.json</summary><pre>{_e(json.dumps(info, indent=2, default=str))}</pre></details>")
    return parts
