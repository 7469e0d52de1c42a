"""A disk cache of decoded model inputs, so a second epoch does not decode again.

Key: SHA-256 of (absolute path, size, mtime, PreprocessSpec dict). Value: the exact array
``load_input`` returned, stored as ``.npy`` (written to a temp file, then renamed).
"""

from __future__ import annotations

import hashlib
import json
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgemed_runtime import PreprocessSpec
from edgemed_runtime.sdk import atomic_write_bytes, load_input


@dataclass
class CacheStats:
    """Hits (served from disk) and misses (decoded) since the cache was opened."""

    hits: int = 0
    misses: int = 0


@dataclass
class ArrayCache:
    """Decoded-array cache under ``root`` for one PreprocessSpec."""

    root: Path
    spec: PreprocessSpec
    stats: CacheStats = field(default_factory=CacheStats)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._spec_json = json.dumps(self.spec.to_dict(), sort_keys=True)

    def key(self, path: str | os.PathLike[str]) -> str:
        p = Path(path).resolve()
        st = p.stat()
        blob = json.dumps([str(p), st.st_size, st.st_mtime_ns, self._spec_json])
        return hashlib.sha256(blob.encode()).hexdigest()

    def _file(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def load(self, path: str | os.PathLike[str]) -> np.ndarray:
        """The model input for ``path``: from disk if cached, else decoded and stored.

        Raises:
            InvalidInputError / MissingDependencyError: as ``load_input``.
        """
        target = self._file(self.key(path))
        if target.is_file():
            try:
                arr = np.load(target, allow_pickle=False)
                self.stats.hits += 1
                return arr
            except (OSError, ValueError):
                target.unlink(missing_ok=True)  # a damaged entry is recomputed
        arr = load_input(path, self.spec)
        self.stats.misses += 1
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        atomic_write_bytes(target, buf.getvalue())
        return arr
