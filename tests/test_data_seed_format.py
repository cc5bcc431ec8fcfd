"""The user's h5 format: orientation, round trip, validation messages, train/valid split."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from neurodyn.observation.registry import read_dataset_for
from neurodyn.data.seed_format import (
    NeuralDataset,
    data_file_name,
    read_dataset,
    split_train_valid_test,
    split_trials,
    write_dataset,
)
from neurodyn.errors import NeurodynError

NEURONS, SAMPLES, TRIALS, LATENTS = 5, 7, 6, 3


def make_dataset(seed: int = 0) -> NeuralDataset:
    """Small trials-first dataset with distinct values everywhere and a few NaN points."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.1, 3.0, (TRIALS, SAMPLES, NEURONS)).astype(np.float32)
    data = rng.poisson(truth).astype(np.float32)
    data[0, 1, 2] = np.nan
    data[4, 6, 0] = np.nan
    return NeuralDataset(
        data=data,
        truth=truth,
        latents=rng.standard_normal((TRIALS, SAMPLES, LATENTS)).astype(np.float32),
        condition=np.array([0, 0, 1, 1, 2, 2]),
        attrs={"bin_ms": 20.0, "keep": 4, "generator": "test"},
    )


def write_raw(path, **arrays):
    """Write arrays exactly as given (file layout), bypassing write_dataset's checks."""
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)


def file_layout(array):
    return np.transpose(array, (2, 1, 0))


# --- write / read -----------------------------------------------------------------------------


def test_write_stores_file_layout_neurons_samples_trials(tmp_path):
    dataset = make_dataset()
    path = tmp_path / "run1_data.h5"
    write_dataset(path, dataset)
    with h5py.File(path, "r") as f:
        assert f["data"].shape == (NEURONS, SAMPLES, TRIALS)
        assert f["truth"].shape == (NEURONS, SAMPLES, TRIALS)
        assert f["latents"].shape == (LATENTS, SAMPLES, TRIALS)
        assert f["condition"].shape == (TRIALS,)
        # element (neuron n, sample t, trial k) of the file is element (k, t, n) in memory
        np.testing.assert_array_equal(f["truth"][3, 5, 1], dataset.truth[1, 5, 3])
        assert np.isnan(f["data"][2, 1, 0])
        assert f.attrs["bin_ms"] == 20.0


def test_round_trip_is_exact_including_nan_positions_and_attrs(tmp_path):
    dataset = make_dataset()
    path = tmp_path / "run1_data.h5"
    write_dataset(path, dataset)
    back = read_dataset(path)
    np.testing.assert_array_equal(back.data, dataset.data)  # NaN compare equal position-wise here
    np.testing.assert_array_equal(np.isnan(back.data), np.isnan(dataset.data))
    np.testing.assert_array_equal(back.truth, dataset.truth)
    np.testing.assert_array_equal(back.latents, dataset.latents)
    np.testing.assert_array_equal(back.condition, dataset.condition)
    assert back.data.dtype == np.float32 and back.condition.dtype == np.int64
    assert back.attrs == dataset.attrs
    assert back.source == str(path)
    assert (back.num_trials, back.num_samples, back.num_neurons) == (TRIALS, SAMPLES, NEURONS)


def test_read_transposes_a_file_written_by_another_tool(tmp_path):
    data = np.arange(NEURONS * SAMPLES * TRIALS, dtype=np.float64).reshape(NEURONS, SAMPLES, TRIALS)
    path = tmp_path / "x_data.h5"
    write_raw(path, data=data)
    dataset = read_dataset(path)
    assert dataset.data.shape == (TRIALS, SAMPLES, NEURONS)
    assert dataset.data[4, 2, 1] == data[1, 2, 4]
    assert dataset.truth is None and dataset.latents is None and dataset.condition is None


def test_matlab_style_condition_row_vector_is_accepted(tmp_path):
    path = tmp_path / "x_data.h5"
    write_raw(path, data=np.ones((NEURONS, SAMPLES, TRIALS)), condition=np.array([[1.0, 1, 2, 2, 3, 3]]))
    np.testing.assert_array_equal(read_dataset(path).condition, [1, 1, 2, 2, 3, 3])


