"""One self-contained HTML page for a release, readable for a failed run as for a shipped one.

Per target: its status in words, the chosen variant and why, one row per candidate variant with
the reason it was chosen, passed but not chosen, rejected by the gate or skipped; the gate's
figures with their confidence intervals; ROC curves and confusion matrices of FP32 vs the shipped
model on the validation split (matplotlib, embedded PNG); size, latency, device check, steps and
bundle as tables. Then the dataset's split report. Nothing is printed as ``None``, a Python dict
or a JSON dump: a missing figure is said in words ("not measured", "not built").
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np

from edgemed_runtime.sdk import atomic_write_bytes

from .seg_report import figures as seg_figures
from .seg_report import gate_rows as seg_gate_rows
from .seg_report import is_segmentation, metric_cells

if TYPE_CHECKING:
    from .config import ReleaseConfig
    from .flow import ReleaseResult, TargetOutcome

STATUS_TEXT = {
    "released": "released (compressed)", "fallback-fp32": "shipped FP32 (fallback)",
    "gate-failed": "gate failed: nothing shipped", "failed": "failed: nothing shipped",
    "interrupted": "interrupted", "pending": "not run",
}
STATUS_CLASS = {"released": "ok", "fallback-fp32": "warn"}
METRICS = ("accuracy", "auc", "sensitivity", "specificity", "f1")


def _e(x: Any) -> str:
    return html.escape(str(x))


def _num(v: Any, nd: int = 3, missing: str = "not measured") -> str:
    return f"{v:.{nd}f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else missing


def _ci(ci: Any, nd: int = 3) -> str:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(c, (int, float)) for c in ci):
        return f"[{ci[0]:+.{nd}f}, {ci[1]:+.{nd}f}]"
    return ""


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """An HTML table; cells are HTML already (escape before)."""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return (f"<table class='{cls}'><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head)
            + f"</tr>{body}</table>")


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def selection_of(t: "TargetOutcome", out: Path) -> dict[str, Any]:
    """The build's selection record (every candidate's verdict) from the target's
    ``report.json`` (written for a failed gate too), or {} when the build never ran."""
    folder = Path(t.artifact) if t.artifact else out / "targets" / t.target / "artifact"
    try:
        return dict(json.loads((folder / "report.json").read_text()).get("selection") or {})
    except (OSError, ValueError):
        return {}


def variant_rows(sel: Mapping[str, Any], chosen: str | None) -> list[list[str]]:
    """One row per candidate: name, verdict, reason, accuracy / AUC FP32 -> candidate with the
    difference's CI, p50 latency on this host."""
    rows: list[list[str]] = []
    timings = sel.get("timings_ms") or {}
    for name, g in (sel.get("candidates") or {}).items():
        g = g or {}
        if name == chosen:
            verdict, why, cls = "chosen", str(sel.get("why") or "the one that passed"), "ok"
        elif g.get("passed"):
            verdict, cls = "passed, not chosen", "warn"
            t = (timings.get(name) or {}).get("p50")
            best = (timings.get(chosen or "") or {}).get("p50")
            why = (f"slower on this host: {t:.2f} ms vs {best:.2f} ms for {chosen}"
                   if isinstance(t, (int, float)) and isinstance(best, (int, float))
                   else "passed the gate; another candidate was preferred")
        elif not g:
            verdict, why, cls = "not gated", "no validation figures (agreement not computed)", "warn"
        else:
            verdict, cls = "rejected by the gate", "bad"
            why = "; ".join(g.get("reasons") or ()) or "did not meet the gate rule"
        ni = g.get("non_inferiority") or {}
        cells = []
        for m in (("accuracy", "auc") if not is_segmentation(g) else ()):
            ref, cand = (g.get("reference") or {}).get(m), (g.get("candidate") or {}).get(m)
            cells.append(f"{_num(ref)} → {_num(cand)} {_ci((ni.get(m) or {}).get('ci'))}"
                         if ref is not None else "not computed")
        cells = cells or metric_cells(g)
        p50 = (timings.get(name) or {}).get("p50")
        rows.append([_e(name), f"<span class='{cls}'>{verdict}</span>", _e(why), *cells,
                     _num(p50, 2, "not timed") + (" ms" if isinstance(p50, (int, float)) else "")])
    for name, why in (sel.get("skipped") or {}).items():
        rows.append([_e(name), "<span class='warn'>skipped</span>", _e(why), "not built",
                     "not built", "not timed"])
    return rows


