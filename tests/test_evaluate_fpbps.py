"""fp-bps: bits per spike on the forward-prediction window, checked against nlb_tools' own implementation."""

from __future__ import annotations

import numpy as np
import pytest

from neurodyn.errors import NeurodynError
from neurodyn.evaluate.fpbps import fp_bps

from evaluate_helpers import population

nlb_evaluation = pytest.importorskip("nlb_tools.evaluation", reason="pip install --no-deps nlb-tools")


@pytest.mark.parametrize("seed, forward_bins", [(0, 1), (1, 4), (2, 14)])
def test_matches_nlb_tools_on_the_forward_window_of_every_neuron(seed, forward_bins):
    rates, counts = population(seed)
    heldin, heldout = np.arange(6), np.arange(6, 9)
    window = slice(15 - forward_bins, 15)
    # As nlb_tools.evaluation.evaluate forms fp-bps: held-in and held-out forward arrays side by side.
    expected = nlb_evaluation.bits_per_spike(
        np.dstack([rates[:, window][..., heldin], rates[:, window][..., heldout]]),
        np.dstack([counts[:, window][..., heldin], counts[:, window][..., heldout]]))
    assert fp_bps(rates, counts, forward_bins) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_matches_nlb_tools_with_unobserved_entries():
    rates, counts = population(3)
    counts[0, 12:, 2] = np.nan
    counts[4, 13, 6] = np.nan
    expected = nlb_evaluation.bits_per_spike(rates[:, 11:].copy(), counts[:, 11:].copy())
    assert fp_bps(rates, counts, 4) == pytest.approx(expected, rel=1e-9)


def test_uses_only_the_forward_window():
    rates, counts = population(5)
    spoiled = rates.copy()
    spoiled[:, :10] = 50.0  # terrible predictions of the seen bins do not matter
    assert fp_bps(spoiled, counts, 5) == fp_bps(rates, counts, 5)
    assert fp_bps(rates, counts, 5) > 0  # better than the mean-rate null model


@pytest.mark.parametrize("forward_bins", [0, 15, -1, 2.5, True])
def test_bad_windows(forward_bins):
    rates, counts = population()
    with pytest.raises(NeurodynError, match=r"forward_bins must be a whole number of bins in \[1, 15\)"):
        fp_bps(rates, counts, forward_bins)


def test_shape_mismatch():
    rates, counts = population()
    with pytest.raises(NeurodynError, match="same shape"):
        fp_bps(rates[:, :-1], counts, 2)
