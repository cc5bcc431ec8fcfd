"""Exploit rules and the stopping rule."""

import math

import numpy as np

from neurodyn.pbt.population import StoppingRule, best_worker, binary_tournament, truncation


def test_tournament_copies_only_better_opponents():
    metrics = [1.0, 2.0, 3.0, 4.0]
    for seed in range(20):
        copies = binary_tournament(metrics, np.random.default_rng(seed))
        assert 0 not in copies  # the best never copies
        assert all(metrics[source] < metrics[worker] for worker, source in copies.items())


def test_tournament_replaces_every_diverged_worker():
    metrics = [math.nan, 1.0, math.nan, 2.0, math.inf]
    for seed in range(20):
        copies = binary_tournament(metrics, np.random.default_rng(seed))
        for bad in (0, 2, 4):
            assert bad in copies and math.isfinite(metrics[copies[bad]])


def test_tournament_with_everyone_diverged_copies_nothing():
    assert binary_tournament([math.nan, math.nan], np.random.default_rng(0)) == {}


def test_truncation_bottom_copies_top():
    metrics = [5.0, 1.0, 4.0, 2.0, 3.0, 6.0, 7.0, 0.5]
    copies = truncation(metrics, np.random.default_rng(0), fraction=0.25)
    assert set(copies) == {5, 6}  # the two worst
    assert set(copies.values()) <= {7, 1}  # the two best


def test_truncation_replaces_diverged_workers_too():
    copies = truncation([1.0, math.nan, 2.0, 3.0], np.random.default_rng(0), fraction=0.25)
    assert 1 in copies and copies[1] == 0


def test_best_worker():
    assert best_worker([3.0, math.nan, 1.0]) == 2
    assert best_worker([math.nan]) is None


def test_stopping_after_patience_generations_without_a_best():
    rule = StoppingRule(patience=2)
    assert rule.update(10.0) and not rule.should_stop
    assert not rule.update(10.5) and not rule.should_stop
    assert rule.update(9.0)
    assert not rule.update(9.0) and not rule.update(9.5)
    assert rule.should_stop


def test_stopping_counts_small_improvements_as_none():
    rule = StoppingRule(patience=3, percent_change=1.0)
    rule.update(100.0)
    assert not rule.update(99.5)   # 0.5% < 1%
    assert not rule.update(99.2)   # 0.8% below the best of record
    assert rule.update(98.9)       # 1.1% below 100: a real improvement
    assert rule.best == 98.9 and rule.generations_without_best == 0


def test_stopping_treats_a_diverged_generation_as_no_improvement():
    rule = StoppingRule(patience=1)
    rule.update(1.0)
    assert not rule.update(None) and rule.should_stop
