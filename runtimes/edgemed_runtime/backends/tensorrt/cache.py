"""The engine cache: built engines on disk, AES-256-GCM encrypted, one file per ONNX + recipe,
valid only for the TensorRT version and GPU they were built for (plain Python: no TensorRT)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ...errors import InvalidInputError
from ...util import atomic_write_bytes
from .recipe import TrtRecipe

CACHE_MAGIC = b"EMTRT1\0\0"
_HKDF_INFO = b"edgemed tensorrt engine cache v1"


@dataclass(frozen=True)
class GpuInfo:
    """What identifies the hardware an engine was built for."""

    name: str
    compute_capability: str
    driver: str = ""


def slot_key(model: bytes, recipe: TrtRecipe) -> str:
    """Hex SHA-256 of what the engine is built from (ONNX bytes + recipe): one cache file each."""
    blob = json.dumps({"model_sha256": hashlib.sha256(model).hexdigest(),
                       "recipe": recipe.to_dict()}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def env_key(trt_version: str, gpu: GpuInfo) -> str:
    """Hex SHA-256 of what an engine is only valid for (TensorRT version, GPU, driver)."""
    blob = json.dumps({"tensorrt": trt_version, "gpu": asdict(gpu)}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/edgemed/trt`` (``~/.cache/edgemed/trt`` without it)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgemed" / "trt"


class EngineCache:
    """Engines on disk, AES-256-GCM encrypted, one file per model + recipe.

    The file name is an HMAC of the slot key (it does not identify the model); the ciphertext
    carries the environment key (TensorRT version + GPU) inside, authenticated, so an engine
    from another GPU or TensorRT version reads as ``stale`` and its rebuild replaces the file
    (old engines do not pile up).

    Args:
        directory: where cache files live (created on first store).
        key: the caller's secret (>= 16 bytes); the keys used are derived from it by HKDF.
    Raises:
        InvalidInputError: a key shorter than 16 bytes.
    """

    def __init__(self, directory: str | os.PathLike[str], key: bytes) -> None:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        if not isinstance(key, (bytes, bytearray)) or len(key) < 16:
            found = len(key) if isinstance(key, (bytes, bytearray)) else type(key).__name__
            raise InvalidInputError("engine cache key too short", expected=">= 16 bytes",
                                    found=str(found), code="bad-key")
        self.directory = Path(directory)
        okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=None,
                   info=_HKDF_INFO).derive(bytes(key))
        self._enc_key, self._name_key = okm[:32], okm[32:]
        self.last_event = ""

    def path_for(self, slot: str) -> Path:
        """The cache file of ``slot`` (an HMAC of it, so names do not identify the model)."""
        tag = hmac.new(self._name_key, slot.encode(), hashlib.sha256).hexdigest()[:40]
        return self.directory / f"{tag}.engine.enc"

    def store(self, slot: str, env: str, plan: bytes) -> Path:
        """Encrypt ``env`` + ``plan`` (AAD = the slot) and write atomically; return the path."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(12)
        blob = CACHE_MAGIC + nonce + AESGCM(self._enc_key).encrypt(
            nonce, env.encode() + bytes(plan), slot.encode())
        p = self.path_for(slot)
        atomic_write_bytes(p, blob)
        self.last_event = "stored"
        return p

    def load(self, slot: str, env: str) -> bytes | None:
        """The decrypted plan; None when absent (``miss``), built for another TensorRT / GPU
        (``stale``), or not authentic (``rejected``: another key, truncated or tampered; the
        file is removed). ``last_event`` says which."""
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        p = self.path_for(slot)
        try:
            blob = p.read_bytes()
        except FileNotFoundError:
            self.last_event = "miss"
            return None
        head = len(CACHE_MAGIC) + 12
        if len(blob) > head and blob[: len(CACHE_MAGIC)] == CACHE_MAGIC:
            try:
                plain = AESGCM(self._enc_key).decrypt(blob[len(CACHE_MAGIC):head], blob[head:],
                                                      slot.encode())
            except InvalidTag:
                plain = None
            if plain is not None:
                if plain[: len(env)] != env.encode():
                    self.last_event = "stale"
                    return None
                self.last_event = "hit"
                return plain[len(env):]
        p.unlink(missing_ok=True)
        self.last_event = "rejected"
        return None
