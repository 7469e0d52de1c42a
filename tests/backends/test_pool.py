"""The request / context pool the backends share (``backends.base.Pool``): made on demand, never
more than its bound, each object used by one thread at a time, and a failing factory gives its
slot back."""

from __future__ import annotations

import threading
import time

import pytest

from edgemed_runtime.backends.base import Pool


def test_bound_and_exclusive_use() -> None:
    pool: Pool[list[int]] = Pool(lambda: [], limit=3)
    lock, busy, peak, clash = threading.Lock(), [0], [0], []
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        for _ in range(50):
            with pool.use() as item:
                with lock:
                    busy[0] += 1
                    peak[0] = max(peak[0], busy[0])
                item.append(threading.get_ident())
                time.sleep(0.0005)
                if item[-1] != threading.get_ident():  # another thread used it meanwhile
                    clash.append(item[-1])
                with lock:
                    busy[0] -= 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not clash and peak[0] <= 3 and pool.made <= 3


def test_failing_factory_frees_its_slot() -> None:
    made = []

    def factory() -> object:
        if not made:
            made.append(None)
            raise RuntimeError("first make fails")
        return object()

    pool: Pool[object] = Pool(factory, limit=1)
    with pytest.raises(RuntimeError):
        with pool.use():
            pass
    assert pool.made == 0
    with pool.use() as item:
        assert item is not None
    assert pool.made == 1
