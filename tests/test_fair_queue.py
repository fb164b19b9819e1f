"""The fair queue: deficit round-robin by work between clients, in submission order within one,
positions that match `pop`."""

from __future__ import annotations

import itertools
import random

from deployments.core.fair_queue import QUANTUM, FairQueue

ORDER = itertools.count()


def push(queue: FairQueue, entry: str, client: str, work: float = QUANTUM) -> None:
    queue.push(entry, client, work, next(ORDER))


def drain(queue: FairQueue) -> list[str]:
    return [queue.pop() for _ in range(len(queue))]


def test_one_client_is_served_in_the_order_it_submitted() -> None:
    queue = FairQueue()
    for entry in "abc":
        push(queue, entry, "alice")
    queue.push("early", "alice", QUANTUM, -1)  # restored at its place: before the others
    assert drain(queue) == ["early", "a", "b", "c"]


def test_clients_take_turns_so_a_lone_job_waits_one_round_at_most() -> None:
    queue = FairQueue()
    for i in range(500):
        push(queue, f"bulk{i}", "bulk")
    push(queue, "lone", "lone")
    assert queue.ahead("lone") == (1, QUANTUM)  # behind one of the bulk client's, not 500
    assert drain(queue)[:4] == ["bulk0", "lone", "bulk1", "bulk2"]


def test_a_client_that_joins_waits_for_the_current_round() -> None:
    queue = FairQueue()
    push(queue, "a1", "a")
    push(queue, "a2", "a")
    push(queue, "b1", "b")
    assert queue.pop() == "a1"  # a goes to the back: b, then a
    push(queue, "c1", "c")
    assert drain(queue) == ["b1", "a2", "c1"]


def test_clients_get_equal_work_not_equal_entries() -> None:
    queue = FairQueue()
    for i in range(8):  # 2048 px pictures: 64 quanta each
        push(queue, f"big{i}", "big", 64 * QUANTUM)
    for i in range(200):  # 64 px thumbnails: 1/16 of a quantum
        push(queue, f"thumb{i}", "thumbs", QUANTUM / 16)
    order = drain(queue)
    first_big = order.index("big0")
    # The thumbnails' client is served a quantum's worth each turn while the big picture's
    # lane saves up its credit: all 200 (12.5 quanta) go before the first 2048 px picture
    # that they would otherwise wait behind (64 quanta).
    assert first_big == 200 and order[:200] == [f"thumb{i}" for i in range(200)]


def test_a_large_entry_is_served_once_its_lane_has_saved_the_credit() -> None:
    queue = FairQueue()
    push(queue, "large", "a", 3 * QUANTUM)
    for i in range(10):
        push(queue, f"b{i}", "b")
    order = drain(queue)
    # Each turn credits a lane one quantum: a's third turn covers it, after two of b's.
    assert order.index("large") == 2 and order[:2] == ["b0", "b1"]


def test_positions_and_work_ahead_match_the_order_pop_serves() -> None:
    rng = random.Random(3)
    queue = FairQueue()
    for i in range(300):
        if rng.random() < 0.7 or not len(queue):
            push(queue, f"e{i}", f"c{rng.randrange(6)}", QUANTUM * rng.choice([0.25, 1, 4]))
        elif rng.random() < 0.5:
            queue.pop()
        else:
            queue.remove(rng.choice(queue.order()))
    order = queue.order()
    assert [queue.ahead(e)[0] for e in order] == list(range(len(order)))
    works = [queue.ahead(e)[1] for e in order]
    assert works == sorted(works) and abs(queue.work - sum(queue._work.values())) < 1e-9
    assert drain(queue) == order


def test_the_work_ahead_of_a_new_entry_counts_each_lane_up_to_its_own() -> None:
    queue = FairQueue()
    for i in range(10):
        push(queue, f"a{i}", "a")
    push(queue, "b0", "b")
    # c's first entry: b's one quantum and about one of a's go first.
    assert queue.work_ahead_of_next("c", QUANTUM) == 2 * QUANTUM
    # b's second: its own first, then a's up to b's two.
    assert queue.work_ahead_of_next("b", QUANTUM) == 3 * QUANTUM


def test_removing_an_entry_moves_those_behind_it_up() -> None:
    queue = FairQueue()
    for entry, client in [("a1", "a"), ("b1", "b"), ("a2", "a"), ("b2", "b")]:
        push(queue, entry, client)
    assert queue.ahead("b2")[0] == 3
    queue.remove("b1")
    assert queue.order() == ["a1", "b2", "a2"]  # b2 takes b's turn in the first round
    assert queue.ahead("b2")[0] == 1
    assert queue.queued_by("b") == (1, QUANTUM)
    assert "b1" not in queue
    queue.remove("b2")
    assert queue.queued_by("b") == (0, 0.0)
    assert drain(queue) == ["a1", "a2"]
