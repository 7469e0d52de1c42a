"""The one exception tree of edgemed (shared by the SDK and the device runtime).

Every error carries a stable ``code`` plus what was expected, what was found and how to fix it,
so a caller (or the CLI) can print one clear line instead of a stack trace from a dependency.
Every code is listed, with its meaning, in ``error_codes.ERROR_CODES`` (docs/error-codes.md); a
new code goes there too (tests/test_error_codes.py fails otherwise).
Messages never contain patient data: callers pass descriptions, not DICOM values.
"""

from __future__ import annotations


class EdgemedError(Exception):
    """Base of every error edgemed raises on purpose.

    Args:
        message: one sentence saying what went wrong.
        expected: what edgemed expected (optional).
        found: what it found instead (optional).
        fix: how the user can fix it (optional).
        code: a stable machine-readable code; defaults to the class's ``default_code``.
    """

    default_code = "edgemed-error"
    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        expected: str | None = None,
        found: str | None = None,
        fix: str | None = None,
        code: str | None = None,
    ) -> None:
        self.message = message
        self.expected = expected
        self.found = found
        self.fix = fix
        self.code = code or self.default_code
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [f"[{self.code}] {self.message}"]
        if self.expected is not None:
            parts.append(f"expected: {self.expected}")
        if self.found is not None:
            parts.append(f"found: {self.found}")
        if self.fix is not None:
            parts.append(f"fix: {self.fix}")
        return "\n  ".join(parts)

    def to_dict(self) -> dict[str, str | None]:
        """Return the error as a JSON-ready dict (for ``--json`` output)."""
        return {
            "type": type(self).__name__,
            "code": self.code,
            "message": self.message,
            "expected": self.expected,
            "found": self.found,
            "fix": self.fix,
        }


class InvalidInputError(EdgemedError):
    """Input the user gave is not what edgemed accepts (bad path, bad file, bad shape, bad DICOM)."""

    default_code = "invalid-input"


class MissingDependencyError(EdgemedError):
    """An optional package needed for this feature is not installed."""

    default_code = "missing-dependency"


class BackendError(EdgemedError):
    """A runtime backend failed to load or run a model."""

    default_code = "backend-error"


class ProfileError(EdgemedError):
    """A target profile is invalid (unknown pass, format mismatch, backend that cannot run it)."""

    default_code = "profile-error"


class BundleError(EdgemedError):
    """A bundle cannot be sealed, opened or trusted."""

    default_code = "bundle-error"


class IntegrityError(BundleError):
    """A bundle's signature, hashes or authenticated encryption do not verify."""

    default_code = "integrity"


class RollbackError(BundleError):
    """A bundle's release counter is lower than one this device already accepted."""

    default_code = "rollback"


class ExpiredError(BundleError):
    """A bundle is past its expiry date."""

    default_code = "expired"


class DeviceMismatchError(BundleError):
    """A bundle is not meant for this device (hardware id, target or device key)."""

    default_code = "device-mismatch"


class StateError(BundleError):
    """The device's state folder or bundle store cannot be written (read-only, full, a file in
    the way). ``install_bundle`` raises it before switching, so the previously installed bundle
    stays usable; ``open_bundle`` raises it when it cannot record a newly accepted release."""

    default_code = "state-unwritable"
