"""A queue that is fair between clients: one lane per client, served round-robin, FIFO within.

A client with 500 entries and a client with one take turns, so the lone entry waits for at most
one entry of each other active client. A client that joins takes its turn after those already
waiting in the current round. Positions (how many entries will be served first) follow from
that order; it is rebuilt lazily, once per change, because watchers ask for many at a time.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from itertools import zip_longest


class FairQueue:
    """Entry ids in per-client lanes; `pop` takes the head of the next lane in turn."""

    def __init__(self) -> None:
        self._lanes: OrderedDict[str, deque[str]] = OrderedDict()  # first: the next to serve
        self._client_of: dict[str, str] = {}
        self._positions: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self._client_of)

    def __contains__(self, entry: str) -> bool:
        return entry in self._client_of

    def push(self, entry: str, client: str) -> None:
        self._lanes.setdefault(client, deque()).append(entry)
        self._client_of[entry] = client
        self._positions = None

    def peek(self) -> str | None:
        """The entry `pop` would return."""
        if not self._lanes:
            return None
        return next(iter(self._lanes.values()))[0]

    def pop(self) -> str:
        """The next entry in fair order; its client goes to the back of the round."""
        client, lane = next(iter(self._lanes.items()))
        entry = lane.popleft()
        if lane:
            self._lanes.move_to_end(client)
        else:
            del self._lanes[client]
        del self._client_of[entry]
        self._positions = None
        return entry

    def remove(self, entry: str) -> None:
        client = self._client_of.pop(entry)
        lane = self._lanes[client]
        lane.remove(entry)
        if not lane:
            del self._lanes[client]
        self._positions = None

    def queued_by(self, client: str) -> int:
        return len(self._lanes.get(client, ()))

    def position(self, entry: str) -> int:
        """How many entries will be served before `entry` (0: it is next)."""
        if self._positions is None:
            self._positions = {e: i for i, e in enumerate(self.order())}
        return self._positions[entry]

    def position_of_next(self, client: str) -> int:
        """The position an entry pushed now by `client` would have."""
        lanes = list(self._lanes.items())
        index = len(self._lanes.get(client, ()))  # its index in its own lane
        turn = next((i for i, (c, _) in enumerate(lanes) if c == client), len(lanes))
        before = sum(min(len(lane), index + 1) for _, lane in lanes[:turn])
        after = sum(min(len(lane), index) for _, lane in lanes[turn + 1 :])
        return before + index + after

    def order(self) -> list[str]:
        """Every entry, in the order they will be served (if nothing else arrives)."""
        rounds = zip_longest(*self._lanes.values())
        return [entry for turn in rounds for entry in turn if entry is not None]
