"""The runtime names the edgemed SDK builds on, beyond the public API of ``edgemed_runtime``.

The SDK (``edgemed/``) imports the runtime only from ``edgemed_runtime`` and from this module
(``tests/test_public_api.py``), so the runtime's other modules stay private. These names are a
contract between an ``edgemed`` and the ``edgemed_runtime`` of the same version, not an
application API: they may change in a minor release, together with the SDK (docs/api.md).
"""

from __future__ import annotations

from .agent import (bench_bundle, cpu_flags, device_info, host_rule_matches, resource_name,
                    time_onnx)
from .artifact import ARTIFACT_FILE
from .backends import backend_class, backend_names
from .backends.onnxruntime import wanted_providers
from .backends.openvino import import_openvino, pack_ir
from .backends.probe import probe
from .backends.tensorrt.recipe import TrtRecipe, pack_recipe
from .bundle import (
    BundleManifest,
    VerifiedBundle,
    inspect_bundle,
    install_bundle,
    open_bundle,
    verify_bundle,
)
from .bundle.compress import compress_payload
from .bundle.container import pack_archive, read_bundle
from .bundle.crypto import (
    check_commitment,
    encrypt_stream,
    key_commitment,
    new_data_key,
    unwrap_data_key,
    wrap_data_key,
)
from .bundle.format import (
    ARCHIVE_SUFFIX,
    DEFAULT_CHUNK,
    FORMAT_VERSION,
    KEYS_DIR,
    MANIFEST_FILE,
    MANIFEST_KIND,
    MAX_CHUNK,
    MIN_CHUNK,
    PAYLOAD_DIR,
    SIGNATURE_FILE,
    STREAM_SCHEME,
    WRAPPED_KEY_KIND,
    PayloadEntry,
    canonical_json,
    check_family,
    check_relpath,
    format_time,
    parse_manifest,
)
from .bundle.keys import (
    check_publisher_key,
    fingerprint,
    load_private_key,
    load_public_key,
    publisher_hint,
    spki_pem,
)
from .bundle.loader import runtime_version, unverified_signed_files, wrapped_key_entry
from .bundle.oms import build_signature, build_statement, pae
from .bundle.requirements import DeviceRequirements, requirements_for, requirements_of
from .bundle.weights import ALIGN, pack_weights
from .dicom import load_input, read_dataset, read_image
from .dicom.guard import MAX_FRAME_PIXELS, MAX_TOTAL_PIXELS
from .dicom.quiet import quiet
from .dicom.series_filter import ORIENTATIONS, SeriesFilter, image_type_of, orientation_of
from .exit_codes import EXIT_CODES, ExitCode
from .iospec import parse_shape
from .inference import sliding_window
from .tasks import activate, label_map, softmax
from .tasks.segmentation import names_of as label_names
from .volume.run import result_row, series_folders, source_labels
from .util import atomic_write_bytes, sha256_file

__all__ = [
    "ALIGN", "ARCHIVE_SUFFIX", "ARTIFACT_FILE", "BundleManifest", "DEFAULT_CHUNK", "DeviceRequirements", "EXIT_CODES", "ExitCode",
    "FORMAT_VERSION", "KEYS_DIR", "MANIFEST_FILE", "MANIFEST_KIND", "MAX_CHUNK",
    "MAX_FRAME_PIXELS", "MAX_TOTAL_PIXELS", "MIN_CHUNK", "ORIENTATIONS", "SeriesFilter",
    "image_type_of", "orientation_of", "PAYLOAD_DIR", "PayloadEntry",
    "SIGNATURE_FILE", "STREAM_SCHEME", "TrtRecipe", "VerifiedBundle", "WRAPPED_KEY_KIND",
    "atomic_write_bytes", "backend_class", "backend_names", "build_signature",
    "build_statement", "canonical_json", "check_commitment", "check_family",
    "check_publisher_key", "check_relpath", "compress_payload", "encrypt_stream",
    "fingerprint", "format_time", "import_openvino", "inspect_bundle", "install_bundle", "key_commitment",
    "load_input", "load_private_key", "load_public_key", "new_data_key", "open_bundle",
    "pack_archive", "pack_ir", "pack_recipe", "pack_weights", "pae", "parse_manifest",
    "parse_shape", "probe", "publisher_hint", "quiet", "read_bundle", "read_dataset",
    "read_image", "requirements_for", "requirements_of", "runtime_version", "sha256_file", "label_names", "result_row", "series_folders", "softmax", "spki_pem",
    "activate", "label_map", "sliding_window", "source_labels",
    "unverified_signed_files", "unwrap_data_key", "verify_bundle", "wanted_providers",
    "wrap_data_key", "wrapped_key_entry",
    "bench_bundle", "cpu_flags", "device_info", "host_rule_matches", "resource_name", "time_onnx",
]
