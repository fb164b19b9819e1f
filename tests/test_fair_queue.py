"""The fair queue: round-robin between clients, FIFO within one, positions that match `pop`."""

from __future__ import annotations

import random

from deployments.core.fair_queue import FairQueue


def drain(queue: FairQueue) -> list[str]:
    return [queue.pop() for _ in range(len(queue))]


def test_one_client_is_served_first_in_first_out() -> None:
    queue = FairQueue()
    for entry in "abc":
        queue.push(entry, "alice")
    assert drain(queue) == ["a", "b", "c"]


def test_clients_take_turns_so_a_lone_job_waits_one_round_at_most() -> None:
    queue = FairQueue()
    for i in range(500):
        queue.push(f"bulk{i}", "bulk")
    queue.push("lone", "lone")
    assert queue.position("lone") == 1  # behind one of the bulk client's, not 500
    assert drain(queue)[:4] == ["bulk0", "lone", "bulk1", "bulk2"]


def test_a_client_that_joins_waits_for_the_current_round() -> None:
    queue = FairQueue()
    queue.push("a1", "a")
    queue.push("a2", "a")
    queue.push("b1", "b")
    assert queue.pop() == "a1"  # a goes to the back: b, then a
    queue.push("c1", "c")
    assert drain(queue) == ["b1", "a2", "c1"]


def test_positions_and_next_positions_match_the_order_pop_serves() -> None:
    rng = random.Random(3)
    queue = FairQueue()
    for i in range(300):
        if rng.random() < 0.7 or not len(queue):
            client = f"c{rng.randrange(6)}"
            predicted = queue.position_of_next(client)
            queue.push(f"e{i}", client)
            assert queue.position(f"e{i}") == predicted
        elif rng.random() < 0.5:
            queue.pop()
        else:
            queue.remove(rng.choice(queue.order()))
    order = queue.order()
    assert [queue.position(e) for e in order] == list(range(len(order)))
    assert drain(queue) == order


def test_removing_an_entry_moves_those_behind_it_up() -> None:
    queue = FairQueue()
    for entry, client in [("a1", "a"), ("b1", "b"), ("a2", "a"), ("b2", "b")]:
        queue.push(entry, client)
    assert queue.position("b2") == 3
    queue.remove("b1")
    assert queue.order() == ["a1", "b2", "a2"]  # b2 takes b's turn in the first round
    assert queue.position("b2") == 1
    assert queue.queued_by("b") == 1
    assert "b1" not in queue
    queue.remove("b2")
    assert queue.queued_by("b") == 0
    assert drain(queue) == ["a1", "a2"]