def gate_rows(gate: Mapping[str, Any] | None) -> list[list[str]]:
    """The gate's figures: per metric FP32, shipped model, difference and its CI."""
    if not gate:
        return []
    ref, cand, ni = gate.get("reference") or {}, gate.get("candidate") or {}, gate.get("non_inferiority") or {}
    rows = []
    for m in METRICS:
        if m not in ref and m not in ni:
            continue
        r = ni.get(m) or {}
        diff = r.get("difference", (cand.get(m) - ref[m]) if m in cand and m in ref else None)
        verdict = ("non-inferior" if r.get("non_inferior") else "inferior") if r else "reported"
        rows.append([m, _num(ref.get(m)), _num(cand.get(m)),
                     f"{diff:+.3f}" if isinstance(diff, (int, float)) else "not computed",
                     _ci(r.get("ci")) or "no interval (not a gate metric)", verdict])
    for k, v in (gate.get("agreement") or {}).items():
        rows.append([k.replace("_", " "), "", _num(v, 4), "", "", "reported"])
    return rows


def _val_logits(t: "TargetOutcome", out: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray] | str:
    """(labels, FP32 logits, shipped logits) on the validation split, or why there are none."""
    from edgemed_runtime import Artifact, open_artifact

    if not t.artifact or not (Path(t.artifact) / "artifact.json").is_file():
        return "no artifact was built for this target (the per-variant table has the figures)"
    try:
        from ..dicom import DicomDataset

        x, y = DicomDataset.from_manifest(out / "dataset", "val").arrays()
    except Exception as exc:  # no labelled validation split: say so
        return f"no validation split to plot ({type(exc).__name__})"
    if y is None or len(y) == 0:
        return "the validation split has no labels"
    logits = []
    try:
        for folder in (Path(t.artifact) / "reference", Path(t.artifact)):
            art = Artifact.load(folder)
            batch = len(x) if art.io.dynamic_batch else int(art.io.input_shape[0])
            with open_artifact(art) as s:
                logits.append(np.concatenate([s.logits(x[i:i + batch]) for i in range(0, len(x), batch)]))
    except Exception as exc:  # e.g. a GPU / phone artifact this host cannot run
        return f"the shipped model does not run on this host ({type(exc).__name__})"
    return np.asarray(y), logits[0], logits[1]


def _roc(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-p, kind="mergesort")
    yy = y[order]
    tps, fps = np.cumsum(yy == 1), np.cumsum(yy != 1)
    pos, neg = max(int((y == 1).sum()), 1), max(int((y != 1).sum()), 1)
    return np.r_[0.0, fps / neg], np.r_[0.0, tps / pos]


def curves_png(y: np.ndarray, l32: np.ndarray, lq: np.ndarray, labels: Sequence[str],
               title: str) -> bytes:
    """ROC (binary: the last class vs the rest) and the two confusion matrices, one figure."""
    from edgemed_runtime.sdk import softmax

    plt = _pyplot()
    k = l32.shape[1]
    names = list(labels) if len(labels) == k else [str(i) for i in range(k)]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for name, lg, style in (("FP32", l32, "-"), ("shipped", lq, "--")):
        p = softmax(lg.astype(np.float64))[:, -1]
        fpr, tpr = _roc(p, (y == k - 1).astype(int))
        axes[0].plot(fpr, tpr, style, label=name)
    axes[0].plot([0, 1], [0, 1], ":", color="#999")
    axes[0].set(xlabel="false positive rate", ylabel="true positive rate",
                title=f"ROC: {names[-1]} vs rest")
    axes[0].legend(loc="lower right")
    for ax, name, lg in ((axes[1], "FP32", l32), (axes[2], "shipped", lq)):
        cm = np.zeros((k, k), int)
        np.add.at(cm, (y.astype(int), lg.argmax(1)), 1)
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center",
                    color="white" if v > cm.max() / 2 else "black")
        ax.set(xticks=range(k), yticks=range(k), xticklabels=names, yticklabels=names,
               xlabel="predicted", ylabel="true", title=f"confusion: {name}")
    fig.suptitle(title)
    fig.tight_layout()
    return _png(fig)


def _latency_text(t: "TargetOutcome") -> str:
    if isinstance(t.latency, str):
        return t.latency
    cands = (t.latency or {}).get("candidates") or {}
    parts = [f"{n}: {c['p50_ms']:.2f} ms" for n, c in cands.items()
             if isinstance((c or {}).get("p50_ms"), (int, float))]
    return ", ".join(parts) or "not measured"


def _device_text(t: "TargetOutcome") -> str:
    dc = t.device_check or {}
    if not dc:
        return "not run"
    verdict = "ok" if dc.get("ok") else "failed"
    diff = dc.get("max_abs_diff_vs_build")
    extra = f", max |diff| vs build {diff:.2e}" if isinstance(diff, (int, float)) else ""
    return f"{verdict}: {dc.get('mode') or 'device check'}{extra}"


