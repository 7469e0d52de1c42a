"""Resumable steps: each finished step is recorded with the hash of its inputs; a re-run skips
steps whose inputs have not changed and whose outputs are still there."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from edgemed_runtime.sdk import atomic_write_bytes


def content_key(*parts: Any) -> str:
    """SHA-256 of the canonical JSON of ``parts``."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def tree_key(paths: Iterable[Path]) -> str:
    """Hash of files' names, sizes and contents (for data folders and artifacts)."""
    h = hashlib.sha256()
    for p in sorted(paths):
        if p.is_file():
            h.update(str(p).encode())
            with open(p, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
    return h.hexdigest()


class StepState:
    """A JSON file of ``{step: {"key": ..., "result": ...}}``, written atomically per step."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.data: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}

    def done(self, step: str, key: str, outputs: Iterable[Path] = ()) -> Any | None:
        """The recorded result if ``step`` finished with ``key`` and its outputs exist."""
        rec = self.data.get(step)
        if rec and rec.get("key") == key and all(Path(o).exists() for o in outputs):
            return rec.get("result")
        return None

    def record(self, step: str, key: str, result: Any) -> None:
        self.data[step] = {"key": key, "result": result}
        atomic_write_bytes(self.path, json.dumps(self.data, indent=1, sort_keys=True,
                                                 default=str).encode())

    def note_run(self, status: str, **info: Any) -> None:
        """Record how the latest run stands (``running``, ``finished``, ``interrupted`` with
        the target and step it stopped in) under ``_last_run`` (no step has that name)."""
        from datetime import datetime, timezone

        at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.data["_last_run"] = {"status": status, "at": at, **info}
        self._write()

    def _write(self) -> None:
        atomic_write_bytes(self.path, json.dumps(self.data, indent=1, sort_keys=True,
                                                 default=str).encode())

    def forget(self, step: str) -> None:
        if self.data.pop(step, None) is not None:
            atomic_write_bytes(self.path, json.dumps(self.data, indent=1, sort_keys=True,
                                                     default=str).encode())
