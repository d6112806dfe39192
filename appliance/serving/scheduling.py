"""Who gets a model's next free slot: priority classes, a fair share between keys, and a
reserved share so that no class waits for ever.

A model's :class:`~appliance.serving.dispatch.Dispatcher` queues a request only when every
slot is taken; each slot that frees goes to the request this queue names next:

1. **Classes.** A waiting request of a higher class comes first: ``interactive``, then
   ``standard``, then ``batch`` (the key's ``priority``; requests without a key are
   ``standard``).
2. **A reserved share against starvation.** A lower class that has requests waiting is
   passed over at most :data:`PASSED_OVER_AT_MOST` times in a row: the next slot is its
   own. While interactive requests keep coming, waiting batch requests still get one
   slot in ten, and a batch backlog costs interactive requests at most that tenth. (A
   share of slots rather than aging: it holds however long requests take, and a class
   that has nothing waiting reserves nothing.)
3. **A fair share between keys.** Within a class, keys take turns, one request each
   (deficit round robin with a quantum of one request): a key with 20 requests waiting
   and one with 2 are served alternately until the second's are done. A key's own
   requests keep their order.

A full queue refuses the least deserving request, not necessarily the newcomer
(:meth:`FairQueue.make_room`): a request of a higher class, or of a key with fewer
requests waiting, takes the place of the newest request of the lowest class's busiest
key, which gets the 429 instead.

Each process schedules its own queues (``server.processes`` above 1: one scheduler per
process, as each has its own workers).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Collection, Iterator
from typing import Final, TypeVar

from appliance.backends.base import Worker
from appliance.config import Priority

# Classes, most urgent first; a class's rank is its index.
PRIORITIES: Final = ("interactive", "standard", "batch")
RANK: Final[dict[Priority, int]] = {"interactive": 0, "standard": 1, "batch": 2}
PASSED_OVER_AT_MOST: Final = 9

W = TypeVar("W")


class Ticket:
    """A request waiting for a slot; its future gets a worker, None at the queue timeout,
    or an error (the model failed to load, a fuller queue refused it)."""

    __slots__ = ("exclude", "future", "key", "rank")

    def __init__(
        self,
        future: asyncio.Future[Worker | None],
        exclude: Collection[Worker],
        rank: int,
        key: str,
    ) -> None:
        self.future = future
        self.exclude = exclude
        self.rank = rank
        self.key = key


class FairQueue:
    """The waiting requests of one model, and the order they get slots in (see the
    module docstring). Its one writer is the model's dispatcher."""

    def __init__(self) -> None:
        # Per class, each key's waiting tickets; a dict's order is the keys' turn order.
        self._classes: tuple[dict[str, deque[Ticket]], ...] = tuple({} for _ in PRIORITIES)
        self._sizes = [0] * len(PRIORITIES)
        self._passed = [0] * len(PRIORITIES)  # slots that went to a higher class meanwhile
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[Ticket]:
        for keys in self._classes:
            for tickets in keys.values():
                yield from tickets

    def ahead(self, rank: int) -> int:
        """Requests waiting that a new request of class ``rank`` would wait behind: those
        of its class and the classes above (an upper bound: turns between keys may put
        it before some of its own class)."""
        return sum(self._sizes[: rank + 1])

    def push(self, ticket: Ticket) -> None:
        """Queue ``ticket`` behind its key's other requests."""
        keys = self._classes[ticket.rank]
        tickets = keys.get(ticket.key)
        if tickets is None:
            keys[ticket.key] = tickets = deque()
        tickets.append(ticket)
        self._sizes[ticket.rank] += 1
        self._size += 1

    def remove(self, ticket: Ticket) -> bool:
        """Take ``ticket`` out (timed out, cancelled); False if it was not queued."""
        tickets = self._classes[ticket.rank].get(ticket.key)
        if tickets is None or ticket not in tickets:
            return False
        tickets.remove(ticket)
        self._dropped(ticket)
        return True

    def take(self, pick: Callable[[Ticket], W | None]) -> tuple[Ticket, W] | None:
        """The next ticket by the rules that ``pick`` finds a worker for, out of the queue,
        with that worker; None if there is none (tickets whose future is settled are
        skipped: their owner takes them out)."""
        for rank in self._order():
            keys = self._classes[rank]
            for key, tickets in keys.items():
                for ticket in tickets:
                    if ticket.future.done():
                        continue
                    worker = pick(ticket)
                    if worker is not None:
                        tickets.remove(ticket)
                        del keys[key]
                        if tickets:
                            keys[key] = tickets  # its next request waits for its next turn
                        self._dropped(ticket)
                        self._served(rank)
                        return ticket, worker
        return None

    def make_room(self, newcomer: Ticket) -> Ticket | None:
        """The queue is full: the ticket that ``newcomer`` displaces, out of the queue (the
        newest of the lowest class's busiest key, if ``newcomer`` is of a higher class or
        its key has fewer waiting by two or more), or None: the newcomer is refused."""
        rank = next((r for r in reversed(range(len(PRIORITIES))) if self._sizes[r]), None)
        if rank is None or rank < newcomer.rank:
            return None
        keys = self._classes[rank]
        busiest = max(keys, key=lambda k: len(keys[k]))
        own = len(keys.get(newcomer.key, ())) if rank == newcomer.rank else -1
        if busiest == newcomer.key or (rank == newcomer.rank and own + 1 >= len(keys[busiest])):
            return None
        victim = keys[busiest].pop()
        if not keys[busiest]:
            del keys[busiest]
        self._dropped(victim)
        return victim

    def clear(self) -> list[Ticket]:
        """Every ticket, out of the queue."""
        out = list(self)
        for keys in self._classes:
            keys.clear()
        self._sizes = [0] * len(PRIORITIES)
        self._passed = [0] * len(PRIORITIES)
        self._size = 0
        return out

    def _order(self) -> list[int]:
        """The classes to serve from, in order: the highest waiting one, unless a lower
        one has been passed over its share of times (then that one first)."""
        waiting = [r for r, size in enumerate(self._sizes) if size]
        due = [r for r in waiting[1:] if self._passed[r] >= PASSED_OVER_AT_MOST]
        if due:
            return [due[0], *(r for r in waiting if r != due[0])]
        return waiting

    def _served(self, rank: int) -> None:
        self._passed[rank] = 0
        for lower in range(rank + 1, len(PRIORITIES)):
            if self._sizes[lower]:
                self._passed[lower] += 1

    def _dropped(self, ticket: Ticket) -> None:
        rank = ticket.rank
        keys = self._classes[rank]
        if not keys.get(ticket.key, True):
            del keys[ticket.key]
        self._sizes[rank] -= 1
        self._size -= 1
        if not self._sizes[rank]:
            self._passed[rank] = 0
