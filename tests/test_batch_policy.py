from __future__ import annotations

from deployments.core.batch_policy import BatchDecision, BatchPolicy


def cpu_like() -> BatchPolicy:
    """Per-image time grows with batch size, as measured on these CPUs."""
    policy = BatchPolicy(limit=8, wait_timeout_s=0.01)
    for size, per_image in ((1, 1.0), (2, 1.03), (4, 1.6), (8, 2.0)):
        policy.observe(size, per_image * size, megapixels=size)
    return policy


def gpu_like() -> BatchPolicy:
    policy = BatchPolicy(limit=8, wait_timeout_s=0.01)
    for size, per_image in ((1, 1.0), (2, 0.6), (4, 0.35), (8, 0.2)):
        policy.observe(size, per_image * size, megapixels=size)
    return policy


def test_an_empty_queue_runs_at_once_without_waiting() -> None:
    assert gpu_like().decide(1) == BatchDecision(1, 0.0)
    assert gpu_like().decide(0) == BatchDecision(1, 0.0)


def test_the_cap_is_the_largest_size_not_worse_than_the_best() -> None:
    assert cpu_like().cap == 2  # 2 is within the 5% tolerance of 1; 4 is not
    assert gpu_like().cap == 8


def test_batch_size_follows_the_queue_up_to_the_cap() -> None:
    policy = gpu_like()
    assert policy.decide(3) == BatchDecision(3, 0.01)
    assert policy.decide(50) == BatchDecision(8, 0.01)
    assert cpu_like().decide(50) == BatchDecision(2, 0.01)


def test_the_cap_never_exceeds_the_configured_limit() -> None:
    policy = BatchPolicy(limit=4, wait_timeout_s=0.0)
    policy.observe(8, 0.8, megapixels=8)
    policy.observe(1, 1.0, megapixels=1)
    assert policy.cap == 4


def test_without_measurements_batches_hold_one_image() -> None:
    assert BatchPolicy(limit=8, wait_timeout_s=0.01).decide(5) == BatchDecision(1, 0.01)


def test_times_are_normalized_per_megapixel() -> None:
    policy = BatchPolicy(limit=8, wait_timeout_s=0.0)
    policy.observe(1, 1.0, megapixels=1.0)  # big pictures
    policy.observe(2, 0.5, megapixels=0.5)  # two small ones at the same rate
    assert policy.cap == 2


def test_real_batches_refine_the_start_up_curve() -> None:
    policy = gpu_like()
    for _ in range(30):  # size 8 turns out slow under real traffic
        policy.observe(8, 8 * 3.0, megapixels=8)
    assert policy.cap == 4


def test_a_size_judged_slow_regains_credit_and_is_tried_again() -> None:
    policy = cpu_like()
    assert policy.cap == 2
    for _ in range(400):
        policy.observe(1, 1.0, megapixels=1)
    assert policy.cap == 8
    policy.observe(8, 16.0, megapixels=8)  # tried and still slow: 8 drops out, 4 is next
    assert policy.cap == 4


def test_fixed_batching_always_waits_for_a_full_batch() -> None:
    policy = BatchPolicy(limit=4, wait_timeout_s=1.0, adaptive=False)
    assert policy.decide(1) == BatchDecision(4, 1.0)
    assert policy.decide(9) == BatchDecision(4, 1.0)


def test_sizes_unseen_in_real_traffic_are_scaled_by_how_much_slower_it_runs() -> None:
    policy = BatchPolicy(limit=8, wait_timeout_s=0.01)
    for size, per_image in ((1, 1.0), (2, 1.3), (4, 1.6), (8, 2.0)):  # quiet start-up, CPU-like
        policy.calibrate(size, per_image * size, megapixels=size)
    assert policy.cap == 1
    for _ in range(5):  # real batches of 1 run twice as slowly as at start-up
        policy.observe(1, 2.0, megapixels=1)
    assert policy.curve[8] == 4.0  # not the quiet 2.0, which would look better than 1's 2.0
    assert policy.cap == 1
