"""``tasks`` on a variant: the sub-pixel INT8 variants are candidates only for segmentation
builds on CPUs without VNNI (the accuracy-control ones: tests/compression/test_seg_accuracy_control.py);
a baseline or default variant cannot be task-restricted."""

from __future__ import annotations

import pytest

from edgemed.errors import ProfileError
from edgemed.targets import load_target, parse_profile

AVX2 = frozenset({"avx2", "fma"})
VNNI = frozenset({"avx2", "avx512f", "avx512_vnni"})


@pytest.mark.parametrize("target", ["cpu-x86", "openvino-cpu"])
def test_subpixel_variant_only_for_segmentation_without_vnni(target: str) -> None:
    v = load_target(target).variant("ov-nncf-int8-of-sp")
    assert v.tasks == ("segmentation",)
    assert v.eligible(AVX2, task="segmentation") == (True, "")
    ok, why = v.eligible(AVX2)  # the default task: classification
    assert not ok and "segmentation" in why
    assert not v.eligible(AVX2, task="multilabel")[0]
    assert not v.eligible(VNNI, task="segmentation")[0]
    assert [p["pass"] for p in v.passes] == ["export_onnx", "subpixel_deconv", "quantize_openvino"]


SEGMENTATION_ONLY = {"ov-nncf-int8-of-sp", "ov-nncf-int8-ac", "ov-nncf-int8-ac-of-sp"}


def test_other_variants_serve_every_task() -> None:
    for v in load_target("cpu-x86").variants:
        if v.name not in SEGMENTATION_ONLY:
            assert v.tasks is None
            assert v.eligible(AVX2, task="segmentation") == v.eligible(AVX2)


PROFILE = '''
name = "mine"
default_variant = "{default}"
[[variants]]
name = "a"
backend = "onnxruntime"
tasks = ["segmentation"]
passes = [{{ pass = "export_onnx" }}]
[[variants]]
name = "fp32"
backend = "onnxruntime"
baseline = true
{baseline_tasks}
passes = [{{ pass = "export_onnx" }}]
'''


@pytest.mark.parametrize("default, baseline_tasks", [
    ("a", ""), ("fp32", 'tasks = ["segmentation"]')])
def test_default_or_baseline_with_tasks_is_refused(default: str, baseline_tasks: str) -> None:
    with pytest.raises(ProfileError) as err:
        parse_profile(PROFILE.format(default=default, baseline_tasks=baseline_tasks), "mine.toml")
    assert "every task" in str(err.value.found) + err.value.message


def test_task_restricted_candidate_is_accepted() -> None:
    p = parse_profile(PROFILE.format(default="fp32", baseline_tasks=""), "mine.toml")
    assert p.variant("a").tasks == ("segmentation",)
