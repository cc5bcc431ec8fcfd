"""Explained variance (ratio) on fixed arrays, against hand calculations."""

import numpy as np
import pytest

from neurodyn.gfr.evr import explained_variance, explained_variance_ratio


def test_explained_variance_hand_calculation():
    # p = [1, 2, 3]: var 2/3. q = [1, 3, 2]: var 2/3. p - q = [0, -1, 1]: var 2/3.
    # EV = (2/3 + 2/3 - 2/3) / (4/3) = 1/2.
    assert explained_variance([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    # Anti-correlated: p - q = [1, -1] has var 1, var p = var q = 1/4 -> (1/2 - 1) / (1/2) = -1.
    assert explained_variance([1, 0], [0, 1]) == pytest.approx(-1.0)
    assert explained_variance([0, 1, 4], [0, 1, 4]) == pytest.approx(1.0)
    assert np.isnan(explained_variance([2, 2], [5, 5]))


def test_explained_variance_ratio_hand_calculation():
    repeats = np.array([[0.0, 2.0, 4.0], [0.0, 4.0, 2.0]])
    model = np.array([0.0, 3.0, 3.0])
    # PSTH = [0, 3, 3] equals the model, so the ratio is exactly 1.
    assert explained_variance_ratio(repeats, model) == pytest.approx(1.0)
    # Model [0, 2, 4]: EV(r1, m) = 1. For r2 = [0, 4, 2]: var r2 = var m = 8/3, r2 - m = [0, 2, -2]
    # has var 8/3, so EV = 1/2. Mean model EV = 3/4.
    # EV(r, PSTH): var r = 8/3, var PSTH = 2, r1 - PSTH = [0, -1, 1] has var 2/3 -> (14/3 - 2/3)/(14/3) = 6/7,
    # the same for r2. EVR = (3/4) / (6/7) = 7/8.
    assert explained_variance_ratio(repeats, np.array([0.0, 2.0, 4.0])) == pytest.approx(7 / 8)


def test_explained_variance_ratio_accepts_one_prediction_per_repeat():
    repeats = np.array([[0.0, 2.0, 4.0], [0.0, 4.0, 2.0]])
    same = explained_variance_ratio(repeats, np.array([[0.0, 2.0, 4.0], [0.0, 2.0, 4.0]]))
    assert same == pytest.approx(7 / 8)
