"""Progress of a build: structured events, a default terminal display, NNCF kept quiet.

``edgemed.build(..., progress=...)``:

- ``None`` (the default): lines on stderr (rich), one per step, with the variant being built
  (``variant 2 of 5``), the time elapsed and, once a variant has finished, an ETA;
- ``False`` (or ``quiet=True``): nothing;
- a callable: called with a ``ProgressEvent`` per step. ``ProgressEvent`` is a ``str`` (the
  message), so a ``Callable[[str], None]`` keeps working; embedders read its fields
  (``kind``, ``variant``, ``index``, ``total``, ``elapsed_s``, ``eta_s``).

The pipeline calls the reporter with plain message strings (passes do too, through
``BuildContext.progress``) and announces the candidate list with ``plan_variants``; the reporter
turns messages that start with ``"<variant>: "`` into variant events.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from typing import Any, Callable, Iterator, Sequence

class ProgressEvent(str):
    """One progress event; its ``str`` value is the human message.

    Fields:
        kind: ``"plan"`` (the candidate list is known), ``"variant"`` (a step of one variant),
            ``"step"`` (a step of the build as a whole).
        message: the message (also the string value).
        variant: the variant's name (variant events), else None.
        index, total: the variant's position (1-based) and the number of candidates, or None.
        elapsed_s: seconds since the build started.
        eta_s: estimated seconds left for the candidates (None until one has finished).
    """

    kind: str
    variant: str | None
    index: int | None
    total: int | None
    elapsed_s: float
    eta_s: float | None

    def __new__(cls, message: str, *, kind: str = "step", variant: str | None = None,
                index: int | None = None, total: int | None = None, elapsed_s: float = 0.0,
                eta_s: float | None = None) -> "ProgressEvent":
        self = super().__new__(cls, message)
        self.kind, self.variant, self.index, self.total = kind, variant, index, total
        self.elapsed_s, self.eta_s = elapsed_s, eta_s
        return self

    @property
    def message(self) -> str:
        return str.__str__(self)

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-ready dict."""
        return {"kind": self.kind, "message": self.message, "variant": self.variant,
                "index": self.index, "total": self.total, "elapsed_s": round(self.elapsed_s, 3),
                "eta_s": None if self.eta_s is None else round(self.eta_s, 1)}


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60}:{s % 60:02d}"


class Reporter:
    """The ``say(message)`` callable the pipeline uses; builds events and hands them on.

    Args:
        sink: receives every ProgressEvent (None: events are only counted).
        clock: a monotonic clock (tests pass a fake one).
    """

    def __init__(self, sink: Callable[[ProgressEvent], Any] | None, *,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.sink = sink
        self.clock = clock
        self.t0 = clock()
        self.variants: list[str] = []
        self.current: str | None = None
        self.started: dict[str, float] = {}

    def plan(self, names: Sequence[str]) -> None:
        """The candidates about to be built, in order."""
        self.variants = list(names)
        self._emit(f"{len(names)} candidate variant(s): {', '.join(names)}", kind="plan",
                   total=len(names))

    def _eta(self, now: float) -> float | None:
        if self.current is None or not self.variants or self.current not in self.variants:
            return None
        done = self.variants.index(self.current)  # the ones before the current have finished
        if done == 0:
            return None
        first = self.started.get(self.variants[0], self.t0)
        per = (self.started[self.current] - first) / done
        return max(0.0, per * (len(self.variants) - done) - (now - self.started[self.current]))

    def __call__(self, message: str) -> None:
        head, sep, _ = str(message).partition(": ")
        now = self.clock()
        if sep and head in self.variants:
            self.started.setdefault(head, now)
            self.current = head
            self._emit(str(message), kind="variant", variant=head,
                       index=self.variants.index(head) + 1, total=len(self.variants), now=now)
        else:
            self._emit(str(message), kind="step", now=now)

    def _emit(self, message: str, *, kind: str, variant: str | None = None,
              index: int | None = None, total: int | None = None, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        eta = self._eta(now) if kind == "variant" else None
        ev = ProgressEvent(message, kind=kind, variant=variant, index=index, total=total,
                           elapsed_s=now - self.t0, eta_s=eta)
        if self.sink is not None:
            self.sink(ev)


def display(event: ProgressEvent, *, console: Any = None) -> None:
    """Print one event as a line on stderr: ``[0:12] variant 2/5 ort-int8: accuracy gate (ETA 0:30)``."""
    if console is None:
        console = _stderr_console()
    where = f"variant {event.index}/{event.total} " if event.kind == "variant" else ""
    eta = f" [dim](ETA {_clock(event.eta_s)})[/]" if event.eta_s is not None else ""
    console.print(f"[dim]\\[{_clock(event.elapsed_s)}][/] {where}{event.message}{eta}",
                  markup=True, highlight=False)


_CONSOLE: list[Any] = []


def _stderr_console() -> Any:
    if not _CONSOLE:
        from rich.console import Console

        _CONSOLE.append(Console(stderr=True, soft_wrap=True))
    return _CONSOLE[0]


def reporter(progress: Any = None, *, quiet: bool = False) -> Reporter:
    """The reporter for ``build(progress=..., quiet=...)`` (see the module docstring).

    Raises:
        InvalidInputError: ``progress`` is neither None, a bool nor a callable.
    """
    if quiet or progress is False:
        return Reporter(None)
    if progress is None or progress is True:
        return Reporter(display)
    if isinstance(progress, Reporter):
        return progress
    if not callable(progress):
        from .errors import InvalidInputError

        raise InvalidInputError("progress must be None, False or a callable",
                                expected="None (display), False (silent) or a callable(event)",
                                found=type(progress).__name__, code="bad-option")
    return Reporter(progress)


def plan_variants(say: Callable[[str], None], names: Sequence[str]) -> None:
    """Tell ``say`` the candidate list when it is a Reporter (other callables get nothing)."""
    if isinstance(say, Reporter):
        say.plan(names)


@contextlib.contextmanager
def quiet_nncf() -> Iterator[None]:
    """NNCF's log messages and its rich progress bars silenced for the block.

    ``nncf.set_log_level`` mutes NNCF's logger, but its progress bars (``nncf.common.logging.
    track_progress.track``, a rich ``Progress`` on a console it creates on stdout) ignore the log
    level; they go to a buffer here. stdout is restored afterwards, whatever happens.
    """
    import nncf

    logger = logging.getLogger("nncf")
    level = logger.level
    nncf.set_log_level(logging.ERROR)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink):
            yield
    finally:
        nncf.set_log_level(level or logging.INFO)
