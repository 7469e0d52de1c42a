"""Segmentation: per-case metrics (Dice, HD95 in mm, surface Dice) and the segmentation gate.

``case_metrics`` computes one case's figures per label with MONAI's metrics (version recorded);
``run_segmentation_gate`` compares a candidate's label volumes with the FP32 reference's, against
ground truth (paired bootstrap non-inferiority on mean Dice) or, without it, by agreement.
"""

from __future__ import annotations

from .gate import SegGateConfig, SegGateResult, run_segmentation_gate, seg_gate_summary
from .metrics import EMPTY_RULES, METRICS, case_metrics, metric_settings

__all__ = ["EMPTY_RULES", "METRICS", "SegGateConfig", "SegGateResult", "case_metrics",
           "metric_settings", "run_segmentation_gate", "seg_gate_summary"]
