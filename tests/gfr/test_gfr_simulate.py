"""The AdEx simulator and GFR-driven synthetic cells."""

import numpy as np
import pytest

from neurodyn.gfr.model import GFR
from neurodyn.gfr.simulate import CELL_TYPES, AdExParams, Protocol, simulate_adex, simulate_adex_cell, simulate_gfr_cell

SHORT = Protocol(long_square_multiples=(0.5, 3.0), long_square_s=(0.05, 0.6, 0.05), ramp_s=(0.05, 0.5, 0.05),
                 noise_segment_s=0.4, noise_gap_s=0.1, noise_repeats=2, sampling_rate_hz=5000.0)


def test_sweep_families_and_identical_noise_repeats():
    sweeps = simulate_adex_cell(CELL_TYPES["tonic"], SHORT, seed=3)
    names = [s.stimulus_name for s in sweeps]
    assert names == ["Long Square"] * 2 + ["Ramp"] + ["Noise 1"] * 2 + ["Noise 2"] * 2
    noise1 = [s for s in sweeps if s.stimulus_name == "Noise 1"]
    np.testing.assert_array_equal(noise1[0].current_pa, noise1[1].current_pa)
    assert not np.array_equal(noise1[0].current_pa, sweeps[-1].current_pa)  # Noise 2 is other noise
    assert not np.array_equal(noise1[0].spike_times_s, noise1[1].spike_times_s)  # intrinsic noise differs
    assert len(sweeps[0].spike_times_s) == 0 and len(sweeps[1].spike_times_s) > 5  # below / above rheobase


def test_rheobase_closed_form():
    p = AdExParams(200, 10, -70, -50, 2, 4, 100, 0, -58)
    assert p.rheobase_pa() == pytest.approx(14 * 18)


def test_adaptation_slows_firing_during_a_step():
    p = CELL_TYPES["adapting"]
    current = np.zeros((1, 10000))
    current[0, :] = 4 * p.rheobase_pa()
    spikes = simulate_adex(p, current, 0.1)[0]  # 1 s at 0.1 ms
    early, late = np.sum(spikes < 0.2), np.sum(spikes > 0.8)
    assert early > 2 * late > 0


def test_gfr_driven_cell_fires_at_the_model_rate():
    model = GFR(bin_size=20)
    params = model.get_params()
    params["g"].update(max_current=400.0, max_firing_rate=0.1, poly_coeff=[0.0, 3.0], b=0.0)
    protocol = Protocol(long_square_multiples=(1.0,), long_square_s=(0.0, 20.0, 0.0), ramp_s=(0.0, 0.1, 0.0),
                        noise_segment_s=0.2, noise_gap_s=0.02, noise_repeats=1, sampling_rate_hz=1000.0)
    sweeps = simulate_gfr_cell(params, 100.0, protocol, seed=0)
    # Pass-through GFR: rate = 0.1 tanh(9 * 100 / 400) spikes/ms for the constant 100 pA step of 20 s.
    expected = 0.1 * np.tanh(9 * 0.25) * 20000
    assert abs(len(sweeps[0].spike_times_s) - expected) < 4 * np.sqrt(expected)
