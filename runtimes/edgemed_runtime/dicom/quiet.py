"""Keep patient data out of logs and warnings while pydicom reads a file.

pydicom reports invalid values with ``warn_and_log``: a ``warnings.warn`` *and* a log record on the
``pydicom`` logger, both quoting the value (which may be a patient's name). ``quiet()`` ignores
the warnings for the duration of a read, and a filter on the ``pydicom`` logger (installed once)
replaces every record's text with a fixed sentence that quotes nothing.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from typing import Iterator

REDACTED = "pydicom reported a problem with a DICOM value (details withheld: may hold patient data)"


class RedactingFilter(logging.Filter):
    """Rewrites pydicom log records so they carry no DICOM values."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = REDACTED
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        return True


_INSTALLED = False


def install_log_filter() -> None:
    """Attach the redacting filter to the ``pydicom`` logger (idempotent)."""
    global _INSTALLED
    if _INSTALLED:
        return
    logger = logging.getLogger("pydicom")
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())
    _INSTALLED = True


@contextmanager
def quiet() -> Iterator[None]:
    """Suppress pydicom's value-quoting warnings and redact its log records."""
    install_log_filter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