def test_observed_mask_and_subset():
    dataset = make_dataset()
    mask = dataset.observed_mask()
    assert mask.shape == dataset.data.shape and mask.dtype == bool
    assert not mask[0, 1, 2] and mask.sum() == mask.size - 2
    part = dataset.subset(np.array([4, 1]))
    assert part.num_trials == 2
    np.testing.assert_array_equal(part.data[0], dataset.data[4])
    np.testing.assert_array_equal(part.truth[1], dataset.truth[1])
    np.testing.assert_array_equal(part.latents[0], dataset.latents[4])
    np.testing.assert_array_equal(part.condition, [2, 0])


def test_data_file_name_follows_run_name():
    assert data_file_name("run001") == "run001_data.h5"


# --- validation errors ------------------------------------------------------------------------


def expect_error(path, *fragments, observation="poisson"):
    with pytest.raises(NeurodynError) as caught:
        read_dataset(path) if observation is None else read_dataset_for(path, observation)
    message = str(caught.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope_data.h5", "not found")


def test_not_an_h5_file(tmp_path):
    path = tmp_path / "text_data.h5"
    path.write_text("neuron,sample,trial\n")
    expect_error(path, "not an HDF5 file")


def test_truncated_h5_file(tmp_path):
    path = tmp_path / "cut_data.h5"
    write_dataset(path, make_dataset())
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 3])
    expect_error(path, "cannot read")


def test_missing_data_key_lists_keys_present(tmp_path):
    path = tmp_path / "x_data.h5"
    write_raw(path, spikes=np.ones((NEURONS, SAMPLES, TRIALS)))
    expect_error(path, "missing key 'data'", "spikes")


@pytest.mark.parametrize("shape", [(NEURONS, SAMPLES), (2, NEURONS, SAMPLES, TRIALS)])
def test_data_of_wrong_rank(tmp_path, shape):
    path = tmp_path / "x_data.h5"
    write_raw(path, data=np.ones(shape))
    expect_error(path, "key 'data'", f"{len(shape)} dimensions", "(num_neurons, num_samples, num_trials)")


def test_data_that_is_a_group(tmp_path):
    path = tmp_path / "x_data.h5"
    with h5py.File(path, "w") as f:
        f.create_group("data")
    expect_error(path, "key 'data'", "group")


def test_all_nan_trial_is_named(tmp_path):
    data = np.ones((NEURONS, SAMPLES, TRIALS))
    data[:, :, 3] = np.nan
    data[0, 0, 4] = np.nan  # partly sampled trials are fine
    path = tmp_path / "x_data.h5"
    write_raw(path, data=data)
    expect_error(path, "key 'data'", "all NaN", "3")


def test_infinite_data(tmp_path):
    data = np.ones((NEURONS, SAMPLES, TRIALS))
    data[1, 1, 1] = np.inf
    path = tmp_path / "x_data.h5"
    write_raw(path, data=data)
    expect_error(path, "key 'data'", "infinite")


def test_negative_counts_rejected_for_poisson(tmp_path):
    data = np.ones((NEURONS, SAMPLES, TRIALS))
    data[0, 3, 2] = -1
    path = tmp_path / "x_data.h5"
    write_raw(path, data=data)
    expect_error(path, "key 'data'", "negative")


def test_non_integer_counts_rejected_for_poisson_but_allowed_without_model(tmp_path):
    data = np.ones((NEURONS, SAMPLES, TRIALS))
    data[0, 3, 2] = 0.4
    path = tmp_path / "x_data.h5"
    write_raw(path, data=data)
    expect_error(path, "key 'data'", "non-integer")
    assert read_dataset(path).data[2, 3, 0] == pytest.approx(0.4)


def test_unknown_observation_model(tmp_path):
    path = tmp_path / "x_data.h5"
    write_raw(path, data=np.ones((NEURONS, SAMPLES, TRIALS)))
    with pytest.raises(NeurodynError, match="unknown observation model 'laplace'"):
        read_dataset_for(path, "laplace")


