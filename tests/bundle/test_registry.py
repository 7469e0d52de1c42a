"""The SQLite registry: add, list, show (lineage), diff, promote, rollback."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from edgemed.bundle import Registry, diff_manifests
from edgemed.errors import BundleError, InvalidInputError

from .conftest import Keys, make_artifact


@pytest.fixture()
def three(tmp_path: Path, make_bundle: Callable[..., Path]) -> list[Path]:
    a1 = make_artifact(tmp_path / "a1", seed=1)
    a2 = make_artifact(tmp_path / "a2", seed=2, metrics={"gate": {"auc": 0.93, "passed": True}},
                       provenance=(
                           {"pass": "source", "sha256": "1" * 64, "model": "tiny"},
                           {"pass": "calibration_set", "count": 32, "seed": 0, "sha256": "3" * 64},
                           {"pass": "quantize_ort", "config": {"method": "entropy", "per_channel": True},
                            "tools": {"onnxruntime": "1.x"}, "seconds": 0.2},
                           {"pass": "prune", "config": {"ratio": 0.3}},
                       ))
    return [make_bundle(tmp_path / "b1", 1, art=a1), make_bundle(tmp_path / "b2", 2, art=a2),
            make_bundle(tmp_path / "b3.edgemed", 3, art=a2)]


def test_add_list_show_lineage(three: list[Path], keys: Keys, tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg.db")
    entries = [reg.add(p, trust=keys.publisher.public_path) for p in three]
    assert [e.release for e in reg.list("tiny")] == [1, 2, 3]
    assert entries[0].parent_id is None
    assert entries[2].parent_id == entries[1].bundle_id
    show = reg.show("tiny@3")
    assert [a["release"] for a in show["lineage"]] == [2, 1]
    assert show["manifest"]["release"] == 3 and show["verified"] is True
    assert reg.get(entries[1].bundle_id[:8]).release == 2
    assert reg.add(three[0]).bundle_id == entries[0].bundle_id  # idempotent


def test_release_exists_and_unknown_refs(three: list[Path], tmp_path: Path,
                                         make_bundle: Callable[..., Path]) -> None:
    reg = Registry(tmp_path / "reg.db")
    reg.add(three[0])
    with pytest.raises(BundleError) as ei:
        reg.add(make_bundle(tmp_path / "dup", 1))
    assert ei.value.code == "release-exists"
    for ref in ("nope", "tiny@9", "tiny:production", "abcdef"):
        with pytest.raises(InvalidInputError) as ei2:
            reg.get(ref)
        assert ei2.value.code == "unknown-bundle"


def test_diff_passes_configs_metrics_hashes(three: list[Path], tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg.db")
    for p in three:
        reg.add(p)
    d = reg.diff("tiny@1", "tiny@2")
    assert d["fields"]["release"] == [1, 2]
    assert d["passes"]["added"] == ["prune"] and d["passes"]["removed"] == []
    assert d["configs"]["quantize_ort"]["config.method"] == ["minmax", "entropy"]
    assert d["configs"]["calibration_set"]["count"] == [16, 32]
    assert d["metrics"]["gate.auc"]["delta"] == pytest.approx(0.02)
    assert d["hashes"]["calibration_set.sha256"] == ["2" * 64, "3" * 64]
    assert "file:payload/model.onnx.enc" in d["hashes"]
    assert "source.sha256" not in d["hashes"]  # same source model
    same = diff_manifests(reg.manifest("tiny@2")[0], reg.manifest("tiny@2")[0])
    assert not same["fields"] and not same["configs"] and not same["metrics"] and not same["hashes"]


def test_promote_and_rollback(three: list[Path], tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg.db")
    for p in three:
        reg.add(p)
    with pytest.raises(InvalidInputError) as ei:
        reg.rollback("tiny")
    assert ei.value.code == "nothing-to-roll-back"
    reg.promote("tiny@1")
    reg.promote("tiny@2")
    reg.promote("tiny@3", note="new calibration")
    assert reg.get("tiny:production").release == 3
    assert reg.rollback("tiny").release == 2
    assert reg.get("tiny:production").release == 2
    assert reg.rollback("tiny").release == 1
    with pytest.raises(InvalidInputError):
        reg.rollback("tiny")
    assert reg.get("tiny@1").channels == ("production",)
    events = reg.show("tiny@3")["events"]
    assert [e["action"] for e in events] == ["add", "promote"] and events[1]["note"] == "new calibration"
    reg.promote("tiny@3", "staging")
    assert reg.get("tiny:staging").release == 3
