"""Build progress: structured events (still strings), a default stderr display, silence on
request, ETA from finished variants, and NNCF's rich progress bars muted."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgemed.progress import ProgressEvent, Reporter, display, quiet_nncf, reporter


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_events_carry_variant_index_total_and_eta() -> None:
    clock, got = FakeClock(), []
    say = Reporter(got.append, clock=clock)
    say("loading calibration data")
    say.plan(["a", "b", "c"])
    clock.t += 1
    say("a: export_onnx")
    clock.t += 9
    say("a: accuracy gate")
    clock.t += 2
    say("b: quantize_ort")  # one variant done in 11 s: two left -> ETA 22 s
    clock.t += 4
    say("b: accuracy gate")
    kinds = [e.kind for e in got]
    assert kinds == ["step", "plan", "variant", "variant", "variant", "variant"]
    a0, b0, b1 = got[2], got[4], got[5]
    assert (a0.variant, a0.index, a0.total, a0.eta_s) == ("a", 1, 3, None)
    assert (b0.variant, b0.index, b0.eta_s) == ("b", 2, pytest.approx(22.0))
    assert b1.eta_s == pytest.approx(18.0) and b1.elapsed_s == pytest.approx(16.0)
    assert isinstance(b1, str) and b1 == "b: accuracy gate" and b1.message == b1
    assert b1.to_dict()["index"] == 2 and got[1].total == 3


def test_string_callbacks_keep_working_and_false_is_silent(capsys) -> None:
    seen: list[str] = []
    say = reporter(seen.append)
    say("x: step")
    assert seen == ["x: step"] and all(isinstance(s, str) for s in seen)
    for quiet in (reporter(False), reporter(None, quiet=True)):
        quiet("nothing to see")
    assert capsys.readouterr().err == ""


def test_default_display_writes_steps_to_stderr(capsys) -> None:
    from rich.console import Console

    console = Console(stderr=True, width=200, force_terminal=False)
    say = Reporter(lambda e: display(e, console=console))
    say.plan(["ort-int8"])
    say("ort-int8: accuracy gate")
    err = capsys.readouterr().err
    assert "1 candidate variant(s): ort-int8" in err and "variant 1/1 ort-int8: accuracy gate" in err
    assert "[0:00]" in err


def test_bad_progress_value_is_a_typed_error() -> None:
    from edgemed.errors import InvalidInputError

    with pytest.raises(InvalidInputError) as e:
        reporter(42)
    assert e.value.code == "bad-option"


def test_nncf_progress_bars_are_muted(capsys) -> None:
    from nncf.common.logging.track_progress import track

    list(track(range(3), description="Statistics collection"))
    assert "Statistics collection" in capsys.readouterr().out  # what a user saw before
    with quiet_nncf():
        list(track(range(3), description="Statistics collection"))
    assert "Statistics collection" not in capsys.readouterr().out


def test_build_reports_structured_events(tmp_path: Path, synthetic_dir: Path, spec16) -> None:
    import torch

    import edgemed
    from edgemed.pipeline import BuildOptions
    from tests.helpers.tiny_models import make_net

    events: list[ProgressEvent] = []
    edgemed.build(make_net(), torch.zeros(1, 1, 16, 16), calibration=synthetic_dir,
                  target="cpu-x86", out=tmp_path / "art", preprocess=spec16,
                  options=BuildOptions(select="ort-int8-rr"), progress=events.append)
    assert all(isinstance(e, ProgressEvent) for e in events)
    plan = [e for e in events if e.kind == "plan"]
    assert len(plan) == 1 and plan[0].total == 1
    var = [e for e in events if e.kind == "variant"]
    assert var and all(e.variant == "ort-int8-rr" and e.index == 1 and e.total == 1 for e in var)
    assert [e.elapsed_s for e in events] == sorted(e.elapsed_s for e in events)