def test_truth_shape_mismatch_names_key_and_expected_shape(tmp_path):
    path = tmp_path / "run1_data.h5"
    write_raw(path, data=np.ones((NEURONS, SAMPLES, TRIALS)), truth=np.ones((NEURONS, SAMPLES - 1, TRIALS)))
    expect_error(path, "key 'truth'", f"({NEURONS}, {SAMPLES - 1}, {TRIALS})",
                 f"expected ({NEURONS}, {SAMPLES}, {TRIALS}) = (num_neurons, num_samples, num_trials) like 'data'")


def test_latents_shape_mismatch(tmp_path):
    path = tmp_path / "x_data.h5"
    write_raw(path, data=np.ones((NEURONS, SAMPLES, TRIALS)), latents=np.ones((LATENTS, SAMPLES, TRIALS + 1)))
    expect_error(path, "key 'latents'", f"expected ({LATENTS}, {SAMPLES}, {TRIALS})")


def test_condition_shape_mismatch(tmp_path):
    path = tmp_path / "x_data.h5"
    write_raw(path, data=np.ones((NEURONS, SAMPLES, TRIALS)), condition=np.arange(TRIALS + 2))
    expect_error(path, "key 'condition'", f"expected ({TRIALS},)")


def test_non_integer_condition(tmp_path):
    path = tmp_path / "x_data.h5"
    write_raw(path, data=np.ones((NEURONS, SAMPLES, TRIALS)), condition=np.linspace(0, 1, TRIALS))
    expect_error(path, "key 'condition'", "integer")


def test_truth_with_nan_is_refused_and_a_negative_clean_signal_is_read(tmp_path):
    truth = np.ones((NEURONS, SAMPLES, TRIALS))
    truth[0, 0, 0] = np.nan
    path = tmp_path / "x_data.h5"
    write_raw(path, data=np.ones((NEURONS, SAMPLES, TRIALS)), truth=truth)
    expect_error(path, "key 'truth'", "NaN")
    truth[0, 0, 0] = -0.5  # continuous signals (observation: gaussian) take either sign
    write_raw(path, data=np.ones((NEURONS, SAMPLES, TRIALS)), truth=truth)
    assert read_dataset(path).truth[0, 0, 0] == -0.5


def test_write_rejects_inconsistent_dataset_and_leaves_no_file(tmp_path):
    dataset = make_dataset()
    dataset.truth = dataset.truth[:, :-1]
    path = tmp_path / "bad_data.h5"
    with pytest.raises(NeurodynError, match="'truth'"):
        write_dataset(path, dataset)
    assert not path.exists()


# --- split ------------------------------------------------------------------------------------


def test_split_is_disjoint_complete_sorted_and_deterministic():
    train, valid = split_trials(100, 0.2, seed=3)
    assert train.dtype == np.int64 and valid.dtype == np.int64
    assert len(valid) == 20 and len(train) == 80
    assert np.intersect1d(train, valid).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, valid])), np.arange(100))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(valid) > 0)
    again_train, again_valid = split_trials(100, 0.2, seed=3)
    np.testing.assert_array_equal(valid, again_valid)
    np.testing.assert_array_equal(train, again_train)
    assert not np.array_equal(valid, split_trials(100, 0.2, seed=4)[1])


def test_split_balances_conditions_and_reproduces_the_sbtt_counts():
    conditions, per_condition = 65, 24
    condition = np.repeat(np.arange(conditions), per_condition)
    train, valid = split_trials(conditions * per_condition, 0.2, seed=0, condition=condition)
    assert (len(train), len(valid)) == (1248, 312)  # the SBTT demo's 80/20 split
    valid_per_condition = np.bincount(condition[valid], minlength=conditions)
    # every condition gets its proportional share 0.2 * 24 = 4.8, rounded down or up
    assert set(valid_per_condition) <= {4, 5}
    np.testing.assert_array_equal(np.sort(np.concatenate([train, valid])), np.arange(len(condition)))
    again = split_trials(conditions * per_condition, 0.2, seed=0, condition=condition)[1]
    np.testing.assert_array_equal(valid, again)


