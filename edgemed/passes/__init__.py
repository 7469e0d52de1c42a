"""Passes: one module (or folder) per algorithm, a registry keyed by name."""

from .base import BuildContext, Pass, PassConfig, get_pass_class, pass_names, register_pass

__all__ = ["BuildContext", "Pass", "PassConfig", "get_pass_class", "pass_names", "register_pass"]
