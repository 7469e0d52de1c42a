"""The bedside node: ``Node(config).start()`` / ``serve(config_path)``.

Wiring: the SCP's C-STORE handler -> ``Intake`` (spool + journal, grouping) -> a bounded queue
-> a pool of workers sharing one Session (``ModelHolder``, hot swap between series) ->
``process_series`` (SR / SEG into the spool) -> delivery with retries -> ``delivered`` or the
dead-letter folder. A watchdog replaces a worker stuck on one series; SIGTERM stops the SCP,
drains the queue for ``drain_s`` and leaves the rest journalled for the next start.

Journal states per series (docs/node.md): received -> grouped -> inferred -> delivered, or
skipped / failed / dead-letter. On start the journal is replayed: open series re-arm their
timeout, grouped ones are queued, inferred ones are delivered; a (series, bundle id) pair that
is journalled delivered is never delivered again.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .audit import AuditLog
from .config import NodeConfig, load_config
from .deliver import Courier, with_retries
from .metrics import Metrics, serve_metrics
from .model import ModelHolder
from .process import clean_scratch, process_series
from .receive import Intake
from .spool import SeriesState, Spool, SpoolFullError, load_or_create_key


MAX_RESTARTS = 2  # a series that stalls a worker this often is given up (dead letter)


@dataclass
class _Busy:
    sid: str
    since: float
    token: int


class Node:
    """One DICOM node.

    Args:
        config: the parsed ``node.toml``.
        passphrase: the device key's passphrase, if it has one.
    Raises:
        the errors of ``open_bundle`` (no bundle to serve), InvalidInputError (spool key).
    """

    def __init__(self, config: NodeConfig, *, passphrase: str | None = None) -> None:
        from pydicom.uid import generate_uid

        self.cfg = config
        self.audit = AuditLog(config.audit_log)
        config.spool.dir.mkdir(parents=True, exist_ok=True)
        self.spool = Spool(config.spool.dir, load_or_create_key(config.spool.key_file),
                           config.spool.max_bytes,
                           journal_max_bytes=config.spool.journal_max_bytes)
        self.queue: queue.Queue[str] = queue.Queue(maxsize=config.queue_size)
        self.metrics = Metrics(depth=self.queue.qsize)
        self.model = ModelHolder(config.model, self._model_event, passphrase)
        self._ready: list[str] = []
        self.intake = Intake(self.spool, self.audit, self.metrics, config.group_timeout_s,
                             self._ready.append, group_by=config.group_by,
                             on_association_end=config.group_on_association_end,
                             late=config.late)
        self.courier = Courier(config.destination, config.scp.ae_title)
        self.device_uid = generate_uid(entropy_srcs=[config.scp.ae_title, "edgemed-node"])
        self._stop = threading.Event()
        self._halt = threading.Event()
        self._busy: dict[int, _Busy | None] = {}
        self._tokens: dict[str, int] = {}
        self._stuck: dict[str, int] = {}
        self._lock = threading.Lock()
        self._next_worker = 0
        self._threads: list[threading.Thread] = []
        self.server: Any = None
        self.metrics_server: Any = None
        self._states: dict[str, SeriesState] = {}
        self._redeliver_lock = threading.Lock()

    def _model_event(self, event: str, **fields: Any) -> None:
        self.metrics.inc("swaps" if event == "swapped" else "swaps_refused")
        self.audit.write(event, **fields)

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The DICOM port actually bound (useful when configured as 0)."""
        return int(self.server.server_address[1])

    @property
    def metrics_port(self) -> int:
        """The metrics port actually bound (0: off)."""
        return int(self.metrics_server.server_address[1]) if self.metrics_server else 0

    def start(self) -> "Node":
        """Replay the journal, start the workers, the grouper, the watchdog, the metrics
        endpoint and the SCP; returns self."""
        from .scp import start_scp

        self._recover()
        for _ in range(self.cfg.workers):
            self._spawn_worker()
        loops = [(self._grouper, "grouper"), (self._watchdog, "watchdog")]
        if self.cfg.destination.redeliver_s > 0:
            loops.append((self._redeliverer, "redeliver"))
        for target, name in loops:
            t = threading.Thread(target=target, name=f"edgemed-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        if self.cfg.metrics_port:
            self.metrics_server = serve_metrics(self.metrics, self.cfg.metrics_port)
        self.server = start_scp(self.cfg.scp, self.intake.store, self.intake.association_ended,
                                self._rejected)
        self.audit.write("started", ae_title=self.cfg.scp.ae_title, port=self.port,
                         bundle_id=self.model.current.bundle_id)
        return self

    def _rejected(self, event: Any) -> None:
        self.audit.write("association-rejected",
                         calling_ae=str(event.assoc.requestor.ae_title).strip()[:16])

    def stop(self, drain: bool = True) -> None:
        """Stop accepting, drain the queue for up to ``drain_s`` (if ``drain``), stop the
        workers; unfinished work stays journalled."""
        if self.server is not None:
            self.server.shutdown()
        deadline = time.monotonic() + (self.cfg.drain_s if drain else 0)
        while drain and time.monotonic() < deadline and (
                self._ready or not self.queue.empty() or any(self._busy.values())):
            time.sleep(0.05)
        self._stop.set()
        self._halt.set()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()  # the port is free for a restart at once
        for t in self._threads:
            t.join(timeout=5)
        self.courier.close()
        self.audit.write("stopped", pending=self.queue.qsize() + len(self._ready))
        self.model.close()
        self.spool.close()
        self.audit.close()

    def serve_forever(self) -> None:
        """Start, then run until SIGTERM / SIGINT; then stop with draining."""
        done = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: done.set())
        self.start()
        done.wait()
        self.stop(drain=True)

    # -- recovery ------------------------------------------------------------------------
    def _recover(self) -> None:
        self._states = self.spool.replay()
        counts = {"open": 0, "queued": 0, "deliver": 0,
                  "scratch_removed": clean_scratch(self.cfg.spool.scratch_dir)}
        for sid, st in self._states.items():
            v = st.version
            if st.done is not None and st.kept_until and st.late and self.cfg.late == "rerun":
                self.spool.log("reopened", s=sid, v=v + 1)  # a late instance, then a kill
                self.intake.restore(sid, st.instances, "open", version=v + 1)
                counts["open"] += 1
            elif st.done is not None:
                kept = st.instances if st.kept_until else {}
                self.intake.restore(sid, kept, "done", version=v, keep_until=st.kept_until)
            elif st.grouped:
                self.intake.restore(sid, st.instances, "grouped", version=v)
                self._ready.append(sid)
                counts["deliver" if st.results else "queued"] += 1
            elif st.instances:
                self.intake.restore(sid, st.instances, "open", version=v)
                counts["open"] += 1
        counts["dead_letter_restored"] = self._restore_dead_letters()
        self.audit.write("recovered", **counts)

    def _restore_dead_letters(self) -> int:
        """Results of dead-letter series that a kill left in the spool (mid-redelivery) go
        back to the dead-letter folder; returns how many."""
        n = 0
        for p in sorted(self.spool.blobs.glob("r-*.enc")):
            sid = p.name[2:].split("-", 1)[0]
            st = self._states.get(sid)
            if st is not None and st.done == "dead-letter":
                self.spool.move_out(p.name[: -len(".enc")], self.cfg.destination.dead_letter)
                n += 1
        return n

    # -- grouping and the queue ----------------------------------------------------------
    def _grouper(self) -> None:
        period = max(0.02, min(0.25, self.cfg.group_timeout_s / 4))
        while not self._halt.is_set():
            self.intake.tick()
            for sid, blobs in self.intake.expired(time.time()):
                for b in blobs:
                    self.spool.delete(b)
                self.spool.log("purged", s=sid)
            while self._ready and not self._halt.is_set():
                try:
                    self.queue.put(self._ready[0], timeout=period)
                except queue.Full:
                    break
                self._ready.pop(0)
            self._halt.wait(period)

    # -- workers -------------------------------------------------------------------------
    def _spawn_worker(self) -> None:
        with self._lock:
            wid = self._next_worker
            self._next_worker += 1
            self._busy[wid] = None
        t = threading.Thread(target=self._worker, args=(wid,), name=f"edgemed-worker-{wid}",
                             daemon=True)
        t.start()
        self._threads.append(t)

    def _worker(self, wid: int) -> None:
        while not self._stop.is_set() and wid in self._busy:
            try:
                sid = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            with self._lock:
                token = self._tokens.get(sid, 0) + 1
                self._tokens[sid] = token
                self._busy[wid] = _Busy(sid, time.monotonic(), token)
            try:
                self._handle(sid, token)
            except Exception as exc:  # noqa: BLE001 - a worker must survive any one series
                self.metrics.inc("failed")
                self.audit.write("worker-error", series=sid, error=type(exc).__name__)
            finally:
                with self._lock:
                    if wid in self._busy:
                        self._busy[wid] = None

    def _current(self, sid: str, token: int) -> bool:
        with self._lock:
            return self._tokens.get(sid) == token

    def _watchdog(self) -> None:
        while not self._halt.wait(min(1.0, self.cfg.watchdog_s / 4)):
            now = time.monotonic()
            with self._lock:
                stuck = [(w, b) for w, b in self._busy.items()
                         if b is not None and now - b.since > self.cfg.watchdog_s]
                for w, b in stuck:
                    del self._busy[w]  # that thread ends after its series; its result is dropped
                    self._tokens[b.sid] = b.token + 1
                    self._stuck[b.sid] = self._stuck.get(b.sid, 0) + 1
            for _, b in stuck:
                self.metrics.inc("watchdog_restarts")
                self.audit.write("watchdog-restart", series=b.sid, times=self._stuck[b.sid])
                self._spawn_worker()
                if self._stuck[b.sid] < MAX_RESTARTS:
                    self._ready.append(b.sid)
                else:
                    self._give_up(b.sid)

    def _give_up(self, sid: str) -> None:
        """A series that stalled a worker ``MAX_RESTARTS`` times: its result (if any) goes to
        the dead-letter folder, else it is journalled failed."""
        st = self._states.get(sid)
        pending = [b for b in (st.results if st else {}) if b not in st.delivered] if st else []
        for bundle_id in pending:
            try:
                self.spool.move_out(st.results[bundle_id], self.cfg.destination.dead_letter)
            except OSError:
                continue
            self.spool.log("dead-letter", s=sid, b=bundle_id, f=st.results[bundle_id])
            self.metrics.inc("dead_letter")
            self.audit.write("dead-letter", series=sid, bundle_id=bundle_id, reason="watchdog")
        if not pending:
            self.spool.log("failed", s=sid, why="watchdog")
            self.metrics.inc("failed")
            self.audit.write("failed", series=sid, reason="watchdog")
        self.intake.finish(sid)

    # -- one series ----------------------------------------------------------------------
    def _handle(self, sid: str, token: int) -> None:
        st = self._states.get(sid) or SeriesState(sid)
        pending = [b for b in st.results if b not in st.delivered]
        if pending:  # inferred before a restart: deliver that result
            for bundle_id in pending:
                self._deliver(sid, bundle_id, st.results[bundle_id], token)
            return
        self.model.maybe_swap()
        blobs, _ = self.intake.snapshot(sid)
        t0 = time.monotonic()
        version = self.intake.version(sid)
        with self.model.lease() as m:
            out = process_series(self.spool, blobs, m, rules=self.cfg.selection,
                                 scratch=self.cfg.spool.scratch_dir, device_uid=self.device_uid,
                                 level=self.cfg.group_by, version=version)
            # a re-run (late instances) is a new result: its own journal key and UIDs
            bundle_id = m.bundle_id if version == 1 else f"{m.bundle_id}.v{version}"
        if not self._current(sid, token):
            return
        ms = round((time.monotonic() - t0) * 1000, 1)
        if out.state != "inferred" or out.result is None:
            self.spool.log(out.state, s=sid, why=out.reason)
            self.metrics.inc("skipped" if out.state == "skipped" else "failed")
            self.audit.write(out.state, series=sid, reason=out.reason, bundle_id=bundle_id,
                             errors=out.errors, ms=ms)
            self._cleanup(sid, blobs)
            return
        blob = f"r-{sid}-{bundle_id}"
        self.metrics.inc("processed")
        self.audit.write("inferred", series=sid, bundle_id=bundle_id, analysed=out.analysed,
                         errors=out.errors, ms=ms)
        try:
            self.spool.put(blob, out.result)
            self.spool.log("inferred", s=sid, b=bundle_id, f=blob)
        except SpoolFullError:
            # the spool is full of this series' instances: deliver from memory (the instances
            # stay journalled 'grouped' until delivered, so nothing is lost if this fails)
            self.audit.write("result-not-spooled", series=sid, code="spool-full")
            self._deliver(sid, bundle_id, None, token, data=out.result)
            return
        st.results[bundle_id] = blob
        self._states[sid] = st
        self._deliver(sid, bundle_id, blob, token)

    def _deliver(self, sid: str, bundle_id: str, blob: str | None, token: int, *,
                 data: bytes | None = None) -> None:
        """Send a result (spool blob ``blob``, or ``data`` not spooled) with retries; journal
        delivered, or move it to the dead-letter folder."""
        dest = self.cfg.destination
        payload = data if data is not None else self.spool.get(str(blob))
        t0 = time.monotonic()
        res = with_retries(self.courier.sender(payload),
                           retries=dest.retries, backoff_s=dest.backoff_s, stop=self._halt)
        ms = round((time.monotonic() - t0) * 1000, 1)
        if not self._current(sid, token):
            return
        blobs, last_wall = self.intake.snapshot(sid)
        if res.ok:
            self._journal_freeing(sid, blobs, "delivered", b=bundle_id)
            self.metrics.inc("delivered")
            self.metrics.latency(time.time() - last_wall)
            self.audit.write("delivered", series=sid, bundle_id=bundle_id, attempts=res.attempts,
                             ms=ms)
            if blob is not None:
                self.spool.delete(blob)
        elif self._halt.is_set():
            return  # stopping: stays 'inferred' (or 'grouped'), resumed at the next start
        else:
            name = blob or f"r-{sid}-{bundle_id}"
            if blob is not None:
                self.spool.move_out(blob, dest.dead_letter)
            else:
                self.spool.put_outside(name, payload, dest.dead_letter)
            self._journal_freeing(sid, blobs, "dead-letter", b=bundle_id, f=name)
            self.metrics.inc("dead_letter")
            self.audit.write("dead-letter", series=sid, bundle_id=bundle_id,
                             attempts=res.attempts, reason=res.last_error)
        self._cleanup(sid, blobs)

    def _journal_freeing(self, sid: str, blobs: list[str], event: str, **fields: Any) -> None:
        """Journal ``event``; when the disk is full, free the series' instance blobs first (its
        result is already safe) and try again."""
        try:
            self.spool.log(event, s=sid, **fields)
        except SpoolFullError:
            for b in blobs:
                if b:
                    self.spool.delete(b)
            self.spool.log(event, s=sid, **fields)

    def _cleanup(self, sid: str, blobs: list[str]) -> None:
        if self.cfg.late == "rerun":  # instances kept for a re-run by late instances
            until = round(time.time() + self.cfg.late_window_s, 1)
            self.spool.log("retained", s=sid, until=until)
            self.intake.finish(sid, keep_until=until)
        else:
            for b in blobs:
                if b:
                    self.spool.delete(b)
            self.intake.finish(sid)
        with self._lock:  # nothing of a finished series stays in memory here
            self._states.pop(sid, None)
            self._tokens.pop(sid, None)
            self._stuck.pop(sid, None)

    # -- dead letters --------------------------------------------------------------------
    def _redeliverer(self) -> None:
        """``destination.redeliver_s`` > 0: try the dead-letter folder every ``redeliver_s``
        (one attempt per result); while results keep failing the wait doubles, up to 16 x."""
        wait = self.cfg.destination.redeliver_s
        while not self._halt.wait(wait):
            folder = self.cfg.destination.dead_letter
            if not (folder.is_dir() and any(folder.glob("r-*.enc"))):
                wait = self.cfg.destination.redeliver_s
                continue
            try:
                ok, bad = self.redeliver_dead_letters(retries=0)
            except Exception as exc:  # noqa: BLE001 - the thread must outlive one bad file
                self.audit.write("worker-error", error=type(exc).__name__, where="redeliver")
                ok, bad = 0, 1
            self.audit.write("redelivery", delivered=ok, failing=bad)
            wait = (self.cfg.destination.redeliver_s if not bad
                    else min(wait * 2, 16 * self.cfg.destination.redeliver_s))

    def redeliver_dead_letters(self, *, retries: int | None = None) -> tuple[int, int]:
        """Try every result in the dead-letter folder again (after the destination is back),
        each with ``retries`` (default: destination.retries); returns (delivered, still
        failing). A delivered one is journalled and removed."""
        with self._redeliver_lock:
            return self._redeliver(self.cfg.destination.retries if retries is None else retries)

    def _redeliver(self, retries: int) -> tuple[int, int]:
        ok = bad = 0
        folder = self.cfg.destination.dead_letter
        dest = self.cfg.destination
        for p in sorted(folder.glob("r-*.enc")) if folder.is_dir() else []:
            name = self.spool.move_in(p)
            sid, bundle_id = name[2:].split("-", 1)
            data = self.spool.get(name)
            res = with_retries(self.courier.sender(data),
                               retries=retries, backoff_s=dest.backoff_s, stop=self._halt)
            if res.ok:
                self.spool.log("delivered", s=sid, b=bundle_id)
                self.metrics.inc("delivered")
                self.audit.write("delivered", series=sid, bundle_id=bundle_id,
                                 attempts=res.attempts, redelivered=True)
                self.spool.delete(name)
                ok += 1
            else:
                self.spool.move_out(name, folder)
                bad += 1
        return ok, bad


def serve(config_path: str | Path, *, passphrase: str | None = None) -> None:
    """``edgemed-run serve node.toml``: load the configuration and serve until SIGTERM."""
    Node(load_config(config_path), passphrase=passphrase).serve_forever()
