"""One self-contained HTML page for a release: every target's status, gate metrics, size,
latency, device check, what was chosen and why, and the dataset's split report."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgemed_runtime.sdk import atomic_write_bytes

from ..evaluate import gate_summary

if TYPE_CHECKING:
    from .config import ReleaseConfig
    from .flow import ReleaseResult


def _e(x: Any) -> str:
    return html.escape(str(x))


def _f(v: Any, nd: int = 3) -> str:
    if isinstance(v, dict) and "value" in v:
        ci = v.get("ci") or v.get("ci95")
        return f"{v['value']:.{nd}f}" + (f" [{ci[0]:.{nd}f}, {ci[1]:.{nd}f}]" if ci else "")
    return f"{v:.{nd}f}" if isinstance(v, (int, float)) else "–"


def _latency_png(result: "ReleaseResult") -> bytes | None:
    rows = []
    for t in result.targets:
        if isinstance(t.latency, dict):
            for name, c in t.latency.get("candidates", {}).items():
                if c.get("p50_ms") is not None:
                    rows.append((f"{t.target}\n{name}", float(c["p50_ms"])))
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.2))
    ax.barh([r[0] for r in rows], [r[1] for r in rows], color="#3b7dd8")
    ax.set_xlabel("median latency (ms), batch 1, this host")
    ax.invert_yaxis()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_release_report(result: "ReleaseResult", cfg: "ReleaseConfig") -> Path:
    """Write ``<out>/report.html`` (and ``latency.png``) atomically; return the HTML path."""
    out = Path(result.out)
    rows = []
    for t in result.targets:
        g = t.gate or {}
        ref, cand, agr = g.get("reference") or {}, g.get("candidate") or {}, g.get("agreement") or {}
        lat = t.latency if isinstance(t.latency, str) else ", ".join(
            f"{n}: {_f(c.get('p50_ms'), 2)} ms" for n, c in (t.latency or {}).get("candidates", {}).items())
        status_cls = {"released": "ok", "fallback-fp32": "warn"}.get(t.status, "bad")
        rows.append(
            f"<tr><td>{_e(t.target)}</td><td class='{status_cls}'>{_e(t.status)}</td>"
            f"<td>{_e(t.chosen or '–')}</td>"
            f"<td>{_f(ref.get('accuracy'))} / {_f(cand.get('accuracy'))}</td>"
            f"<td>{_f(ref.get('auc'))} / {_f(cand.get('auc'))}</td>"
            f"<td>{_f(agr.get('top1_agreement'))}</td><td>{_e(gate_summary(g))}</td>"
            f"<td>{(t.size_bytes or 0) / 1e6:.2f} MB ({_f(t.size_ratio, 2)}x)</td>"
            f"<td>{_e(lat or '–')}</td>"
            f"<td>{_e((t.device_check or {}).get('mode', '–'))}</td></tr>")
    details = []
    for t in result.targets:
        err = f"<p class='bad'>{_e(t.error.get('message'))}: {_e(t.error.get('found'))}</p>" if t.error else ""
        details.append(
            f"<h3>{_e(t.target)}</h3>{err}<p><b>chosen:</b> {_e(t.chosen)} — {_e(t.why)}</p>"
            f"<p><b>gate:</b> {_e(gate_summary(t.gate))}; evaluator: "
            f"{_e((t.gate or {}).get('evaluator') or '–')}</p>"
            + "".join(f"<p class='warn'>warning: {_e(w)}</p>" for w in (t.gate or {}).get("warnings") or ())
            + f"<p><b>steps:</b> {_e(', '.join(f'{k}: {v}' for k, v in t.steps.items()))}</p>"
            f"<p><b>bundle:</b> {_e(t.bundle)}</p>"
            f"<details><summary>gate and device check (JSON)</summary><pre>"
            f"{_e(json.dumps({'gate': t.gate, 'device_check': t.device_check, 'registry': t.registry}, indent=1, default=str))}"
            f"</pre></details>")
    png = _latency_png(result)
    img = ""
    if png is not None:
        atomic_write_bytes(out / "latency.png", png)
        img = (f"<img alt='latency per target' src='data:image/png;base64,"
               f"{base64.b64encode(png).decode()}'>")
    counts = json.dumps(result.dataset.get("counts", {}), indent=1, default=str)
    leak = result.dataset.get("leak_check", {})
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>edgemed release {_e(cfg.release.family)} {_e(cfg.release.version)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:14px}}.ok{{color:#17803d}}.bad{{color:#b42318}}.warn{{color:#b45309}}
pre{{background:#f6f6f6;padding:8px;overflow:auto}}</style></head><body>
<h1>Release {_e(cfg.release.family)} {_e(cfg.release.version)} (counter {cfg.release.counter})</h1>
<p>{sum(t.status == 'released' for t in result.targets)} of {len(result.targets)} targets released
in {result.seconds:.1f} s; {result.skipped_steps} unchanged steps skipped.</p>
<table><tr><th>target</th><th>status</th><th>chosen</th><th>accuracy FP32 / chosen</th>
<th>AUC FP32 / chosen</th><th>top-1 agreement</th><th>gate: n, difference [CI]</th><th>size</th><th>latency</th><th>device check</th></tr>
{''.join(rows)}</table>{img}
<h2>Targets</h2>{''.join(details)}
<h2>Dataset</h2><p>patient-level split; leak check: {_e(leak)}</p><pre>{_e(counts)}</pre>
</body></html>"""
    path = out / "report.html"
    atomic_write_bytes(path, page.encode())
    return path
