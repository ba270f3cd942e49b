"""The client's inbox: events for the application, durable until it acknowledges them.

Exactly-once delivery to the application rests on two rules. An event is stored in the same
write as the state change that produced it (a received message's key consumed, a commit
merged, a group joined), so a crash leaves either both or neither. And an event leaves the
inbox only when the application acknowledges it, so a crash before that delivers it again on
the next start, with the same ``id``, and never after.

Events are kept under ``inbox/<id>`` (ids increase, zero-padded so the store's key order is
their order); ``inbox-next`` holds the next id, so ids are never reused, also once the inbox
has been emptied.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import replace

from mlspy.client.events import Event, decode, encode
from mlspy.storage import Store, Write
from mlspy.storage.base import delete

INBOX = "inbox/"
NEXT = "inbox-next"


def _key(event_id: int) -> str:
    return f"{INBOX}{event_id:020d}"


class Inbox:
    """The unacknowledged events of one client's store, in order.

    A change that produces events stages them (:meth:`stage`: the writes to add to its batch,
    and the events numbered), writes its batch, and then publishes them (:meth:`published`);
    if the batch fails they are simply not published, and their ids are used again."""

    def __init__(self, store: Store) -> None:
        self._store = store
        stored = store.get(NEXT)
        self._next = int(stored.value) if stored is not None else 1
        self._next_version = stored.version if stored is not None else None
        self._ready: deque[Event] = deque()  # stored, not yet handed to the application
        for key in store.keys(INBOX):
            entry = store.get(key)
            if entry is not None:
                self._ready.append(decode(entry.value))
        self._waiters: list[asyncio.Future[None]] = []  # get() calls waiting for an event

    def stage(self, events: Sequence[Event]) -> tuple[dict[str, Write], list[Event]]:
        """The writes that store ``events`` (to add to the batch of the change that made
        them), and the events with their ids."""
        numbered = [replace(e, id=self._next + i) for i, e in enumerate(events)]
        writes: dict[str, Write] = {_key(e.id): (encode(e), None) for e in numbered}
        if numbered:
            writes[NEXT] = (str(self._next + len(numbered)).encode(), self._next_version)
        return writes, numbered

    def published(self, numbered: Sequence[Event]) -> None:
        """The batch holding staged ``numbered`` events is durable: hand them out."""
        if not numbered:
            return
        self._next = numbered[-1].id + 1
        stored = self._store.get(NEXT)
        self._next_version = stored.version if stored is not None else None
        self._ready.extend(numbered)
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def put_back(self, event: Event) -> None:
        """An event handed out but not acknowledged: the next one handed out again."""
        if self._store.get(_key(event.id)) is not None and all(
            e.id != event.id for e in self._ready
        ):
            self._ready.appendleft(event)
            self._wake()

    async def get(self) -> Event:
        """The oldest event not yet handed out in this process (waits for one)."""
        while not self._ready:
            # A future of the running loop, not one Event for the inbox's life: a client
            # may be used from one event loop, then another.
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return self._ready.popleft()

    def get_nowait(self) -> Event | None:
        return self._ready.popleft() if self._ready else None

    def ack(self, event: Event | int) -> None:
        """The application is done with ``event``: it is never delivered again."""
        event_id = event if isinstance(event, int) else event.id
        delete(self._store, _key(event_id))
        if any(e.id == event_id for e in self._ready):  # put back, then acknowledged
            self._ready = deque(e for e in self._ready if e.id != event_id)

    def unacknowledged(self) -> list[Event]:
        """Every event in the inbox (handed out or not), oldest first."""
        out = []
        for key in self._store.keys(INBOX):
            entry = self._store.get(key)
            if entry is not None:
                out.append(decode(entry.value))
        return out


class Staged:
    """Events staged for one batch: ``writes(events, more)`` gives the batch's extra writes,
    ``done()`` publishes the events once the batch is durable."""

    def __init__(self, inbox: Inbox) -> None:
        self._inbox = inbox
        self._numbered: list[Event] = []

    def writes(
        self, events: Sequence[Event], more: Mapping[str, Write] | None = None
    ) -> dict[str, Write]:
        writes, self._numbered = self._inbox.stage(events)
        writes.update(more or {})
        return writes

    def done(self) -> None:
        self._inbox.published(self._numbered)
        self._numbered = []


__all__ = ["Event", "Inbox", "Staged"]