def test_split_balances_unequal_and_shuffled_conditions():
    rng = np.random.default_rng(1)
    condition = rng.permutation(np.repeat([7, 3, 9], [10, 20, 30]))  # labels need not be 0..C-1
    _, valid = split_trials(60, 0.25, seed=5, condition=condition)
    counts = {label: int(np.sum(condition[valid] == label)) for label in (7, 3, 9)}
    # 0.25 * (10, 20, 30) = (2.5, 5, 7.5); the total 15 forces one of the halves up
    assert counts[3] == 5 and {counts[7], counts[9]} in ({2, 8}, {3, 7})
    assert len(valid) == 15


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_ratio_outside_open_unit_interval(ratio):
    with pytest.raises(NeurodynError, match="valid_ratio"):
        split_trials(50, ratio, seed=0)


def test_split_rejects_an_empty_split():
    with pytest.raises(NeurodynError, match="non-empty"):
        split_trials(3, 0.1, seed=0)  # round(0.3) = 0 validation trials
    with pytest.raises(NeurodynError, match="non-empty"):
        split_trials(1, 0.6, seed=0)  # the single trial would go to valid


def test_split_rejects_condition_of_wrong_length():
    with pytest.raises(NeurodynError, match="condition"):
        split_trials(10, 0.2, seed=0, condition=np.zeros(9))


def test_write_rejects_attributes_h5_cannot_store(tmp_path):
    dataset = make_dataset()
    dataset.attrs["settings"] = {"nested": 1}
    path = tmp_path / "bad_data.h5"
    with pytest.raises(NeurodynError, match="attributes"):
        write_dataset(path, dataset)
    assert not path.exists()


def test_array_attributes_read_back_as_lists(tmp_path):
    dataset = make_dataset()
    dataset.attrs["weights"] = np.array([[1.5, 2.0], [3.0, 4.0]])
    path = tmp_path / "run1_data.h5"
    write_dataset(path, dataset)
    assert read_dataset(path).attrs["weights"] == [[1.5, 2.0], [3.0, 4.0]]


# --- measured inputs (ext_input) and the file's own split ----------------------------------------

EXT = 2


def test_ext_input_and_split_round_trip_in_file_layout(tmp_path):
    dataset = make_dataset()
    dataset.ext_input = np.random.default_rng(5).standard_normal((TRIALS, SAMPLES, EXT)).astype(np.float32)
    dataset.split = np.array(["train", "valid", "test", "train", "train", "valid"])
    path = tmp_path / "run1_data.h5"
    write_dataset(path, dataset)
    with h5py.File(path, "r") as f:
        assert f["ext_input"].shape == (EXT, SAMPLES, TRIALS)
        np.testing.assert_array_equal(f["ext_input"][1, 4, 3], dataset.ext_input[3, 4, 1])
        assert list(f["split"].asstr()[()]) == dataset.split.tolist()
    back = read_dataset(path)
    np.testing.assert_array_equal(back.ext_input, dataset.ext_input)
    assert back.ext_input.dtype == np.float32 and back.ext_input_dim == EXT
    assert back.split.tolist() == dataset.split.tolist()
    part = back.subset(np.array([5, 2]))
    np.testing.assert_array_equal(part.ext_input, dataset.ext_input[[5, 2]])
    assert part.split.tolist() == ["valid", "test"]
    assert make_dataset().ext_input_dim == 0


@pytest.mark.parametrize("stored", [
    np.array([0, 1, 2, 0, 0, 1]),  # integer codes
    np.array([0.0, 1.0, 2.0, 0.0, 0.0, 1.0]),  # MATLAB doubles
    np.array([b"train", b"valid", b"test", b"train", b"train", b"valid"]),  # fixed-length bytes
    np.array(["train", "valid", "test", "train", "train", "valid"], dtype=h5py.string_dtype()),  # variable-length
    np.array([[0, 1, 2, 0, 0, 1]]),  # MATLAB row vector
])
def test_split_is_read_from_any_way_h5_stores_it(tmp_path, stored):
    path = tmp_path / "x_data.h5"
    write_raw(path, data=np.ones((NEURONS, SAMPLES, TRIALS)), split=stored)
    assert read_dataset(path).split.tolist() == ["train", "valid", "test", "train", "train", "valid"]


