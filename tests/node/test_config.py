"""node.toml is read strictly: every bad key or value is a typed error naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgemed_runtime.errors import InvalidInputError
from edgemed_runtime.node import load_config
from tests.node.kit import Model, node_toml


def _cfg(tmp_path: Path, model: Model, **kw: object) -> Path:
    return node_toml(tmp_path, model, port=11112, dest_port=4242, **kw)  # type: ignore[arg-type]


def test_good_config_resolves_paths(tmp_path: Path, model: Model) -> None:
    cfg = load_config(_cfg(tmp_path, model, selection='modality = ["CT"]\nmin_slices = 2'))
    assert cfg.scp.ae_title == "EDGEMED" and cfg.scp.allowed_calling_aes[0] == "ORTHANC"
    assert cfg.spool.dir == tmp_path / "spool" and cfg.destination.dead_letter == tmp_path / "dead"
    assert cfg.selection.modality == ("CT",) and cfg.selection.min_slices == 2
    assert cfg.group_timeout_s == 1.0 and cfg.workers == 2


@pytest.mark.parametrize("old, new, key", [
    ("port = 11112", "port = 70000", "node.port"),
    ("port = 11112", 'port = "11112"', "node.port"),
    ('ae_title = "EDGEMED"', 'ae_title = "MUCH-TOO-LONG-AE-TITLE"', "node.ae_title"),
    ("retries = 2", "retries = -1", "destination.retries"),
    ("timeout_s = 1.0", "timeout_s = 0", "grouping.timeout_s"),
    ("count = 2", "count = true", "workers.count"),
    ("max_bytes = 268435456", "max_bytes = 10", "spool.max_bytes"),
])
def test_bad_values_name_the_key(tmp_path: Path, model: Model, old: str, new: str,
                                 key: str) -> None:
    p = _cfg(tmp_path, model)
    text = p.read_text()
    assert old in text
    p.write_text(text.replace(old, new, 1))
    with pytest.raises(InvalidInputError) as e:
        load_config(p)
    assert e.value.code == "bad-node-config" and key in e.value.message


@pytest.mark.parametrize("extra, found", [
    ("colour = 1", "colour"), ("[telemetry]\nurl = 'x'", "telemetry"),
])
def test_unknown_keys_are_refused(tmp_path: Path, model: Model, extra: str, found: str) -> None:
    with pytest.raises(InvalidInputError) as e:
        load_config(_cfg(tmp_path, model, extra=extra))
    assert e.value.code == "bad-node-config" and found in (e.value.found or "")


def test_bad_selection_and_model(tmp_path: Path, model: Model) -> None:
    with pytest.raises(InvalidInputError) as e:
        load_config(_cfg(tmp_path, model, selection='orientation = ["upside-down"]'))
    assert e.value.code == "bad-node-config"
    with pytest.raises(InvalidInputError) as e:
        load_config(_cfg(tmp_path, model, selection='slices = 3'))
    assert e.value.code == "bad-node-config" and "selection.slices" in (e.value.found or "")
    p = _cfg(tmp_path, model)
    p.write_text(p.read_text().replace('family = "tiny"', 'bundle = "x.edgemed"'))
    with pytest.raises(InvalidInputError) as e:  # store and bundle: two models
        load_config(p)
    assert e.value.code == "bad-node-config" and e.value.found == "both"


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "node.toml"
    p.write_text("[node\nport = 1")
    with pytest.raises(InvalidInputError) as e:
        load_config(p)
    assert e.value.code == "bad-node-config"
    with pytest.raises(InvalidInputError) as e:
        load_config(tmp_path / "absent.toml")
    assert e.value.code == "not-found"