def summary_row(t: "TargetOutcome") -> list[str]:
    g = t.gate or {}
    if is_segmentation(g):
        acc, auc = metric_cells(g)
        size = (f"{t.size_bytes / 1e6:.2f} MB" + (f" ({t.size_ratio:.2f}x FP32)" if t.size_ratio
                                                  else "") if t.size_bytes else "not built")
        return [_e(t.target), f"<span class='{STATUS_CLASS.get(t.status, 'bad')}'>"
                f"{_e(STATUS_TEXT.get(t.status, t.status))}</span>", _e(t.chosen or "none"), acc,
                auc, _num((g.get("agreement") or {}).get("dice"), 3, "not gated") + " (Dice)",
                _e(size), _e(_latency_text(t)), _e(_device_text(t))]
    ref, cand, agr = g.get("reference") or {}, g.get("candidate") or {}, g.get("agreement") or {}
    ni = g.get("non_inferiority") or {}
    size = (f"{t.size_bytes / 1e6:.2f} MB" + (f" ({t.size_ratio:.2f}x FP32)" if t.size_ratio else "")
            if t.size_bytes else "not built")
    acc = (f"{_num(ref.get('accuracy'))} → {_num(cand.get('accuracy'))} "
           f"{_ci((ni.get('accuracy') or {}).get('ci'))}" if ref else "not gated")
    auc = (f"{_num(ref.get('auc'))} → {_num(cand.get('auc'))} {_ci((ni.get('auc') or {}).get('ci'))}"
           if "auc" in ref else "not gated")
    return [_e(t.target), f"<span class='{STATUS_CLASS.get(t.status, 'bad')}'>"
            f"{_e(STATUS_TEXT.get(t.status, t.status))}</span>", _e(t.chosen or "none"), _e(acc),
            _e(auc), _num(agr.get("top1_agreement"), 3, "not gated"), _e(size),
            _e(_latency_text(t)), _e(_device_text(t))]


def _error_html(err: Mapping[str, Any] | None) -> str:
    if not err:
        return ""
    lines = [f"<b>{_e(err.get('message') or 'failed')}</b>"]
    lines += [f"{k}: {_e(err[k])}" for k in ("expected", "found", "fix") if err.get(k)]
    return "<p class='bad'>" + "<br>".join(lines) + "</p>"


def target_section(t: "TargetOutcome", out: Path, labels: Sequence[str]) -> tuple[str, bytes | None]:
    """The HTML of one target and its curves PNG (None when there are none)."""
    sel = selection_of(t, out)
    parts = [f"<h3>{_e(t.target)}: {_e(STATUS_TEXT.get(t.status, t.status))}</h3>",
             _error_html(t.error)]
    if t.chosen:
        parts.append(f"<p><b>shipped:</b> {_e(t.chosen)}: {_e(t.why or '')}</p>")
    seg = is_segmentation(t.gate) or any(is_segmentation(c) for c in
                                         (sel.get("candidates") or {}).values())
    rows = variant_rows(sel, t.chosen)
    quality = (["Dice FP32 → variant [CI of diff]", "HD95 FP32 → variant [CI of diff]"] if seg
               else ["accuracy FP32 → variant [CI of diff]", "AUC FP32 → variant [CI of diff]"])
    parts.append(_table(["variant", "verdict", "reason", *quality, "p50 this host"], rows)
                 if rows else "<p>no candidate was built (the build stopped before the gate)</p>")
    if sel.get("gate_rule"):
        parts.append(f"<p><b>gate rule:</b> {_e(sel['gate_rule'])}</p>")
    g = seg_gate_rows(t.gate) if seg else gate_rows(t.gate)
    if g:
        parts.append("<h4>gate of the shipped model</h4>" + _table(
            ["metric", "FP32", "shipped", "difference", "95% CI of the difference", "verdict"], g))
        ev = (t.gate or {}).get("evaluator")
        if ev:
            parts.append(f"<p>evaluated with {_e(ev)}</p>")
    for w in [*((t.gate or {}).get("warnings") or ()), *(sel.get("warnings") or ())]:
        parts.append(f"<p class='warn'>warning: {_e(w)}</p>")
    png = None
    got = _val_logits(t, out) if not seg else ""
    if seg:
        html_part, t_pngs = seg_figures(t, out)
        parts.append(html_part)
        for name, data in t_pngs.items():
            atomic_write_bytes(out / name, data)
    elif isinstance(got, str):
        parts.append(f"<p>ROC and confusion matrices: {_e(got)}</p>")
    else:
        png = curves_png(*got, labels, f"{t.target}: validation split, FP32 vs {t.chosen}")
        parts.append(_img(png, f"ROC and confusion matrices for {t.target}"))
    steps = [[_e(k), _e(v)] for k, v in (t.steps or {}).items()]
    if steps:
        parts.append(_table(["step", "outcome"], steps, "small"))
    reg = t.registry or {}
    registry = (f"{reg.get('family')} release {reg.get('release')}, id "
                f"{str(reg.get('bundle_id'))[:12]}" if reg else "not registered")
    facts = [["bundle", _e(t.bundle or "not sealed")], ["registry", _e(registry)],
             ["device install", _e(getattr(t, "device_install", None) or "as the bundle declares")],
             ["seconds", f"{t.seconds:.1f}"]]
    parts.append(_table(["", ""], facts, "small"))
    return "".join(parts), png