@pytest.mark.parametrize("stored, fragment", [
    (np.array([0, 1, 3, 0, 0, 1]), "unknown label(s) '3'"),
    (np.array([b"train", b"valid", b"training", b"train", b"train", b"valid"]), "unknown label(s) 'training'"),
    (np.array([0.5, 1, 1, 0, 0, 1]), "unknown label(s) '0.5'"),
    (np.array([0, 1, 1, 0, 0]), f"expected ({TRIALS},)"),
])
def test_bad_split_is_named(tmp_path, stored, fragment):
    path = tmp_path / "x_data.h5"
    write_raw(path, data=np.ones((NEURONS, SAMPLES, TRIALS)), split=stored)
    expect_error(path, "key 'split'", fragment, observation=None)


def test_ext_input_shape_and_values_are_checked(tmp_path):
    path = tmp_path / "x_data.h5"
    data = np.ones((NEURONS, SAMPLES, TRIALS))
    write_raw(path, data=data, ext_input=np.ones((EXT, SAMPLES - 1, TRIALS)))
    expect_error(path, "key 'ext_input'", f"expected ({EXT}, {SAMPLES}, {TRIALS}) = "
                 "(ext_input_dim, num_samples, num_trials)", observation=None)
    write_raw(path, data=data, ext_input=np.ones((SAMPLES, TRIALS)))
    expect_error(path, "key 'ext_input'", "(ext_input_dim, num_samples, num_trials)", observation=None)
    for bad in (np.nan, np.inf):
        ext = np.ones((EXT, SAMPLES, TRIALS))
        ext[1, 2, 4] = bad
        write_raw(path, data=data, ext_input=ext)
        message = expect_error(path, "key 'ext_input'", "NaN or infinite", "trial indices 4", observation=None)
        assert "\n" not in message
    dataset = make_dataset()
    dataset.ext_input = np.ones((TRIALS, SAMPLES + 1, EXT))
    with pytest.raises(NeurodynError, match="'ext_input' has shape"):
        write_dataset(tmp_path / "bad.h5", dataset)


# --- measured behaviour (behavior) ----------------------------------------------------------------

BEHAVIOR_DIM = 2


def test_behavior_round_trips_in_file_layout_and_follows_subset(tmp_path):
    dataset = make_dataset()
    dataset.behavior = np.random.default_rng(6).standard_normal((TRIALS, SAMPLES, BEHAVIOR_DIM)).astype(np.float32)
    path = tmp_path / "run1_data.h5"
    write_dataset(path, dataset)
    with h5py.File(path, "r") as f:
        assert f["behavior"].shape == (BEHAVIOR_DIM, SAMPLES, TRIALS)
        assert f["behavior"][1, 4, 3] == dataset.behavior[3, 4, 1]
    back = read_dataset(path)
    np.testing.assert_array_equal(back.behavior, dataset.behavior)
    assert back.behavior.dtype == np.float32
    np.testing.assert_array_equal(back.subset(np.array([5, 2])).behavior, dataset.behavior[[5, 2]])
    assert make_dataset().behavior is None
    assert NeuralDataset(data=dataset.data, behavior=np.ones((TRIALS, SAMPLES, 1))).behavior.dtype == np.float32


