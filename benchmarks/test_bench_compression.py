"""Compression bars of issue 6, measured on the synthetic task in one run.

    pytest benchmarks/test_bench_compression.py --benchmark-enable -m "slow or not slow" -s

1. MONAI ResNet-18 (1x64x64), 40% of channels removed (torch-pruning, L1) + recovery fine-tuning
   with distillation, then INT8 (onnxruntime, U8S8): median latency <= 0.7x of the unpruned INT8
   model (interleaved timing, same process), accuracy within 1 point of FP32.
2. Unstructured 50% (global magnitude) + 2 recovery epochs + k-means clustering (16 values a
   layer) + INT8: the compressed (zlib -9) payload <= 0.6x of the plain INT8 payload compressed
   the same way (accuracy recorded beside it).
"""

from __future__ import annotations

import copy
import json
import os
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow
SIZE = int(os.environ.get("EDGEMED_BENCH_SIZE", "64"))
EPOCHS = int(os.environ.get("EDGEMED_BENCH_EPOCHS", "8"))
RESULTS: dict = {}


def _int8(model, ctx, work: Path, io_shape):
    from edgemed_runtime.artifact import Artifact
    from edgemed_runtime.iospec import IOSpec

    from edgemed.passes.base import get_pass_class

    art = Artifact(path=work, format="torch", model_file="", io=IOSpec(input_shape=io_shape),
                   payload=model)
    e = get_pass_class("export_onnx")({})(art, work / "export", ctx)
    return get_pass_class("quantize_onnxruntime")({"activation_type": "uint8"})(
        e, work / "int8", ctx)


def _acc(path, x, y):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    n = s.get_inputs()[0].name
    lg = np.concatenate([s.run(None, {n: x[i:i + 32]})[0] for i in range(0, len(x), 32)])
    return float((lg.argmax(1) == y).mean())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import torch
    from monai.networks.nets import resnet18

    from edgemed.recovery import FinetuneConfig, finetune
    from edgemed.passes.base import BuildContext
    from edgemed.passes.prune_structured import StructuredConfig, prune_channels
    from edgemed.search.demo import demo_arrays
    from edgemed._torch import predict_logits

    torch.set_num_threads(2)
    work = tmp_path_factory.mktemp("bench")
    t0 = time.perf_counter()
    train, val, _ = demo_arrays(work / "dicom", n_patients=32, size=SIZE, seed=0)
    torch.manual_seed(0)
    fp32 = resnet18(spatial_dims=2, n_input_channels=1, num_classes=2)
    # FP32 training keeps the best validation epoch; BatchNorm statistics are recalibrated
    # after every epoch (without that, eval-mode ResNet-18 predicted one class here)
    finetune(fp32, train, val, FinetuneConfig(epochs=EPOCHS, full_lr=1e-3, distill=0.0,
                                              patience=EPOCHS, keep_sparsity=False))
    fp32_acc = float((predict_logits(fp32, val[0]).argmax(1) == val[1]).mean())
    t_train = time.perf_counter() - t0
    ctx = BuildContext(calibration=train[0][:64], seed=0)
    shape = (1, 1, SIZE, SIZE)
    base = _int8(fp32, ctx, work / "base", shape)
    pruned = copy.deepcopy(fp32)
    t1 = time.perf_counter()
    rep = prune_channels(pruned, torch.zeros(shape), StructuredConfig(ratio=0.4))
    t_prune = time.perf_counter() - t1
    ft = finetune(pruned, train, val, FinetuneConfig(head_epochs=0, epochs=6, full_lr=1e-3,
                                                      patience=6, distill=0.5), teacher=fp32)
    pr8 = _int8(pruned, ctx, work / "pruned", shape)
    sparse = copy.deepcopy(fp32)
    from edgemed.passes.cluster import ClusterConfig, cluster_model
    from edgemed.passes.prune_unstructured import magnitude_prune

    from edgemed._torch import recalibrate_bn

    magnitude_prune(sparse, 0.5, scope="global")
    ft_sparse = finetune(sparse, train, val, FinetuneConfig(epochs=2, full_lr=3e-4, patience=2,
                                                            distill=0.5), teacher=fp32)
    clus = cluster_model(sparse, ClusterConfig(clusters=16))
    recalibrate_bn(sparse, train[0])  # BatchNorm is not clustered; weights stay 16-valued
    sp8 = _int8(sparse, ctx, work / "sparse", shape)
    RESULTS.update({
        "input": list(shape), "n_train": int(len(train[1])), "n_val": int(len(val[1])), "train_seconds": round(t_train, 1), "fp32_val_accuracy": fp32_acc,
        "prune_seconds": round(t_prune, 3), "macs": [rep["macs_before"], rep["macs_after"]],
        "params": [rep["params_before"], rep["params_after"]], "finetune": ft.to_dict(),
        "int8_val_accuracy": _acc(base.model_path, *val),
        "pruned_int8_val_accuracy": _acc(pr8.model_path, *val),
        "sparse_clustered_int8_val_accuracy": _acc(sp8.model_path, *val),
        "cluster_layers_k": sorted({v["k"] for v in clus["layers"].values()}),
        "sparse_finetune_val": [h["val_accuracy"] for h in ft_sparse.history],
        "sparse_fp32_val_accuracy": float((predict_logits(sparse, val[0]).argmax(1)
                                           == val[1]).mean()),
    })
    return {"base": base.model_path, "pruned": pr8.model_path, "sparse": sp8.model_path,
            "x1": val[0][:1], "work": work}


def _session(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def test_structured_pruned_int8_latency_and_accuracy(setup, benchmark):
    from edgemed.bench.timing import interleaved_latency

    sb, sp = _session(setup["base"]), _session(setup["pruned"])
    x = setup["x1"]
    stats = interleaved_latency({"int8": lambda: sb.run(None, {sb.get_inputs()[0].name: x}),
                                 "pruned_int8": lambda: sp.run(None, {sp.get_inputs()[0].name: x})},
                                runs=200, warmup=10)
    ratio = stats["pruned_int8"].p50 / stats["int8"].p50
    benchmark.pedantic(lambda: sp.run(None, {sp.get_inputs()[0].name: x}), rounds=100,
                       warmup_rounds=5)
    RESULTS.update({"int8_p50_ms": stats["int8"].p50, "pruned_int8_p50_ms": stats["pruned_int8"].p50,
                    "latency_ratio": ratio})
    print(json.dumps(RESULTS, indent=1, default=str))
    assert ratio <= 0.7
    assert RESULTS["pruned_int8_val_accuracy"] >= RESULTS["fp32_val_accuracy"] - 0.01


def test_sparse_clustered_payload(setup, benchmark):
    base = setup["base"].read_bytes()
    sparse = setup["sparse"].read_bytes()
    zb = benchmark.pedantic(lambda: len(zlib.compress(base, 9)), rounds=1, iterations=1)
    zs = len(zlib.compress(sparse, 9))
    RESULTS.update({"int8_bytes": len(base), "int8_zlib_bytes": zb,
                    "sparse_clustered_int8_bytes": len(sparse),
                    "sparse_clustered_int8_zlib_bytes": zs, "payload_ratio": zs / zb})
    print(json.dumps(RESULTS, indent=1, default=str))
    assert zs <= 0.6 * zb
