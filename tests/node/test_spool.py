"""The spool: AES-GCM blobs that authenticate, a journal that survives a torn last line, a
budget, a key file created 0600, hashed UIDs only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edgemed_runtime.errors import InvalidInputError
from edgemed_runtime.node.spool import Spool, SpoolFullError, load_or_create_key


def _spool(tmp_path: Path, max_bytes: int = 1 << 20) -> Spool:
    return Spool(tmp_path / "spool", load_or_create_key(tmp_path / "k"), max_bytes)


def test_blobs_are_encrypted_and_authenticated(tmp_path: Path) -> None:
    s = _spool(tmp_path)
    secret = b"DICM" + b"SENTINEL^PATIENT" * 100
    s.put("i-a-b", secret)
    raw = (tmp_path / "spool" / "blobs" / "i-a-b.enc").read_bytes()
    assert b"SENTINEL" not in raw and s.get("i-a-b") == secret
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o600
    # a flipped byte, or a blob renamed to another name, does not authenticate
    bad = bytearray(raw)
    bad[40] ^= 1
    (tmp_path / "spool" / "blobs" / "i-a-b.enc").write_bytes(bytes(bad))
    with pytest.raises(InvalidInputError) as e:
        s.get("i-a-b")
    assert e.value.code == "spool-corrupt"
    (tmp_path / "spool" / "blobs" / "i-x-y.enc").write_bytes(raw)
    with pytest.raises(InvalidInputError):
        s.get("i-x-y")
    s.close()


def test_budget_and_accounting(tmp_path: Path) -> None:
    s = _spool(tmp_path, max_bytes=1 << 16)
    s.put("a", b"x" * 30000)
    s.put("b", b"x" * 30000)
    with pytest.raises(SpoolFullError) as e:
        s.put("c", b"x" * 30000)
    assert e.value.code == "spool-full"
    s.delete("a")
    s.put("c", b"x" * 30000)  # room again
    assert s.used == 2 * (30000 + 28)
    s.close()
    assert _spool(tmp_path, 1 << 16).used == 2 * (30000 + 28)  # recounted on start


def test_journal_replay_and_torn_tail(tmp_path: Path) -> None:
    s = _spool(tmp_path)
    sid, iid = s.uid_hash("1.2.3.4"), s.uid_hash("1.2.3.4.5")
    assert sid != iid and "1.2.3" not in sid and len(sid) == 24
    s.log("received", s=sid, i=iid, f="i-1")
    s.log("grouped", s=sid, n=1)
    s.log("inferred", s=sid, b="bid", f="r-1")
    s.close()
    with open(tmp_path / "spool" / "journal.jsonl", "ab") as f:
        f.write(b'{"e": "delivered", "s": "')  # kill -9 mid-line
    s = _spool(tmp_path)
    st = s.replay()[sid]
    assert st.grouped and st.results == {"bid": "r-1"} and not st.delivered
    s.log("delivered", s=sid, b="bid")  # the next line is whole, not glued to the torn one
    assert s.replay()[sid].delivered == {"bid"}
    s.close()


def test_bad_key_file(tmp_path: Path) -> None:
    (tmp_path / "k").write_bytes(b"short")
    with pytest.raises(InvalidInputError) as e:
        load_or_create_key(tmp_path / "k")
    assert e.value.code == "bad-spool-key"