def dataset_section(dataset: Mapping[str, Any]) -> str:
    """The split report as a table (files, patients, classes per split) and the leak check."""
    counts = dataset.get("counts") or {}
    if not counts:
        return "<p>no dataset report</p>"
    rows = []
    for split, c in counts.items():
        classes = ", ".join(f"{k}: {v}" for k, v in (c.get("class") or {}).items()) or "none"
        scanners = ", ".join(f"{k}: {v}" for k, v in (c.get("scanner") or {}).items()) or "none"
        rows.append([_e(split), str(c.get("files", 0)), str(c.get("patients", 0)), _e(classes),
                     _e(scanners)])
    leak = dataset.get("leak_check") or {}
    verdict = ("no patient or study in two splits" if leak.get("ok") else
               f"{leak.get('patients_in_several_splits', 'some')} patient(s) in several splits"
               if leak else "not checked")
    return (_table(["split", "files", "patients", "classes", "scanners"], rows)
            + f"<p>patient-level split; leak check: {_e(verdict)}</p>")


STYLE = """body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px;vertical-align:top}.ok{color:#17803d}
.bad{color:#b42318}.warn{color:#b45309}img{max-width:100%}table.small td{font-size:13px}"""
_JS = """window.addEventListener('load',function(){var im=document.images,ok=0;
for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)ok++;}
document.body.setAttribute('data-images-loaded',ok+'/'+im.length);});"""


def _quality_heads(cfg: "ReleaseConfig") -> list[str]:
    if getattr(cfg.model, "task", "classification") == "segmentation":
        return ["Dice FP32 → shipped [CI of diff]", "HD95 FP32 → shipped [CI of diff]",
                "agreement with FP32"]
    return ["accuracy FP32 → shipped [CI of diff]", "AUC FP32 → shipped [CI of diff]",
            "top-1 agreement"]


def write_release_report(result: "ReleaseResult", cfg: "ReleaseConfig") -> Path:
    """Write ``<out>/report.html`` (and one ``curves-<target>.png`` per target with curves)
    atomically; return the HTML path."""
    out = Path(result.out)
    labels = tuple(getattr(cfg.model, "labels", ()) or ())
    sections = []
    for t in result.targets:
        body, png = target_section(t, out, labels)
        if png is not None:
            atomic_write_bytes(out / f"curves-{t.target}.png", png)
        sections.append(body)
    shipped = sum(t.status in ("released", "fallback-fp32") for t in result.targets)
    stopped = getattr(result, "interrupted", None)
    note = "<p class='bad'>the run was interrupted; finished targets are kept</p>" if stopped else ""
    if (out / "registry.sqlite").is_file():
        note += (f"<p>registered in {_e(out / 'registry.sqlite')}: <code>edgemed registry list "
                 f"--db {_e(out / 'registry.sqlite')}</code></p>")
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>edgemed release {_e(cfg.release.family)} {_e(cfg.release.version)}</title>
<style>{STYLE}</style><script>{_JS}</script></head><body>
<h1>Release {_e(cfg.release.family)} {_e(cfg.release.version)} (counter {cfg.release.counter})</h1>
{note}<p>{shipped} of {len(result.targets)} target(s) shipped in {result.seconds:.1f} s;
{result.skipped_steps} unchanged step(s) skipped.</p>
{_table(["target", "status", "shipped variant", *_quality_heads(cfg), "size",
         "latency (p50, this host)", "device check"], [summary_row(t) for t in result.targets])}
<h2>Targets</h2>{''.join(sections)}
<h2>Dataset</h2>{dataset_section(result.dataset or {})}
</body></html>"""
    path = out / "report.html"
    atomic_write_bytes(path, page.encode())
    return path
