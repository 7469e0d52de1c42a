"""The segmentation parts of the release report: the gate's Dice / HD95 / surface Dice figures
with their CIs, the per-case Dice distribution (FP32 vs shipped, per label), FP32 vs shipped
slice overlays of the device-check series (matplotlib, PNG); words where a figure is missing."""

from __future__ import annotations

import html
import io
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

SEG_METRICS = (("dice", "mean Dice", 3), ("hd95_mm", "mean HD95 (mm)", 2),
               ("surface_dice", "mean surface Dice", 3))


def _e(x: Any) -> str:
    return html.escape(str(x))


def _f(v: Any, nd: int) -> str:
    return f"{v:.{nd}f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "not measured"


def _ci(ci: Any, nd: int) -> str:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(c, (int, float)) for c in ci):
        return f"[{ci[0]:+.{nd}f}, {ci[1]:+.{nd}f}]"
    return ""


def is_segmentation(gate: Mapping[str, Any] | None) -> bool:
    """Whether a gate record (artifact metrics / selection candidate) is a segmentation gate's."""
    return bool(gate) and (gate or {}).get("task") == "segmentation"


def metric_cells(g: Mapping[str, Any] | None) -> list[str]:
    """Two table cells (escaped): mean Dice and HD95, FP32 -> candidate [CI of the difference];
    agreement with FP32 where there is no ground truth."""
    g = g or {}
    if not g:
        return ["not gated", "not gated"]
    ref, cand, diffs = g.get("reference") or {}, g.get("candidate") or {}, g.get("differences") or {}
    if not ref:
        a = g.get("agreement") or {}
        return [_e(f"agreement Dice {_f(a.get('dice'), 3)} {_ci(a.get('dice_ci'), 3)}".strip()),
                _e(f"agreement HD95 {_f(a.get('hd95_mm'), 2)} mm")]
    out = []
    for m, name, nd in SEG_METRICS[:2]:
        ci = _ci((diffs.get(m) or {}).get("ci"), nd)
        unit = " mm" if m == "hd95_mm" else ""
        out.append(_e(f"{name}: {_f(ref.get(m), nd)} → {_f(cand.get(m), nd)}{unit} {ci}".strip()))
    return out


def gate_rows(g: Mapping[str, Any] | None) -> list[list[str]]:
    """The segmentation gate's rows: per metric FP32, shipped, difference, CI, verdict; the
    agreement with FP32; the worst per-case Dice drop."""
    g = g or {}
    if not g:
        return []
    ref, cand = g.get("reference") or {}, g.get("candidate") or {}
    diffs, ni = g.get("differences") or {}, g.get("non_inferiority") or {}
    rows = []
    for m, name, nd in SEG_METRICS:
        if m not in ref:
            continue
        d = diffs.get(m) or {}
        verdict = ("non-inferior" if ni[m].get("non_inferior") else "inferior") if m in ni else "reported"
        rows.append([_e(name), _f(ref.get(m), nd), _f(cand.get(m), nd),
                     f"{d['difference']:+.{nd}f}" if isinstance(d.get("difference"), (int, float))
                     else "not computed", _ci(d.get("ci"), nd) or "no interval", verdict])
    a = g.get("agreement") or {}
    if a:
        rows.append(["Dice of shipped vs FP32 labels", "", _f(a.get("dice"), 4), "",
                     _ci(a.get("dice_ci"), 4).replace("+", ""), "reported" if ref else
                     ("pass" if g.get("passed") else "fail")])
    w = g.get("worst_drop") or {}
    if isinstance(w.get("drop"), (int, float)):
        rows.append([_e(f"worst case Dice drop (case {w.get('case')}, {w.get('label')})"),
                     _f(w.get("reference"), 3), _f(w.get("candidate"), 3), f"{-w['drop']:+.3f}",
                     "", "reported"])
    return rows


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def dice_png(g: Mapping[str, Any], title: str) -> bytes | None:
    """Per-case Dice of FP32 and the shipped model for each label (one point per case, boxes);
    None when the gate has no per-case figures against ground truth."""
    cases = [c for c in (g.get("per_case") or ()) if c.get("reference") and c.get("candidate")]
    labels: Sequence[str] = tuple(g.get("labels") or ())
    if not cases or not labels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(labels), figsize=(3.2 * len(labels) + 1, 3.4), squeeze=False)
    for ax, name in zip(axes[0], labels):
        data = [[float(c[k][name]["dice"]) for c in cases] for k in ("reference", "candidate")]
        ax.boxplot(data, showfliers=False)
        ax.set_xticks([1, 2], ["FP32", "shipped"])
        for i, ys in enumerate(data):
            ax.scatter(np.full(len(ys), i + 1) + np.linspace(-0.08, 0.08, len(ys)), ys, s=12)
        for j in range(len(cases)):
            ax.plot([1, 2], [data[0][j], data[1][j]], color="grey", lw=0.5)
        ax.set(title=f"{name} (n={len(cases)})", ylabel="Dice per case")
    fig.suptitle(title)
    fig.tight_layout()
    return _png(fig)


