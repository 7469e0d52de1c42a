"""subpixel_deconv: stride-2 ConvTranspose -> Conv + pixel shuffle (ONNX -> ONNX, same function).

Why: OpenVINO's CPU plugin runs a transposed convolution in INT8 only on AVX-512 CPUs or when
``IC^2 x output voxels <= 2^26``; MONAI's 3D UNet up-sampling layers at a 64^3 ROI are far above
that, so after NNCF they stay FP32 and took ~40% of the INT8 model's time on the 2-core AVX2
machine (profiled with PERF_COUNT: Deconvolution brgconv_avx2_f32 144 ms of 375 ms). A
``ConvTranspose(kernel 3, stride 2, pads 1, output_padding 1)`` (MONAI's ``Convolution(
is_transposed=True)``) is exactly a ``Conv(kernel 2, stride 1, pads 0 before / 1 after)`` with
``2^d x C_out`` channels, one per output parity, followed by a pixel shuffle
(Reshape -> Transpose -> Reshape; shapes from ``Shape``, so dynamic spatial dims stay dynamic).
Per axis, output ``2m`` is ``w[1] x[m]`` and output ``2m + 1`` is ``w[2] x[m] + w[0] x[m + 1]``.
The Conv is an ordinary convolution: NNCF and onnxruntime quantize it and it runs on the INT8
kernels. Other ConvTransposes (groups, dilations, other kernels/strides) are left as they are.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from edgemed_runtime import Artifact
from edgemed_runtime.sdk import atomic_write_bytes

from ..errors import ExportError
from .base import BuildContext, Pass, PassConfig, PassOutput

#: per output parity: (kernel tap at input offset 0, kernel tap at input offset 1; -1 = zero)
_TAPS = ((1, -1), (2, 0))


class SubpixelDeconvConfig(PassConfig):
    pass


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _matches(node: Any, weight: np.ndarray | None) -> bool:
    """A ConvTranspose with kernel 3, stride 2, pads 1, output_padding 1 on every spatial axis,
    group 1, dilation 1, constant weights, no explicit output_shape / auto_pad."""
    if node.op_type != "ConvTranspose" or weight is None or weight.ndim < 3:
        return False
    a, d = _attrs(node), weight.ndim - 2
    return (tuple(weight.shape[2:]) == (3,) * d and list(a.get("strides", [])) == [2] * d
            and list(a.get("pads", [])) == [1] * (2 * d)
            and list(a.get("output_padding", [])) == [1] * d
            and int(a.get("group", 1)) == 1 and list(a.get("dilations", [1] * d)) == [1] * d
            and "output_shape" not in a
            and a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET"))


def subpixel_weights(weight: np.ndarray) -> np.ndarray:
    """ConvTranspose weights ``(C_in, C_out, 3, ..., 3)`` -> Conv weights
    ``(2^d x C_out, C_in, 2, ..., 2)``, output channels ordered (parity_0, ..., parity_d-1, c)."""
    c_in, c_out, d = weight.shape[0], weight.shape[1], weight.ndim - 2
    out = np.zeros((2,) * d + (c_out, c_in) + (2,) * d, dtype=weight.dtype)
    w = np.transpose(weight, (1, 0, *range(2, 2 + d)))  # (C_out, C_in, k...)
    for parity in itertools.product((0, 1), repeat=d):
        for offset in itertools.product((0, 1), repeat=d):
            taps = [_TAPS[p][o] for p, o in zip(parity, offset)]
            if min(taps) >= 0:
                out[(*parity, slice(None), slice(None), *offset)] = w[(slice(None), slice(None),
                                                                      *taps)]
    return out.reshape((2 ** d * c_out, c_in) + (2,) * d)


def _shuffle_nodes(node: Any, conv_out: str, d: int, c_out: int) -> list[Any]:
    """Reshape (N, 2^d C, *S) -> (N, 2, .., 2, C, *S) -> transpose to (N, C, S0, 2, S1, 2, ..)
    -> reshape (N, C, 2 S0, 2 S1, ..). Shapes are computed from ``Shape`` (dynamic dims)."""
    from onnx import TensorProto, helper

    p = f"{node.name or node.output[0]}/subpixel"
    i64 = TensorProto.INT64

    def const(name: str, values: list[int]) -> Any:
        return helper.make_node("Constant", [], [f"{p}/{name}"], name=f"{p}/{name}",
                                value=helper.make_tensor(f"{p}/{name}_v", i64, [len(values)],
                                                         values))

    perm = [0, 1 + d]
    for k in range(d):
        perm += [2 + d + k, 1 + k]
    return [
        helper.make_node("Shape", [conv_out], [f"{p}/shape"], name=f"{p}/shape"),
        const("n_idx", [0]), const("s_idx", list(range(2, 2 + d))),
        const("mid", [2] * d + [c_out]), const("c", [c_out]), const("two", [2]),
        helper.make_node("Gather", [f"{p}/shape", f"{p}/n_idx"], [f"{p}/n"], name=f"{p}/n", axis=0),
        helper.make_node("Gather", [f"{p}/shape", f"{p}/s_idx"], [f"{p}/s"], name=f"{p}/s", axis=0),
        helper.make_node("Mul", [f"{p}/s", f"{p}/two"], [f"{p}/s2"], name=f"{p}/s2"),
        helper.make_node("Concat", [f"{p}/n", f"{p}/mid", f"{p}/s"], [f"{p}/shape8"],
                         name=f"{p}/shape8", axis=0),
        helper.make_node("Concat", [f"{p}/n", f"{p}/c", f"{p}/s2"], [f"{p}/shape_out"],
                         name=f"{p}/shape_out", axis=0),
        helper.make_node("Reshape", [conv_out, f"{p}/shape8"], [f"{p}/split"], name=f"{p}/split"),
        helper.make_node("Transpose", [f"{p}/split"], [f"{p}/moved"], name=f"{p}/moved", perm=perm),
        helper.make_node("Reshape", [f"{p}/moved", f"{p}/shape_out"], [node.output[0]],
                         name=f"{p}/merge"),
    ]


def rewrite_subpixel(model: Any) -> int:
    """Replace every matching ConvTranspose of ``model`` (an ``onnx.ModelProto``, in place) by a
    Conv + pixel shuffle; return how many were replaced."""
    from onnx import helper, numpy_helper

    init = {t.name: t for t in model.graph.initializer}
    used = [i for n in model.graph.node for i in n.input]
    new_nodes, new_inits, done = [], [], 0
    for node in model.graph.node:
        w_t = init.get(node.input[1]) if len(node.input) > 1 else None
        weight = numpy_helper.to_array(w_t) if w_t is not None else None
        if not _matches(node, weight):
            new_nodes.append(node)
            continue
        assert weight is not None
        d, c_out = weight.ndim - 2, int(weight.shape[1])
        base = node.name or node.output[0]
        w_name = f"{base}/subpixel/W"
        new_inits.append(numpy_helper.from_array(subpixel_weights(weight), w_name))
        inputs = [node.input[0], w_name]
        if len(node.input) > 2 and node.input[2]:
            bias = numpy_helper.to_array(init[node.input[2]])
            new_inits.append(numpy_helper.from_array(np.tile(bias, 2 ** d), f"{base}/subpixel/B"))
            inputs.append(f"{base}/subpixel/B")
        conv_out = f"{base}/subpixel/conv"
        new_nodes.append(helper.make_node("Conv", inputs, [conv_out], name=f"{base}/subpixel/Conv",
                                          kernel_shape=[2] * d, strides=[1] * d,
                                          pads=[0] * d + [1] * d))
        new_nodes.extend(_shuffle_nodes(node, conv_out, d, c_out))
        done += 1
    if done:
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
        model.graph.initializer.extend(new_inits)
        still = {i for n in model.graph.node for i in n.input}
        keep = [t for t in model.graph.initializer if t.name in still or t.name not in used]
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
    return done


class SubpixelDeconv(Pass[SubpixelDeconvConfig]):
    """ONNX -> ONNX: stride-2 kernel-3 ConvTranspose as Conv + pixel shuffle (same outputs)."""

    name = "subpixel_deconv"
    Config = SubpixelDeconvConfig
    accepts = ("onnx",)
    produces = "onnx"
    requires = ("onnx",)
    modules = ("onnx",)

    def tool_versions(self) -> dict[str, str]:
        import onnx

        return {"onnx": onnx.__version__}

    def run(self, artifact: Artifact, workdir: Path, ctx: BuildContext) -> PassOutput:
        """Rewrite ``artifact``'s ONNX; an unchanged copy when nothing matches.

        Raises:
            ExportError (``convert-failed``): the rewritten model fails the ONNX checker.
        """
        import onnx

        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            model = onnx.load(str(artifact.model_path))
            n = rewrite_subpixel(model)
            onnx.checker.check_model(model)
            data = model.SerializeToString()
        except Exception as exc:
            raise ExportError("the sub-pixel ConvTranspose rewrite failed",
                              found=f"{type(exc).__name__}: {exc}"[:500],
                              fix="drop the subpixel_deconv pass from the variant",
                              code="convert-failed") from None
        out = workdir / "model.subpixel.onnx"
        atomic_write_bytes(out, data)
        return artifact.evolve(path=workdir, model_file=out.name, format="onnx"), {
            "convtranspose_rewritten": n, "bytes": len(data)}
