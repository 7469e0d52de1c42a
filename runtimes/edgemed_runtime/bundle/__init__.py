"""Signed, encrypted model bundles on the device: verify, decrypt in memory, open, install.

Format: docs/bundle-format.md. Needs only numpy and pyca ``cryptography`` (>= 47 for HPKE);
never imports ``model_signing``, torch or onnx.
"""

from __future__ import annotations

from .container import BundleFiles, pack_archive, read_bundle
from .format import (
    ARCHIVE_SUFFIX,
    FORMAT_VERSION,
    KEYS_DIR,
    MANIFEST_FILE,
    SIGNATURE_FILE,
    BundleManifest,
    PayloadEntry,
    parse_manifest,
)
from .install import install_bundle, installed_path, open_installed
from .loader import (
    VerifiedBundle,
    decrypt_payloads,
    inspect_bundle,
    open_bundle,
    open_verified,
    verify_bundle,
)
from .state import AcceptedRelease, RollbackState, default_state_dir

__all__ = [
    "ARCHIVE_SUFFIX", "AcceptedRelease", "BundleFiles", "BundleManifest", "FORMAT_VERSION",
    "KEYS_DIR", "MANIFEST_FILE", "PayloadEntry", "RollbackState", "SIGNATURE_FILE",
    "VerifiedBundle", "decrypt_payloads", "default_state_dir", "inspect_bundle",
    "install_bundle", "installed_path", "open_bundle", "open_installed", "open_verified",
    "pack_archive", "parse_manifest", "read_bundle", "verify_bundle",
]
