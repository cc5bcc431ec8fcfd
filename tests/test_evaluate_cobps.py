"""co-bps: bits per spike on held-out neurons, checked against nlb_tools' own implementation."""

from __future__ import annotations

import numpy as np
import pytest

from neurodyn.errors import NeurodynError
from neurodyn.evaluate.cobps import co_bps

from evaluate_helpers import population

nlb_evaluation = pytest.importorskip("nlb_tools.evaluation", reason="pip install --no-deps nlb-tools")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_nlb_tools_bits_per_spike_on_heldout_columns(seed):
    rates, counts = population(seed)
    heldout = np.array([1, 4, 7, 8])
    expected = nlb_evaluation.bits_per_spike(rates[..., heldout].copy(), counts[..., heldout].copy())
    assert co_bps(rates, counts, heldout) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_matches_nlb_tools_with_unobserved_entries():
    rates, counts = population(3)
    counts[0, :5, 2] = np.nan
    counts[4, 3, 6] = np.nan
    heldout = [2, 6]
    expected = nlb_evaluation.bits_per_spike(rates[..., heldout].copy(), counts[..., heldout].copy())
    assert co_bps(rates, counts, heldout) == pytest.approx(expected, rel=1e-9)


def test_uses_only_the_heldout_neurons():
    rates, counts = population(5)
    heldout = [0, 3]
    spoiled = rates.copy()
    spoiled[..., [1, 2, 4, 5, 6, 7, 8]] = 50.0  # terrible held-in predictions do not matter
    assert co_bps(spoiled, counts, heldout) == co_bps(rates, counts, heldout)
    assert co_bps(rates, counts, heldout) > 0  # better than the mean-rate null model


@pytest.mark.parametrize("heldout, message", [
    ([], "non-empty"), ([0, 9], r"in \[0, 9\)"), ([1, 1], "distinct"), ([0.5], "integers"),
    (list(range(9)), "at least one must be held in"),
])
def test_bad_heldout_indices(heldout, message):
    rates, counts = population()
    with pytest.raises(NeurodynError, match=message):
        co_bps(rates, counts, heldout)


def test_shape_mismatch():
    rates, counts = population()
    with pytest.raises(NeurodynError, match="same shape"):
        co_bps(rates[:, :-1], counts, [0])
