"""Target profiles: the shipped ones load; bad ones are refused at load with the reason; users'
folders; ``check_target``."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgemed.errors import ProfileError
from edgemed.targets import (
    BUILTIN_DIR,
    check_target,
    host_matches,
    list_targets,
    load_target,
    parse_profile,
)

SHIPPED = ("cpu-x86", "cpu-arm64", "openvino-cpu", "gpu-cuda", "mobile-android", "mobile-ios")

MINIMAL = '''
name = "mine"
default_variant = "a"
[[variants]]
name = "a"
backend = "{backend}"
passes = [{passes}]
'''


def minimal(passes: str = '{ pass = "export_onnx" }', backend: str = "onnxruntime",
            extra: str = "") -> str:
    return extra + MINIMAL.format(passes=passes, backend=backend)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profiles_load(name: str) -> None:
    p = load_target(name)
    assert p.name == name and p.default_variant in [v.name for v in p.variants]
    assert p.budget.latency_ms and p.budget.memory_mb
    assert len(p.sha256) == 64


def test_list_has_every_shipped_profile() -> None:
    assert set(SHIPPED) <= set(list_targets())


def test_cpu_x86_offers_openvino_and_onnxruntime() -> None:
    p = load_target("cpu-x86")
    backends = {v.name: v.backend for v in p.variants}
    assert backends["ov-nncf-int8"] == "openvino" and backends["ov-qdq-u8s8"] == "openvino"
    assert backends["ort-int8-u8s8"] == "onnxruntime" and backends["ort-int8-rr"] == "onnxruntime"
    assert p.backend_options(p.variant("ov-nncf-int8"))["precision"] == "f32"


def test_gpu_profile_is_tensorrt_int8_symmetric() -> None:
    p = load_target("gpu-cuda")
    v = p.variant("trt-int8")
    specs = dict(v.pass_specs())
    assert v.backend == "tensorrt" and v.gate_backend == "onnxruntime"
    assert specs["quantize_onnxruntime"]["symmetric_activations"] is True
    assert specs["quantize_onnxruntime"]["activation_type"] == "int8"
    assert p.host.needs_gpu


def test_android_picks_xnnpack_at_run_time_nnapi_opt_in() -> None:
    p = load_target("mobile-android")
    v = p.variant(p.default_variant)
    assert p.backend_options(v)["providers"] == ["xnnpack", "cpu"]  # NNAPI is deprecated
    assert v.pass_specs()[-1] == ("ort_format", {"target_platform": "arm",
                                                 "optimization_style": "fixed", "fix_batch": 1})


def test_ios_keeps_core_ml_away_from_qdq() -> None:
    p = load_target("mobile-ios")
    fp32, int8 = p.variant("coreml-fp32"), p.variant("ort-int8")
    assert p.default_variant == "coreml-fp32"
    assert p.backend_options(fp32)["providers"][0] == "coreml"
    assert "coreml" not in p.backend_options(int8)["providers"]
    assert all(dict(v.pass_specs())["ort_format"]["fix_batch"] == 1 for v in (fp32, int8))


def test_unknown_top_level_key_refused() -> None:
    with pytest.raises(ProfileError) as e:
        parse_profile(minimal(extra='colour = "blue"\n'), "t")
    assert "colour" in (e.value.found or "")


def test_unknown_variant_key_refused() -> None:
    text = minimal().replace('backend = "onnxruntime"', 'backend = "onnxruntime"\nturbo = true')
    with pytest.raises(ProfileError):
        parse_profile(text, "t")


def test_unknown_pass_refused() -> None:
    with pytest.raises(ProfileError) as e:
        parse_profile(minimal('{ pass = "export_onnx" }, { pass = "sparsify_magic" }'), "t")
    assert e.value.code == "unknown-pass"


def test_unknown_pass_setting_refused() -> None:
    with pytest.raises(ProfileError) as e:
        parse_profile(minimal('{ pass = "export_onnx" }, { pass = "quantize_openvino", '
                              'presett = "mixed" }', backend="openvino"), "t")
    assert "presett" in (e.value.found or "")


def test_format_mismatch_refused() -> None:
    # ORT format first, then a quantizer that only takes ONNX
    with pytest.raises(ProfileError) as e:
        parse_profile(minimal('{ pass = "export_onnx" }, { pass = "ort_format" }, '
                              '{ pass = "quantize_onnxruntime" }'), "t")
    assert e.value.code == "format-mismatch" and "ort" in (e.value.found or "")


def test_backend_that_cannot_run_the_format_refused() -> None:
    with pytest.raises(ProfileError) as e:
        parse_profile(minimal('{ pass = "export_onnx" }, { pass = "ort_format" }',
                              backend="openvino"), "t")
    assert e.value.code == "backend-format"
    with pytest.raises(ProfileError) as e:
        parse_profile(minimal('{ pass = "export_onnx" }, { pass = "quantize_openvino" }',
                              backend="onnxruntime"), "t")
    assert e.value.code == "backend-format" and "openvino-ir" in (e.value.found or "")


def test_unknown_backend_and_gate_backend_refused() -> None:
    with pytest.raises(ProfileError) as e:
        parse_profile(minimal(backend="coreml-direct"), "t")
    assert e.value.code == "unknown-backend"
    text = minimal('{ pass = "export_onnx" }, { pass = "quantize_onnxruntime", '
                   'activation_type = "int8", symmetric_activations = true }, '
                   '{ pass = "tensorrt_recipe" }', backend="tensorrt")
    assert parse_profile(text.replace('backend = "tensorrt"',
                                      'backend = "tensorrt"\ngate_backend = "onnxruntime"'), "t")
    with pytest.raises(ProfileError) as e:
        parse_profile(text.replace('backend = "tensorrt"',
                                   'backend = "tensorrt"\ngate_backend = "openvino"'), "t")
    assert e.value.code == "backend-format"


def test_default_variant_must_exist() -> None:
    with pytest.raises(ProfileError):
        parse_profile(minimal().replace('default_variant = "a"', 'default_variant = "zz"'), "t")


def test_user_folder_adds_and_shadows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my-board.toml").write_text(minimal().replace('"mine"', '"my-board"'))
    (tmp_path / "cpu-x86.toml").write_text(minimal().replace('"mine"', '"cpu-x86"'))
    assert load_target("my-board", [tmp_path]).name == "my-board"
    assert [v.name for v in load_target("cpu-x86", [tmp_path]).variants] == ["a", "fp32-baseline"]
    assert "my-board" in list_targets([tmp_path])
    monkeypatch.setenv("EDGEMED_TARGETS", str(tmp_path))
    assert load_target("my-board").name == "my-board"
    with pytest.raises(ProfileError) as e:
        load_target("nope")
    assert e.value.code == "unknown-target"


def test_load_by_path_and_missing_path(tmp_path: Path) -> None:
    f = tmp_path / "x.toml"
    f.write_text(minimal())
    assert load_target(f).name == "mine"
    with pytest.raises(ProfileError):
        load_target(tmp_path / "missing.toml")
    (tmp_path / "broken.toml").write_text("name = [")
    with pytest.raises(ProfileError):
        load_target(tmp_path / "broken.toml")


def test_check_gpu_target_on_this_host() -> None:
    r = check_target(load_target("gpu-cuda"))
    rows = {v["name"]: v for v in r["variants"]}
    assert set(rows) == {"trt-int8", "trt-fp16", "ort-cuda-fp16"}
    from edgemed.targets import nvidia_gpu

    if not nvidia_gpu()[0]:
        assert r["host"]["matches"] is False and "GPU" in r["host"]["why"]
        assert rows["trt-int8"]["available"] is False
        assert rows["trt-int8"]["gate_backend_available"] is True  # gated on CPU, not run
        assert rows["trt-int8"]["runnable_here"] is True
    assert all(r["build_missing"] == [] for r in rows.values())  # onnx, onnxruntime are here


def test_check_reports_missing_execution_providers() -> None:
    import onnxruntime as ort

    r = check_target(load_target("mobile-android"))
    prov = r["variants"][0]["providers"]
    have = set(ort.get_available_providers())
    assert set(prov["available"]) <= have and "CPUExecutionProvider" in prov["available"]
    assert all(p not in have for p in prov["missing"])


def test_host_match_rules() -> None:
    import platform

    ok, why = host_matches(load_target("cpu-x86"))
    assert ok == (platform.machine() in ("x86_64", "AMD64")), why
    ios = host_matches(load_target("mobile-ios"))[0]
    assert ios == (platform.machine() == "arm64")


def test_builtin_dir_is_the_repo_targets_folder() -> None:
    assert (BUILTIN_DIR / "cpu-x86.toml").is_file()


# -- ISA rules and the FP32 baseline -------------------------------------------------------------
def test_variant_cpu_rules() -> None:
    p = load_target("cpu-x86")
    vnni, avx2 = frozenset({"avx2", "avx512_vnni"}), frozenset({"avx2", "fma"})
    u8s8, rr, of = p.variant("ort-int8-u8s8"), p.variant("ort-int8-rr"), p.variant("ov-nncf-int8-of")
    assert u8s8.eligible(vnni)[0] and not u8s8.eligible(avx2)[0]
    assert "avx512_vnni" in u8s8.eligible(avx2)[1]
    assert of.eligible(avx2)[0] and not of.eligible(vnni)[0]
    assert rr.eligible(vnni)[0] and rr.eligible(avx2)[0]
    # device CPU unknown (the host cannot stand in): `when` variants are left out
    assert not u8s8.eligible(None)[0] and rr.eligible(None)[0] and of.eligible(None)[0]
    assert p.default_variant == "ort-int8-rr" and p.variant(p.default_variant).when is None


@pytest.mark.parametrize("name", ("cpu-x86", "cpu-arm64", "openvino-cpu", "mobile-android"))
def test_cpu_and_mobile_profiles_have_an_fp32_baseline(name: str) -> None:
    p = load_target(name)
    assert p.baseline is not None and p.baseline.when is None
    assert not any(s[0].startswith("quantize") for s in p.baseline.pass_specs())


def test_cpu_profile_without_baseline_gets_onnxruntime_fp32() -> None:
    p = parse_profile(minimal(), "t")
    assert [v.name for v in p.variants] == ["a", "fp32-baseline"]
    assert p.baseline.backend == "onnxruntime" and p.baseline.pass_specs() == [("export_onnx", {})]
    gpu = parse_profile(minimal(extra='kind = "gpu"\n'), "t")
    assert gpu.baseline is None


def test_default_variant_must_fit_every_device() -> None:
    text = minimal().replace('backend = "onnxruntime"',
                             'backend = "onnxruntime"\nwhen = { cpu_flags_any = ["avx512_vnni"] }')
    with pytest.raises(ProfileError, match="when"):
        parse_profile(text, "t")
    two = minimal(extra="") + '[[variants]]\nname = "b"\nbackend = "onnxruntime"\nbaseline = true\n' \
        'passes = [{ pass = "export_onnx" }]\n[[variants]]\nname = "c"\nbackend = "onnxruntime"\n' \
        'baseline = true\npasses = [{ pass = "export_onnx" }]\n'
    with pytest.raises(ProfileError, match="baseline"):
        parse_profile(two, "t")
