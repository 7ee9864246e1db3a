"""Wake-ups for waiting requests (long polls, event streams).

Every write a route makes calls ``notify(topic)``; a waiter takes the topic's current
``asyncio.Event`` *before* it looks at the store and awaits it after finding nothing, so no
change between its look and its wait is missed. Writes that do not go through this server
(another server on the same database, an embedded client) are seen by waiters looking again
every ``EXTERNAL_POLL`` seconds, or, when the database notifies changes (PostgreSQL), at once:
the app forwards its notifications here and waiters look again only every
``NOTIFIED_POLL`` seconds, in case one was lost.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

T = TypeVar("T")

#: task records changed (status, queue, fields)
TASKS = "tasks"
#: something was put on a queue
QUEUES = "queues"
#: log lines, metrics, events or artifacts were added
OUTPUT = "output"
TOPICS = (TASKS, QUEUES, OUTPUT)

#: how often a waiter looks again for changes made by writers other than this server
EXTERNAL_POLL = 0.5
#: the same, when the database's notifications are forwarded (``Hub.forwarded``)
NOTIFIED_POLL = 5.0


class Hub:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, asyncio.Event] = {}
        self._lock = threading.Lock()
        self.external_poll = EXTERNAL_POLL

    def forwarded(self) -> None:
        """Say that other writers' changes are notified here (the database tells)."""
        self.external_poll = NOTIFIED_POLL

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._events = {t: asyncio.Event() for t in TOPICS}

    def notify(self, *topics: str) -> None:
        """Wake the waiters on ``topics`` (callable from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._fire, topics)
        except RuntimeError:  # the loop closed meanwhile
            pass

    def _fire(self, topics: tuple[str, ...]) -> None:
        for topic in topics:
            old = self._events.get(topic)
            self._events[topic] = asyncio.Event()
            if old is not None:
                old.set()

    def snapshot(self, *topics: str) -> list[asyncio.Event]:
        """The events the next notify of any of ``topics`` will set; take them before
        looking at the store, then ``sleep`` on them."""
        return [self._events[t] for t in topics if t in self._events]

    @staticmethod
    async def sleep(events: list[asyncio.Event], timeout: float) -> bool:
        """Wait until one of ``events`` is set or ``timeout`` passes; True if woken."""
        if any(e.is_set() for e in events):
            return True
        waits = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            done, _ = await asyncio.wait(
                waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for fut in waits:
                fut.cancel()
        return bool(done)

    async def wait_for(self, topics: tuple[str, ...], look: Callable[[], T], timeout: float) -> T:
        """Run ``look`` (in a worker thread) until it returns something truthy or
        ``timeout`` seconds pass; between looks, sleep until a notify of ``topics``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            events = self.snapshot(*topics)
            found = await run_in_threadpool(look)
            left = deadline - loop.time()
            if found or left <= 0:
                return found
            await self.sleep(events, min(left, self.external_poll))
