"""edgemed past one machine, on Ray (the ``edgemed[ray]`` extra).

* ``cluster``: connect to a cluster (``--ray ADDRESS|auto``) and find the nodes that carry a
  target's resource (``target:<name>``, declared by ``edgemed-run agent``).
* ``scheduling``: a search trial's latency measured on a node with its target's resource.
* ``fleet``: one bundle benchmarked on every device of a target, one row per device + spread.
* ``data_eval``: the gate's logits over a large DICOM dataset through Ray Data (a session per
  actor, decoding in the workers), metrics identical to the single-process run.
* ``folder_eval``: ``edgemed evaluate`` (metrics with CIs on a labelled folder, the gate).
* ``build_eval``: ``edgemed build --ray`` (the build's gate evaluator on Ray Data).
"""

from __future__ import annotations

from .build_eval import RayClassificationEvaluator
from .cluster import connect, nodes_with, require_target
from .data_eval import evaluate_files, gate_on_ray, logits_local, logits_on_ray
from .fleet import FleetResult, fleet_bench
from .folder_eval import Evaluation, evaluate_folder
from .scheduling import remote_latency

__all__ = ["Evaluation", "FleetResult", "RayClassificationEvaluator", "connect",
           "evaluate_files", "evaluate_folder", "fleet_bench", "gate_on_ray", "logits_local",
           "logits_on_ray", "nodes_with", "remote_latency", "require_target"]
