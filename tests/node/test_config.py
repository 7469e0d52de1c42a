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


@pytest.mark.parametrize("kw, key", [
    ({"dest_extra": 'send_by = ["fax"]'}, "destination.send_by"),
    ({"dest_extra": 'send_by = ["c-store", "c-store"]'}, "destination.send_by"),
    ({"dest_extra": 'send_by = ["stow-rs"]'}, "destination.stow_url"),
    ({"dest_extra": 'send_by = ["stow-rs"]\nstow_url = "ftp://x"'}, "destination.stow_url"),
    ({"dest_extra": "redeliver_s = -1"}, "destination.redeliver_s"),
    ({"dest_extra": '[destination.tls]\nca = "ca.pem"\ncert = "c.pem"'},
     "destination.tls.key"),
    ({"grouping": 'by = "patient"'}, "grouping.by"),
    ({"grouping": 'late = "ignore"'}, "grouping.late"),
    ({"grouping": 'association_end = "no"'}, "grouping.association_end"),
    ({"grouping": "late_window_s = 0"}, "grouping.late_window_s"),
])
def test_bad_delivery_and_grouping_options(tmp_path: Path, model: Model, kw: dict,
                                           key: str) -> None:
    with pytest.raises(InvalidInputError) as e:
        load_config(_cfg(tmp_path, model, **kw))
    assert e.value.code == "bad-node-config" and key in e.value.message


def test_delivery_and_grouping_options_parse(tmp_path: Path, model: Model) -> None:
    cfg = load_config(_cfg(tmp_path, model, grouping='by = "study"\nassociation_end = false\n'
                           'late = "rerun"\nlate_window_s = 60', dest_extra=(
                               'send_by = ["c-store", "stow-rs"]\n'
                               'stow_url = "https://pacs.example/dicom-web/studies"\n'
                               'redeliver_s = 600\n[destination.tls]\nca = "ca.pem"')))
    d = cfg.destination
    assert d.send_by == ("c-store", "stow-rs") and d.redeliver_s == 600
    assert d.tls is not None and d.tls.ca == tmp_path / "ca.pem" and d.tls.cert is None
    assert (cfg.group_by, cfg.group_on_association_end, cfg.late, cfg.late_window_s) == (
        "study", False, "rerun", 60)
    assert cfg.spool.journal_max_bytes == 16 << 20
    # STOW-RS alone needs no DICOM address
    p = _cfg(tmp_path, model, dest_extra='send_by = ["stow-rs"]\nstow_url = "http://h/s"')
    text = "\n".join(x for x in p.read_text().splitlines()
                     if not x.startswith(("ae_title = \"ORTHANC\"", "host = ", "port = 4242")))
    p.write_text(text)
    assert load_config(p).destination.port == 0