def overlays_png(vol: Any, fp32: np.ndarray, shipped: np.ndarray, *, names: tuple[str, ...],
                 title: str, n_slices: int = 3) -> bytes:
    """Up to ``n_slices`` slices of ``vol`` (those with the most voxels labelled by either model,
    spread out; the middle one when nothing is labelled) with the FP32 and the shipped labels
    drawn over them, one row per model; PNG bytes."""
    plt = _pyplot()
    from matplotlib.colors import ListedColormap

    arr = np.asarray(vol.array, dtype=np.float32)
    fg = np.count_nonzero((fp32 > 0) | (shipped > 0), axis=(1, 2))
    order = [int(z) for z in np.argsort(-fg, kind="stable") if fg[z] > 0] or [len(fg) // 2]
    picks: list[int] = []
    for z in order:
        if all(abs(z - p) >= max(1, len(fg) // (2 * n_slices)) for p in picks):
            picks.append(z)
        if len(picks) == n_slices:
            break
    picks.sort()
    cmap = ListedColormap(["#00000000", "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4"])
    lo, hi = np.percentile(arr, [1, 99])
    fig, axes = plt.subplots(2, len(picks), figsize=(3 * len(picks), 6.2), squeeze=False)
    for row, (name, lab) in enumerate((("FP32", fp32), ("shipped", shipped))):
        for col, z in enumerate(picks):
            ax = axes[row][col]
            ax.imshow(arr[z], cmap="gray", vmin=lo, vmax=hi)
            ax.imshow(np.ma.masked_equal(lab[z], 0), cmap=cmap, vmin=0, vmax=5, alpha=0.5,
                      interpolation="nearest")
            ax.set_title(f"{name}, slice {z}")
            ax.axis("off")
    fig.suptitle(f"{title} (colours: {', '.join(names)})")
    fig.tight_layout()
    return _png(fig)


def figures(t: Any, out: Path) -> tuple[str, dict[str, bytes]]:
    """The HTML of a segmentation target's figures and the PNGs to write beside the report
    (``{file name: bytes}``)."""
    import base64

    def img(png: bytes, alt: str) -> str:
        return f"<img alt='{_e(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"

    parts, pngs = [], {}
    png = dice_png(t.gate or {}, f"{t.target}: per-case Dice on the validation series, FP32 vs "
                   f"{t.chosen}") if t.gate else None
    if png is None:
        parts.append("<p>per-case Dice: not available (no gate against ground truth)</p>")
    else:
        pngs[f"dice-{re.sub(r'[^A-Za-z0-9._-]', '_', Path(t.target).stem)}.png"] = png
        parts.append(img(png, f"per-case Dice for {t.target}"))
    folder = Path(t.artifact).parent if t.artifact else out / "targets" / t.target
    over = folder / "overlays.png"
    if over.is_file():
        parts.append("<h4>FP32 vs shipped on the device-check series</h4>"
                     + img(over.read_bytes(), f"slice overlays for {t.target}"))
    else:
        parts.append("<p>slice overlays: not drawn (the device check did not run)</p>")
    dc = t.device_check or {}
    if "voxels_differing" in dc:
        parts.append(f"<p>device SEG vs build labels: {dc['voxels_differing']} of {dc['voxels']} "
                     f"voxels differ (series {_e(dc.get('series', ''))})</p>")
    return "".join(parts), pngs
