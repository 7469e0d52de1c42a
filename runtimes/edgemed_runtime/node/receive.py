"""Receiving and grouping: the C-STORE handler's side of the node.

``Intake`` keeps the live series (by hashed series UID): the instances already spooled, the
associations still sending to it, the time of its last instance. A C-STORE is answered only
after the instance is encrypted into the spool and journalled ``received``; a duplicate (same
SOP Instance UID, from any sender) is acknowledged and not stored twice; a full spool answers
0xA700 (Out of Resources). A series is *grouped* (journalled, handed to the workers) when no
association sending to it is open any more, or when it has been quiet for the timeout.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from .audit import AuditLog
from .metrics import Metrics
from .spool import Spool, SpoolFullError

DONE_KEEP = 100_000  # finished series remembered (re-sends acknowledged, not re-run)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000


@dataclass
class Live:
    """One series as the node knows it (``phase``: open, grouped or done)."""

    sid: str
    instances: dict[str, str] = field(default_factory=dict)  # hashed SOP uid -> blob name
    pending: set[str] = field(default_factory=set)
    assocs: set[int] = field(default_factory=set)
    phase: str = "open"
    last: float = field(default_factory=time.monotonic)
    last_wall: float = field(default_factory=time.time)
    callers: set[str] = field(default_factory=set)
    version: int = 1
    keep_until: float = 0.0  # done and kept for a re-run until this wall time
    late_pending: bool = False  # a late instance came while the series was processed


class Intake:
    """Live series (or studies), the C-STORE handler and the grouping rule.

    Args:
        spool, audit, metrics: the node's.
        timeout_s: the inactivity timeout.
        on_grouped: called with a series id once it is grouped (the worker queue).
        group_by: "series", or "study" (a group is then a whole study, named by the hash of
            its Study Instance UID; the same timeout and association-end rules).
        on_association_end: False: only the timeout completes a group (senders that send
            each series of a study over its own association).
    """

    def __init__(self, spool: Spool, audit: AuditLog, metrics: Metrics, timeout_s: float,
                 on_grouped: Callable[[str], None], *, group_by: str = "series",
                 on_association_end: bool = True, late: str = "ack") -> None:
        self.spool, self.audit, self.metrics = spool, audit, metrics
        self.group_by, self.on_association_end = group_by, on_association_end
        self.late = late
        self.timeout_s = timeout_s
        self.on_grouped = on_grouped
        self.lock = threading.Lock()
        self.series: dict[str, Live] = {}
        self._done: deque[str] = deque()

    # -- C-STORE -------------------------------------------------------------------------
    def _admit(self, sid: str, iid: str, assoc: int, caller: str) -> str:
        """'new', 'duplicate' or 'late' for instance ``iid`` of series ``sid``."""
        with self.lock:
            live = self.series.setdefault(sid, Live(sid))
            if iid in live.instances or iid in live.pending:
                return "duplicate"
            verdict = "new"
            if live.phase == "done" and self.late == "rerun" and live.instances:
                live.phase, live.version, live.keep_until = "open", live.version + 1, 0.0
                live.late_pending, verdict = False, "reopen"
            elif live.phase == "grouped" and self.late == "rerun":
                live.late_pending, verdict = True, "held"
            elif live.phase != "open":
                return "late"
            live.pending.add(iid)
            live.assocs.add(assoc)
            live.callers.add(caller)
            live.last = time.monotonic()
            return verdict

    def store(self, event: Any) -> int:
        """The EVT_C_STORE handler: spool, journal, then answer."""
        caller = str(event.assoc.requestor.ae_title).strip()
        try:
            ds = event.dataset
            series_uid = str(ds.StudyInstanceUID if self.group_by == "study"
                             else ds.SeriesInstanceUID)
            sop_uid = str(event.request.AffectedSOPInstanceUID)
            data = event.encoded_dataset()
        except Exception:  # noqa: BLE001 - pydicom raises many types on a malformed dataset
            self.audit.write("store-refused", calling_ae=caller, reason="unreadable dataset")
            return CANNOT_UNDERSTAND
        sid, iid = self.spool.uid_hash(series_uid), self.spool.uid_hash(sop_uid)
        verdict = self._admit(sid, iid, id(event.assoc), caller)
        if verdict == "reopen":
            self._reopened(sid)
        if verdict not in ("new", "reopen", "held"):
            self.metrics.inc("duplicates" if verdict == "duplicate" else "late")
            self.audit.write(f"{verdict}-instance", series=sid, calling_ae=caller)
            return SUCCESS
        blob = f"i-{sid}-{iid}"
        try:
            self.spool.put(blob, data)
            self.spool.log("received", s=sid, i=iid, f=blob)
            if verdict == "held":
                self.spool.log("late", s=sid)
        except SpoolFullError as exc:
            with self.lock:
                self.series[sid].pending.discard(iid)
            self.metrics.inc("rejected_full")
            self.audit.write("store-refused", series=sid, calling_ae=caller, code=exc.code)
            return OUT_OF_RESOURCES
        with self.lock:
            live = self.series[sid]
            live.pending.discard(iid)
            live.instances[iid] = blob
            live.last, live.last_wall = time.monotonic(), time.time()
        self.metrics.inc("received")
        return SUCCESS

    # -- grouping ------------------------------------------------------------------------
    def association_ended(self, assoc: int) -> None:
        """Group the series no open association is sending to any more."""
        ready = []
        with self.lock:
            for live in self.series.values():
                if assoc in live.assocs:
                    live.assocs.discard(assoc)
                    if not live.assocs and not live.pending and live.phase == "open" \
                            and self.on_association_end:
                        ready.append(live)
        for live in ready:
            self._group(live)

    def tick(self) -> None:
        """Group the series quiet for longer than the timeout (called periodically)."""
        now = time.monotonic()
        with self.lock:
            ready = [s for s in self.series.values() if s.phase == "open" and s.instances
                     and not s.pending and now - s.last >= self.timeout_s]
        for live in ready:
            self._group(live)

    def _group(self, live: Live) -> None:
        with self.lock:
            if live.phase != "open" or not live.instances:
                return
            live.phase = "grouped"
            n = len(live.instances)
        self.spool.log("grouped", s=live.sid, n=n)
        self.metrics.inc("series_grouped")
        self.audit.write("grouped", series=live.sid, instances=n,
                         calling_ae=",".join(sorted(live.callers)))
        self.on_grouped(live.sid)

    def _reopened(self, sid: str) -> None:
        with self.lock:
            v = self.series[sid].version
        self.spool.log("reopened", s=sid, v=v)
        self.metrics.inc("late")
        self.audit.write("reopened", series=sid, version=v)

    def version(self, sid: str) -> int:
        """The series' version (1, then + 1 per re-opening by late instances)."""
        with self.lock:
            return self.series[sid].version if sid in self.series else 1

    def expired(self, now: float) -> list[tuple[str, list[str]]]:
        """Finished series whose kept instances are past their window: (id, blob names);
        forgotten here (the caller deletes the blobs and journals ``purged``)."""
        out = []
        with self.lock:
            for live in self.series.values():
                if live.phase == "done" and live.keep_until and now > live.keep_until:
                    out.append((live.sid, list(live.instances.values())))
                    live.instances, live.keep_until = {}, 0.0
        return out

    def restore(self, sid: str, instances: dict[str, str], phase: str, *, version: int = 1,
                keep_until: float = 0.0) -> Live:
        """Put a series replayed from the journal back (phase open: the timeout re-arms)."""
        live = Live(sid, instances=dict(instances), phase=phase, version=version,
                    keep_until=keep_until)
        with self.lock:
            self.series[sid] = live
            if phase == "done":
                self._done.append(sid)
        return live

    def finish(self, sid: str, keep_until: float = 0.0) -> bool:
        """Mark a series done: its instances are forgotten (their blobs are gone; a re-send is
        'late', acknowledged and not run again), or with ``keep_until`` kept for a re-run
        until then; the last ``DONE_KEEP`` done series are remembered. Returns True when the
        series was re-opened at once (a late instance came while it was processed)."""
        with self.lock:
            live = self.series.get(sid)
            if live is None or live.phase == "done":
                return False
            if keep_until and live.late_pending:
                live.phase, live.version, live.late_pending = "open", live.version + 1, False
                live.last, live.assocs = time.monotonic(), set()
                reopen = True
            else:
                reopen = False
        if reopen:
            self._reopened(sid)
            return True
        with self.lock:
            live.phase = "done"
            live.callers, live.assocs, live.keep_until = set(), set(), keep_until
            if not keep_until:
                live.instances = {}
            self._done.append(sid)
            while len(self._done) > DONE_KEEP:
                old = self._done.popleft()
                if old in self.series and self.series[old].phase == "done":
                    del self.series[old]
        return False

    def snapshot(self, sid: str) -> tuple[list[str], float]:
        """(blob names in the order received, wall time of the last instance) of a series."""
        with self.lock:
            live = self.series[sid]
            return list(live.instances.values()), live.last_wall