def test_behavior_of_the_wrong_shape_is_named_in_one_line(tmp_path):
    path = tmp_path / "x_data.h5"
    data = np.ones((NEURONS, SAMPLES, TRIALS))
    write_raw(path, data=data, behavior=np.ones((BEHAVIOR_DIM, SAMPLES, TRIALS - 1)))
    message = expect_error(path, "key 'behavior'", f"has shape ({BEHAVIOR_DIM}, {SAMPLES}, {TRIALS - 1})",
                           f"expected ({BEHAVIOR_DIM}, {SAMPLES}, {TRIALS}) = (behavior_dim, num_samples, num_trials)",
                           observation=None)
    assert "\n" not in message
    write_raw(path, data=data, behavior=np.ones((SAMPLES, TRIALS)))
    expect_error(path, "key 'behavior'", "expected (behavior_dim >= 1, "
                 f"{SAMPLES}, {TRIALS}) = (behavior_dim, num_samples, num_trials)", observation=None)
    dataset = make_dataset()
    dataset.behavior = np.ones((TRIALS, SAMPLES + 1, BEHAVIOR_DIM))
    with pytest.raises(NeurodynError, match=r"'behavior' has shape \(6, 8, 2\); expected \(6, 7, behavior_dim"):
        write_dataset(tmp_path / "bad.h5", dataset)


def test_behavior_with_inf_is_refused_with_one_line(tmp_path):
    path = tmp_path / "x_data.h5"
    behavior = np.ones((BEHAVIOR_DIM, SAMPLES, TRIALS))
    behavior[0, 3, 2] = np.inf
    write_raw(path, data=np.ones((NEURONS, SAMPLES, TRIALS)), behavior=behavior)
    message = expect_error(path, "key 'behavior'", "infinite values", "trial indices 2", observation=None)
    assert "\n" not in message
    dataset = make_dataset()
    dataset.behavior = np.transpose(behavior)
    with pytest.raises(NeurodynError, match="key 'behavior' holds infinite values"):
        write_dataset(tmp_path / "bad.h5", dataset)


def test_behavior_measured_on_some_trials_only_is_kept_with_nan_elsewhere(tmp_path):
    # NLB's evaluation trials come without behaviour: NaN marks what was not measured.
    dataset = make_dataset()
    behavior = np.ones((TRIALS, SAMPLES, BEHAVIOR_DIM), dtype=np.float32)
    behavior[4:] = np.nan
    dataset.behavior = behavior
    write_dataset(tmp_path / "x_data.h5", dataset)
    read = read_dataset(tmp_path / "x_data.h5")
    np.testing.assert_array_equal(np.isnan(read.behavior), np.isnan(behavior))
    np.testing.assert_array_equal(read.behavior[:4], behavior[:4])


def test_split_from_the_file_gives_train_valid_and_test_trials():
    dataset = make_dataset()
    dataset.split = np.array([2, 0, 1, 0, 2, 0])
    train, valid, test = split_train_valid_test(dataset, valid_ratio=0.5, seed=0)
    assert train.tolist() == [1, 3, 5] and valid.tolist() == [2] and test.tolist() == [0, 4]
    assert all(part.dtype == np.int64 for part in (train, valid, test))


def test_without_a_split_key_the_seeded_valid_ratio_split_is_used_and_test_is_empty():
    dataset = make_dataset()
    train, valid, test = split_train_valid_test(dataset, valid_ratio=0.5, seed=4)
    expected = split_trials(TRIALS, 0.5, 4, dataset.condition)
    np.testing.assert_array_equal(train, expected[0])
    np.testing.assert_array_equal(valid, expected[1])
    assert test.size == 0 and test.dtype == np.int64


@pytest.mark.parametrize("labels, missing", [([0, 0, 2, 2, 0, 0], "valid"), ([1, 2, 1, 1, 2, 2], "train")])
def test_a_split_without_train_or_valid_trials_is_refused_for_training(labels, missing):
    dataset = make_dataset()
    dataset.split = np.array(labels)
    dataset.source = "f_data.h5"
    with pytest.raises(NeurodynError, match=f"f_data.h5: key 'split' names no '{missing}' trials"):
        split_train_valid_test(dataset, valid_ratio=0.2, seed=0)


def test_write_refuses_an_unknown_split_label_and_leaves_no_file(tmp_path):
    dataset = make_dataset()
    dataset.split = np.array(["train", "valid", "holdout", "train", "train", "valid"])
    with pytest.raises(NeurodynError, match="key 'split' holds unknown label"):
        write_dataset(tmp_path / "bad_data.h5", dataset)
    assert not (tmp_path / "bad_data.h5").exists()
