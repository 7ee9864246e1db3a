"""Change notifications from PostgreSQL (LISTEN/NOTIFY).

Triggers (migration 0005) send ``stepline_task`` when a task row is written,
``stepline_queue`` when a task is queued and ``stepline_output`` when log lines, metrics,
events or artifacts are added. One daemon thread per process holds a connection of
its own that listens to both and counts what arrives per channel; a waiter reads the count,
looks at the store, and, finding nothing, sleeps until the count moves (so a change between its
look and its sleep is never missed).

When the connection is lost (the server restarts), every count moves, so waiters look again,
and ``live`` is false until the thread has listened again: waiters then poll.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

TASK = "stepline_task"
QUEUE = "stepline_queue"
OUTPUT = "stepline_output"
CHANNELS = (TASK, QUEUE, OUTPUT)


class ChangeListener:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._cond = threading.Condition()
        self._seq = dict.fromkeys(CHANNELS, 0)
        self._live = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._subscribers: list[Callable[[str], None]] = []

    def subscribe(self, fn: Callable[[str], None]) -> None:
        """Call ``fn(channel)`` (from the listening thread) whenever ``channel`` may have
        changed; starts listening."""
        self._subscribers.append(fn)
        self._ensure_running()

    def _ensure_running(self) -> None:
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._cond:
            if self._thread is not None and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._live = False
            self._thread = threading.Thread(target=self._run, name="stepline-listen", daemon=True)
            self._thread.start()

    @property
    def live(self) -> bool:
        return self._live

    def seq(self, channel: str) -> int:
        """The count to hand to ``wait`` later; starts the listening thread on first use."""
        self._ensure_running()
        return self._seq[channel]

    def wait(self, channel: str, seq: int, timeout: float) -> bool:
        """Sleep until something arrives on ``channel`` after ``seq`` was read, or ``timeout``
        seconds pass; True when something arrived."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._seq[channel] != seq or self._closed, timeout=timeout
            )

    def _bump(self, *channels: str) -> None:
        with self._cond:
            for ch in channels:
                self._seq[ch] += 1
            self._cond.notify_all()
        for fn in self._subscribers:
            for ch in channels:
                try:
                    fn(ch)
                except Exception:  # a subscriber's failure must not stop the listening
                    pass

    def _run(self) -> None:
        import psycopg

        delay = 0.05
        while not self._closed:
            try:
                with psycopg.connect(self._dsn, autocommit=True, connect_timeout=5) as conn:
                    for ch in CHANNELS:
                        conn.execute(f"LISTEN {ch}")
                    self._live = True
                    self._bump(*CHANNELS)  # anything may have happened while not listening
                    delay = 0.05
                    while not self._closed:
                        for note in conn.notifies(timeout=1.0):
                            self._bump(note.channel)
            except Exception:  # lost or refused: listen again after a pause
                pass
            self._live = False
            self._bump(*CHANNELS)
            if self._closed:
                break
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def close(self) -> None:
        self._closed = True
        self._bump(*CHANNELS)
