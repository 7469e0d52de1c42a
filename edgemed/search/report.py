"""Pareto front of a finished study: a table (CSV + Markdown) and a PNG plot.

Two criteria: the objective (latency in ms or compressed size in bytes, lower is better) and the
validation accuracy (higher is better). Only trials that passed the accuracy gate can be on the
front; failed ones are drawn in grey.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

from edgemed_runtime.sdk import atomic_write_bytes


def pareto_front(rows: Sequence[dict[str, Any]], cost: str = "objective",
                 gain: str = "accuracy") -> list[dict[str, Any]]:
    """Rows not dominated by another (lower ``cost`` and higher ``gain``), sorted by cost."""
    front = []
    for r in rows:
        dominated = any(
            (o[cost] <= r[cost] and o[gain] >= r[gain]) and (o[cost] < r[cost] or o[gain] > r[gain])
            for o in rows)
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: (r[cost], -r[gain]))


TABLE_COLUMNS = ("trial", "objective", "accuracy", "auc", "latency_ms", "size_zlib_bytes",
                 "gate_passed", "structured_ratio", "sparsity", "clusters", "precision",
                 "calibration", "finetune_epochs", "finetune_lr", "importance",
                 "gradcam_correlation", "gradcam_flagged")


def write_table(rows: Sequence[dict[str, Any]], csv_path: Path, md_path: Path | None = None, *,
                extra: Sequence[str] = ()) -> None:
    """Write rows as CSV (and a Markdown table) atomically; ``extra`` columns that some row has
    (where a trial was built and timed on Ray) follow the standard ones in the CSV."""
    buf = io.StringIO()
    cols = [*TABLE_COLUMNS, *(k for k in extra if any(k in r for r in rows))]
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in cols})
    atomic_write_bytes(csv_path, buf.getvalue().encode())
    if md_path is not None:
        lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
        for r in rows:
            cells = []
            for k in TABLE_COLUMNS:
                v = r.get(k, "")
                cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
            lines.append("| " + " | ".join(cells) + " |")
        atomic_write_bytes(md_path, ("\n".join(lines) + "\n").encode())


def plot_front(rows: Sequence[dict[str, Any]], front: Sequence[dict[str, Any]], path: Path, *,
               objective: str, references: dict[str, tuple[float, float]] | None = None,
               title: str = "") -> None:
    """Scatter of every trial (objective vs accuracy) with the Pareto front; PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label = "median latency (ms)" if objective == "latency" else "compressed size (bytes)"
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ok = [r for r in rows if r.get("gate_passed")]
    bad = [r for r in rows if not r.get("gate_passed")]
    if bad:
        ax.scatter([r["objective"] for r in bad], [r["accuracy"] for r in bad], c="lightgrey",
                   edgecolors="grey", label="failed the gate", zorder=2)
    if ok:
        ax.scatter([r["objective"] for r in ok], [r["accuracy"] for r in ok], c="tab:blue",
                   label="passed the gate", zorder=3)
    if front:
        ax.plot([r["objective"] for r in front], [r["accuracy"] for r in front], "-o",
                c="tab:red", label="Pareto front", zorder=4)
        for r in front:
            ax.annotate(f"#{r['trial']}", (r["objective"], r["accuracy"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    for name, (x, y) in (references or {}).items():
        ax.scatter([x], [y], marker="*", s=140, zorder=5, label=name)
    ax.set_xlabel(label)
    ax.set_ylabel("validation accuracy")
    ax.set_title(title or "compression search")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
