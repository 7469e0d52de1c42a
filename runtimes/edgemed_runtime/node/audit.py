"""The JSON-lines audit log: one object per event, UIDs only as keyed hashes, no PHI.

Fields: ``t`` (UTC ISO time), ``event`` and what the event names: ``series`` (the hashed
series UID), ``calling_ae``, ``bundle_id``, counts, codes and durations. Nothing read from a
DICOM header other than modality-level selection reasons is written.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


class AuditLog:
    """Append-only JSON lines at ``path`` (None: events are dropped); thread-safe."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._f = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held open

    def write(self, event: str, **fields: Any) -> None:
        """Append one event (flushed; not fsync'd: the journal is the durable record)."""
        if self._f is None:
            return
        rec = {"t": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
               "event": event, **fields}
        line = json.dumps(rec, sort_keys=True, default=str) + "\n"
        with self._lock:
            self._f.write(line)
            self._f.flush()

    def close(self) -> None:
        """Close the file."""
        if self._f is not None:
            with self._lock:
                self._f.close()
                self._f = None


def read_audit(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The events of an audit log (for tests and operators)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
