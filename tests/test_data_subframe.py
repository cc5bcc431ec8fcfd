"""Sub-frame binning: each frame's event lands in the sub-bin of the neuron's scan time, NaN elsewhere."""

import numpy as np
import pytest

from neurodyn.data.subframe import bin_subframes, subframe_bin_of
from neurodyn.errors import NeurodynError

nan = np.nan


def test_hand_made_example():
    # 1 trial, 2 frames, 3 neurons scanned at 10%, 50% and 99% of the frame; K = 4 sub-bins.
    events = np.array([[[1.0, 0.0, 2.5], [0.0, 3.0, 0.5]]])
    binned = bin_subframes(events, np.array([0.1, 0.5, 0.99]), 4)
    expected = np.array([[
        [1.0, nan, nan],  # frame 0, sub-bin 0: neuron 0 (0.1 * 4 = 0.4)
        [nan, nan, nan],
        [nan, 0.0, nan],  # sub-bin 2: neuron 1 (0.5 * 4 = 2)
        [nan, nan, 2.5],  # sub-bin 3: neuron 2 (0.99 * 4 = 3.96)
        [0.0, nan, nan],  # frame 1
        [nan, nan, nan],
        [nan, 3.0, nan],
        [nan, nan, 0.5],
    ]])
    np.testing.assert_array_equal(binned, expected)
    np.testing.assert_array_equal(subframe_bin_of(np.array([0.0, 0.24999, 0.25, 0.999999]), 4), [0, 0, 1, 3])


def test_one_observation_per_frame_and_neuron_and_unrecorded_frames_stay_nan():
    rng = np.random.default_rng(0)
    events = rng.gamma(1.0, 1.0, (3, 7, 6)) * (rng.random((3, 7, 6)) < 0.4)
    events[1, 2, 4] = nan  # a frame that was not recorded
    offsets = rng.random(6)
    binned = bin_subframes(events, offsets, 5).reshape(3, 7, 5, 6)
    observed = ~np.isnan(binned)
    counts = observed.sum(axis=2)
    assert counts[1, 2, 4] == 0 and counts.sum() == events.size - 1
    assert np.all(np.delete(counts.reshape(-1), np.ravel_multi_index((1, 2, 4), (3, 7, 6))) == 1)
    np.testing.assert_array_equal(np.nansum(binned, axis=2), np.nan_to_num(events))


def test_one_subframe_bin_is_the_identity():
    events = np.random.default_rng(1).random((2, 4, 3))
    np.testing.assert_array_equal(bin_subframes(events, np.array([0.0, 0.3, 0.9]), 1), events)


@pytest.mark.parametrize("events, offsets, k, message", [
    (np.array([[[0.5, -0.1]]]), np.array([0.1, 0.2]), 2, "1 negative value"),
    (np.full((2, 3, 2), nan), np.array([0.1, 0.2]), 2, "all NaN"),
    (np.zeros((2, 3)), np.array([0.1, 0.2, 0.3]), 2, r"expected non-empty \(trials, frames, neurons\)"),
    (np.zeros((1, 3, 2)), np.array([0.1, 1.0]), 2, r"frame fractions in \[0, 1\)"),
    (np.zeros((1, 3, 2)), np.array([0.1]), 2, r"expected \(2,\), one per neuron"),
    (np.zeros((1, 3, 2)), np.array([0.1, 0.2]), 0, "integer >= 1"),
])
def test_bad_inputs_give_clear_errors(events, offsets, k, message):
    with pytest.raises(NeurodynError, match=message):
        bin_subframes(events, offsets, k, source="session.h5 key 'events'")


def test_collapse_subframes_inverts_bin_subframes():
    from neurodyn.data.subframe import bin_subframes, collapse_subframes

    rng = np.random.default_rng(3)
    events = rng.gamma(1.0, 1.0, (2, 5, 4)) * (rng.random((2, 5, 4)) < 0.5)
    events[1, 2, 3] = np.nan  # a frame that was not recorded stays unobserved
    offsets = np.array([0.1, 0.3, 0.6, 0.95])
    binned = bin_subframes(events, offsets, 4)
    np.testing.assert_array_equal(collapse_subframes(binned, 4), events)


def test_frames_to_subframes_interpolates_between_frame_centres():
    from neurodyn.data.subframe import frames_to_subframes

    # 2 sub-bins per frame: frame centres at sub-bin positions 1.0 and 3.0, sub-bin centres at
    # 0.5, 1.5, 2.5, 3.5 -> held, 1/4 and 3/4 of the way between the frames, held.
    values = np.array([[[0.0, 10.0], [4.0, 2.0]]])  # (1 trial, 2 frames, 2 neurons)
    expected = np.array([[[0.0, 10.0], [1.0, 8.0], [3.0, 4.0], [4.0, 2.0]]])
    np.testing.assert_allclose(frames_to_subframes(values, 2), expected)
    # one sub-bin per frame leaves the values as they are
    np.testing.assert_array_equal(frames_to_subframes(values, 1), values)


def test_frame_rate_dataset_is_the_frame_rate_view_of_a_subframe_file():
    from neurodyn.data.seed_format import NeuralDataset
    from neurodyn.data.subframe import bin_subframes, frame_rate_dataset

    events = np.arange(1.0, 13.0).reshape(1, 4, 3)  # (1 trial, 4 frames, 3 neurons)
    subframe = NeuralDataset(data=bin_subframes(events, np.array([0.1, 0.5, 0.9]), 2), condition=np.array([7]),
                             attrs={"subframe_bins": 2, "frame_rate_hz": 25.0, "event_delay_ms": 31.5})
    frames = frame_rate_dataset(subframe)
    np.testing.assert_array_equal(frames.data, events)
    np.testing.assert_array_equal(frames.condition, [7])
    assert frames.attrs["bin_ms"] == 1000.0 / 25.0 and frames.attrs["event_delay_ms"] == 31.5
