"""A backend that dies with SIGSEGV inside ``open``, like OpenVINO's ``read_model`` did on ORT's
QDQ DenseNet-121 here. It is a fault injector for the crash probe, not a stand-in for a real
backend: registered through $EDGEMED_RUNTIME_BACKENDS only by the tests that need a crash."""

from __future__ import annotations

import ctypes
from typing import Any, Mapping

from edgemed_runtime.backends.base import Backend, BackendSession
from edgemed_runtime.iospec import IOSpec


class CrashingBackend(Backend):
    name = "crashing"
    formats = ("onnx", "onnx-qdq")
    requires = ("numpy",)
    modules = ("numpy",)

    def open(self, model: bytes, io: IOSpec, options: Mapping[str, Any]) -> BackendSession:
        ctypes.string_at(0)  # read address 0: SIGSEGV
        raise AssertionError("unreachable")
