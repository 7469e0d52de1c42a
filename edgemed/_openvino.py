"""openvino and nncf on the build side without their telemetry (no network call, no telemetry
child process that a Ctrl-C would leave printing a traceback): call ``no_telemetry()`` before
``import nncf`` / ``import openvino``. NNCF picks its telemetry stub when ``NNCF_CI`` is set;
openvino is imported through the runtime's ``import_openvino`` (OVC binds its no-op stub)."""

from __future__ import annotations

import os


def no_telemetry() -> None:
    """Make the next ``import nncf`` / ``import openvino`` telemetry-free (idempotent; imports
    openvino when it is installed)."""
    os.environ.setdefault("NNCF_CI", "1")
    from edgemed_runtime.sdk import import_openvino

    try:
        import_openvino()
    except ImportError:
        pass
