"""SDK side of signed, encrypted bundles: keys, sealing, adding devices, the registry, diffs.

    from edgemed.bundle import SealOptions, Recipient, seal
    seal("out/model", "model.edgemed", publisher_key="keys/publisher.key",
         options=SealOptions(family="chest-xray", release=7),
         recipients=[Recipient.load("keys/ward3-tablet.pub")])

Format: docs/bundle-format.md. Devices open bundles with ``edgemed_runtime.open(path,
trust=..., device_key=...)``.
"""

from __future__ import annotations

from edgemed_runtime.sdk import (
    BundleManifest,
    VerifiedBundle,
    inspect_bundle,
    install_bundle,
    open_bundle,
    verify_bundle,
)

from .devices import Recipient, add_device
from .diff import diff_manifests
from .keys import KeyPair, generate_keypair
from .registry import Registry, RegistryEntry, default_registry_path
from .seal import SealOptions, seal
from .signing import sign_files

__all__ = [
    "BundleManifest", "KeyPair", "Recipient", "Registry", "RegistryEntry", "SealOptions",
    "VerifiedBundle", "add_device", "default_registry_path", "diff_manifests",
    "generate_keypair", "inspect_bundle", "install_bundle", "open_bundle", "seal", "sign_files",
    "verify_bundle",
]
