"""A queue that is fair between clients by work: deficit round-robin (Shreedhar and Varghese).

One lane per client, in the order its entries were submitted. Lanes take turns; on its turn a
lane is credited one `QUANTUM` of work and serves entries while its credit covers them, so a
client of thumbnails and a client of full-resolution pictures are served the same work per
round, and with equal entries it is plain round-robin (a lone entry waits for at most one entry
of each other active client). A client that joins takes its turn after those already waiting
in the current round. Positions follow from that order; it is rebuilt lazily, once per change,
because watchers ask for many at a time.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

QUANTUM = 256 * 256 / 1e6  # megapixels a lane is credited a turn: one picture at 256 px


@dataclass
class _Lane:
    entries: list[tuple[Any, str]] = field(default_factory=list)  # (order, id), sorted
    work: float = 0.0  # queued in this lane
    deficit: float = 0.0


class _Round:
    """The lanes and whose turn it is; `copy` of one simulates the order ahead."""

    def __init__(self) -> None:
        self.lanes: OrderedDict[str, _Lane] = OrderedDict()  # first: whose turn it is
        self.credited = False  # the first lane has had its quantum this turn

    def copy(self) -> _Round:
        copied = _Round()
        for client, lane in self.lanes.items():
            copied.lanes[client] = _Lane(list(lane.entries), lane.work, lane.deficit)
        copied.credited = self.credited
        return copied

    def next(self, work: dict[str, float]) -> str | None:
        """The entry served next (crediting lanes until one's credit covers its head)."""
        while self.lanes:
            client, lane = next(iter(self.lanes.items()))
            if not self.credited:
                lane.deficit += QUANTUM
                self.credited = True
            head = lane.entries[0][1]
            if work[head] <= lane.deficit + 1e-12:
                return head
            self.lanes.move_to_end(client)
            self.credited = False
        return None

    def take(self, work: dict[str, float]) -> str:
        entry = self.next(work)
        assert entry is not None
        client, lane = next(iter(self.lanes.items()))
        lane.deficit -= work[entry]
        self._drop(client, lane, 0, work[entry])
        if client in self.lanes and work[lane.entries[0][1]] > lane.deficit + 1e-12:
            self.lanes.move_to_end(client)  # its turn is over: to the back of this round
            self.credited = False
        return entry

    def remove(self, client: str, entry: str, work: float) -> None:
        lane = self.lanes[client]
        index = next(i for i, (_, e) in enumerate(lane.entries) if e == entry)
        self._drop(client, lane, index, work)

    def _drop(self, client: str, lane: _Lane, index: int, work: float) -> None:
        del lane.entries[index]
        lane.work -= work
        if not lane.entries:  # an empty lane leaves the round, and its credit with it
            first = next(iter(self.lanes)) == client
            del self.lanes[client]
            if first:
                self.credited = False


class FairQueue:
    """Entry ids with their work (megapixels) in per-client lanes; `pop` serves by DRR."""

    def __init__(self) -> None:
        self._round = _Round()
        self._client_of: dict[str, str] = {}
        self._work: dict[str, float] = {}
        self._ahead: dict[str, tuple[int, float]] | None = None

    def __len__(self) -> int:
        return len(self._client_of)

    def __contains__(self, entry: str) -> bool:
        return entry in self._client_of

    @property
    def work(self) -> float:
        return sum(lane.work for lane in self._round.lanes.values())

    def push(self, entry: str, client: str, work: float, order: Any) -> None:
        """Queue `entry` in `client`'s lane at its `order` (the submission's; later is last)."""
        lane = self._round.lanes.setdefault(client, _Lane())
        bisect.insort(lane.entries, (order, entry))
        lane.work += work
        self._client_of[entry] = client
        self._work[entry] = work
        self._ahead = None

    def peek(self) -> str | None:
        """The entry `pop` would return."""
        return self._round.next(self._work)

    def pop(self) -> str:
        """The next entry in fair order."""
        entry = self._round.take(self._work)
        self._forget(entry)
        return entry

    def remove(self, entry: str) -> None:
        self._round.remove(self._client_of[entry], entry, self._work[entry])
        self._forget(entry)

    def queued_by(self, client: str) -> tuple[int, float]:
        """How many entries `client` has queued, and their work."""
        lane = self._round.lanes.get(client)
        return (0, 0.0) if lane is None else (len(lane.entries), lane.work)

    def ahead(self, entry: str) -> tuple[int, float]:
        """How many entries will be served before `entry` (0: it is next), and their work."""
        if self._ahead is None:
            self._ahead = {}
            count, work = 0, 0.0
            for served in self.order():
                self._ahead[served] = (count, work)
                count, work = count + 1, work + self._work[served]
        return self._ahead[entry]

    def work_ahead_of_next(self, client: str, work: float) -> float:
        """About the work served before an entry of `work` pushed now by `client`: its own
        lane's, and from each other lane as much as its lane will have had by then."""
        own = self.queued_by(client)[1]
        others = sum(
            min(lane.work, own + work) for name, lane in self._round.lanes.items() if name != client
        )
        return own + others

    def order(self) -> list[str]:
        """Every entry, in the order they will be served (if nothing else arrives)."""
        simulated = self._round.copy()
        return [simulated.take(self._work) for _ in range(len(self))]

    def _forget(self, entry: str) -> None:
        del self._client_of[entry]
        del self._work[entry]
        self._ahead = None
