"""Settings derived from the data: batch size, learning rate, mask_as_input, cd_pass_fraction and inference default
to 'auto'."""

import math

import h5py
import numpy as np
import pytest
import yaml

from neurodyn.config import LfadsConfig
from neurodyn.data.seed_format import write_dataset
from neurodyn.synth.lorenz_spikes import make_lorenz_spikes
from neurodyn.train.defaults import (CONTROLLER_DIM, REFINE_UNOBSERVED, auto_co_dim, SPARSE_PASS, SPARSE_UNOBSERVED, auto_batch_size, auto_cd_pass_fraction,
                                     auto_inference, auto_kl_weight, KL_MAX_WEIGHT, KL_TRIAL_SHARE,
                                     auto_learning_rate, auto_spike_jitter_bins,
                                     epochs_for_steps, resolve_data_defaults, MIN_EPOCHS, MIN_STEPS,
                                     PATIENCE_EPOCHS, SPIKE_JITTER_MIN_BINS, SPIKE_JITTER_MS, STEPS_PER_EPOCH)
from neurodyn.train.run import train_model


@pytest.mark.parametrize("trials, batch", [(5, 5), (16, 16), (100, 16), (320, 16), (480, 16), (512, 32),
                                           (1248, 64), (2048, 128), (100000, 128)])
def test_batch_size_gives_enough_steps_per_epoch(trials, batch):
    assert auto_batch_size(trials) == batch
    if trials >= 16 * 16:
        assert math.ceil(trials / batch) >= 16 or batch == 128


def test_learning_rate_follows_the_batch_size():
    assert auto_learning_rate(128) == 0.004
    assert auto_learning_rate(16) == pytest.approx(0.004 * (16 / 128) ** 0.226, rel=1e-3)
    assert 0.0024 < auto_learning_rate(16) < 0.0026
    rates = [auto_learning_rate(b) for b in (16, 32, 64, 128)]
    assert rates == sorted(rates)


def test_auto_keys_are_resolved_from_the_training_trials_and_explained():
    data = np.zeros((480, 10, 6))
    data[:, ::2, 1] = np.nan
    config, notes = resolve_data_defaults(LfadsConfig(observation="zig"), data)
    assert (config.batch_size, config.mask_as_input) == (16, False)
    assert config.learning_rate_init == auto_learning_rate(16)
    assert notes[0] == "batch_size auto -> 16 (480 training trials: 30 steps per epoch)"
    assert not any("mask_as_input" in note for note in notes)  # off by default: nothing to resolve


@pytest.mark.parametrize("trials, epochs", [(48, 2134), (100, 915), (256, 400), (480, 400), (100000, 400)])
def test_max_epochs_auto_gives_small_sets_as_many_optimiser_steps_as_large_ones(trials, epochs):
    batch = auto_batch_size(trials)
    steps = math.ceil(trials / batch)
    assert epochs_for_steps(MIN_EPOCHS, steps) == epochs
    assert epochs * steps >= MIN_STEPS and epochs >= MIN_EPOCHS
    assert epochs == MIN_EPOCHS or (epochs - 1) * steps < MIN_STEPS  # no more epochs than the steps need
    config, notes = resolve_data_defaults(LfadsConfig(), np.zeros((trials, 10, 6)))
    assert config.max_epochs == epochs
    said = [note for note in notes if note.startswith("max_epochs")]
    assert said == ([] if epochs == MIN_EPOCHS else
                    [f"max_epochs auto -> {epochs} ({steps} steps per epoch: at least {MIN_STEPS} optimiser steps "
                     "before the cap)"])
    assert resolve_data_defaults(LfadsConfig(max_epochs=50), np.zeros((trials, 10, 6)))[0].max_epochs == 50


@pytest.mark.parametrize("trials, patience", [(32, 320), (48, 214), (128, 80), (192, 54), (256, 40), (5000, 40)])
def test_early_stopping_patience_auto_waits_as_many_optimiser_steps_on_small_sets(trials, patience):
    steps = math.ceil(trials / auto_batch_size(trials))
    assert epochs_for_steps(PATIENCE_EPOCHS, steps) == patience
    assert patience * steps >= PATIENCE_EPOCHS * STEPS_PER_EPOCH and patience >= PATIENCE_EPOCHS
    config, notes = resolve_data_defaults(LfadsConfig(), np.zeros((trials, 10, 6)))
    assert config.early_stopping_patience == patience
    said = [note for note in notes if note.startswith("early_stopping_patience")]
    assert said == ([] if patience == PATIENCE_EPOCHS else
                    [f"early_stopping_patience auto -> {patience} ({steps} steps per epoch: at least "
                     f"{PATIENCE_EPOCHS * STEPS_PER_EPOCH} optimiser steps without a better validation NLL before "
                     "stopping)"])
    kept, _ = resolve_data_defaults(LfadsConfig(early_stopping_patience=7), np.zeros((trials, 10, 6)))
    assert kept.early_stopping_patience == 7


@pytest.mark.parametrize("observation", ["poisson", "zig"])
def test_mask_as_input_auto_is_off_and_says_why(observation):
    data = np.zeros((480, 10, 6))
    data[:, ::2, 1] = np.nan
    config, notes = resolve_data_defaults(LfadsConfig(observation=observation, mask_as_input="auto"), data)
    assert config.mask_as_input is False
    assert ("mask_as_input auto -> off (8% of the training entries are unobserved; the mask measured worse on "
            "every benchmark set)") in notes
    dense, _ = resolve_data_defaults(LfadsConfig(mask_as_input="auto"), np.zeros((40, 10, 6)))
    assert dense.mask_as_input is False


def test_a_config_that_sets_a_key_keeps_it():
    config = LfadsConfig(batch_size=64, learning_rate_init=0.01, mask_as_input=False, cd_pass_fraction=0.0,
                         inference="sample_average", kl_ic_weight=1e-4, kl_co_weight=1e-4, co_dim=2,
                         spike_jitter_bins=0, max_epochs=400,
                         early_stopping_patience=40)
    resolved, notes = resolve_data_defaults(config, np.full((480, 10, 6), np.nan))
    assert resolved == config and notes == []
    only_batch, _ = resolve_data_defaults(LfadsConfig(batch_size=64), np.zeros((480, 10, 6)))
    assert only_batch.learning_rate_init == auto_learning_rate(64)


def test_kl_weights_keep_a_trials_kl_at_most_a_share_of_its_summed_reconstruction():
    # Small trials keep the old default; large ones get w with w x entries = KL_TRIAL_SHARE.
    assert auto_kl_weight(50 * 29) == KL_MAX_WEIGHT
    assert auto_kl_weight(180 * 142) == pytest.approx(KL_TRIAL_SHARE / (180 * 142), rel=1e-3)
    assert auto_kl_weight(180 * 142) * 180 * 142 <= KL_TRIAL_SHARE * 1.001
    # The objective's view: a trial's KL weighs w x KL against its summed NLL, as the objective's
    # mean-over-entries NLL + w x KL does times the entry count.
    entries = 180 * 142
    weight = auto_kl_weight(entries)
    nll_sum, kl = 1234.5, 20.0
    assert (nll_sum / entries + weight * kl) * entries == pytest.approx(nll_sum + weight * entries * kl)


def test_kl_weights_auto_count_the_data_bins_and_every_neuron_and_say_so():
    data = np.zeros((60, 180, 142))
    config, notes = resolve_data_defaults(LfadsConfig(co_dim=0), data)
    assert config.kl_ic_weight == config.kl_co_weight == auto_kl_weight(180 * 142)
    assert any(note.startswith(f"kl_ic_weight auto -> {auto_kl_weight(180 * 142):g} (25560 entries per trial")
               for note in notes)
    assert not any(note.startswith("kl_co_weight") for note in notes)  # no controller: nothing to say
    # With the controller co_dim 'auto' gives these data, its KL weight is stated too.
    controlled, notes = resolve_data_defaults(LfadsConfig(), data)
    assert controlled.co_dim == CONTROLLER_DIM
    assert any(note.startswith(f"kl_co_weight auto -> {auto_kl_weight(180 * 142):g}") for note in notes)
    # The event delay's padding bins are no entries of the data.
    padded = np.concatenate([data, np.full((60, 20, 142), np.nan)], axis=1)
    delayed, _ = resolve_data_defaults(LfadsConfig(event_delay_bins=20), padded)
    assert delayed.kl_ic_weight == config.kl_ic_weight
    small, notes = resolve_data_defaults(LfadsConfig(), np.zeros((60, 50, 29)))
    assert small.kl_ic_weight == KL_MAX_WEIGHT and not any("kl_ic_weight" in note for note in notes)


def test_train_writes_and_logs_the_values_it_used(tmp_path):
    dataset = make_lorenz_spikes(num_neurons=6, num_samples=8, num_conditions=4, trials_per_condition=10, keep=3)
    write_dataset(tmp_path / "d.h5", dataset)
    config = LfadsConfig(ic_enc_dim=6, gen_dim=8, ic_dim=3, factors_dim=3, max_epochs=1, kl_increase_epochs=1,
                         l2_increase_epochs=1, posterior_samples=2, device="cpu")
    lines = []
    train_model(config, tmp_path / "d.h5", tmp_path / "run", progress=False, echo=lines.append)
    resolved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert (resolved["batch_size"], resolved["mask_as_input"]) == (16, False)  # 32 training trials of spike counts
    assert resolved["cd_pass_fraction"] == 0.0  # 3 of 6 neurons observed per bin: not sparse
    assert resolved["co_dim"] == CONTROLLER_DIM and any(line.startswith("co_dim auto -> 4") for line in lines)
    assert resolved["inference"] == "sample_average"
    assert resolved["learning_rate_init"] == auto_learning_rate(16)
    assert "batch_size auto -> 16 (32 training trials: 2 steps per epoch)" in lines


@pytest.mark.parametrize("bin_ms", [1.0, 5.0, 10.0, 20.0, 50.0, 3.0, 7.0, 11.0])
def test_spike_jitter_auto_moves_spikes_by_whole_bins_within_the_jitter_time(bin_ms):
    bins = auto_spike_jitter_bins(bin_ms, "poisson")
    fit = math.floor(SPIKE_JITTER_MS / bin_ms)  # the most whole bins in the jitter time
    assert bins == (fit if fit >= SPIKE_JITTER_MIN_BINS else 0)
    assert bins * bin_ms <= SPIKE_JITTER_MS
    assert auto_spike_jitter_bins(bin_ms, "zig") == 0 and auto_spike_jitter_bins(None, "poisson") == 0


def test_spike_jitter_auto_is_resolved_from_the_bin_width_and_explained():
    data = np.zeros((40, 10, 6))
    config, notes = resolve_data_defaults(LfadsConfig(spike_jitter_bins="auto"), data, bin_ms=5.0)
    expected = math.floor(SPIKE_JITTER_MS / 5.0)
    assert config.spike_jitter_bins == expected
    assert any(note.startswith(f"spike_jitter_bins auto -> {expected} (5 ms bins") for note in notes)
    unknown, notes = resolve_data_defaults(LfadsConfig(spike_jitter_bins="auto"), data)
    assert unknown.spike_jitter_bins == 0 and any("'bin_ms'" in note for note in notes)
    events, notes = resolve_data_defaults(LfadsConfig(spike_jitter_bins="auto", observation="zig"), data, bin_ms=5.0)
    assert events.spike_jitter_bins == 0 and not any("spike_jitter" in note for note in notes)
    kept, _ = resolve_data_defaults(LfadsConfig(spike_jitter_bins=1), data, bin_ms=5.0)
    assert kept.spike_jitter_bins == 1
    coarse, notes = resolve_data_defaults(LfadsConfig(), data, bin_ms=20.0)  # the default is 'auto'
    assert coarse.spike_jitter_bins == 0 and not any("spike_jitter" in note for note in notes)  # said when it moves


def test_train_takes_the_jitter_from_the_files_bin_width(tmp_path):
    dataset = make_lorenz_spikes(num_neurons=6, num_samples=8, num_conditions=4, trials_per_condition=10, bin_ms=5.0)
    write_dataset(tmp_path / "d.h5", dataset)
    config = LfadsConfig(ic_enc_dim=6, gen_dim=8, ic_dim=3, factors_dim=3, max_epochs=1, kl_increase_epochs=1,
                         l2_increase_epochs=1, posterior_samples=2, device="cpu", spike_jitter_bins="auto")
    lines = []
    train_model(config, tmp_path / "d.h5", tmp_path / "run", progress=False, echo=lines.append)
    resolved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert resolved["spike_jitter_bins"] == math.floor(SPIKE_JITTER_MS / 5.0)
    assert any(line.startswith("spike_jitter_bins auto -> ") for line in lines)


def test_cd_pass_fraction_lets_some_seen_entries_train_only_on_sparse_data():
    assert auto_cd_pass_fraction(0.0) == 0.0 and auto_cd_pass_fraction(0.75) == 0.0  # e.g. 4 sub-frame bins
    assert auto_cd_pass_fraction(SPARSE_UNOBSERVED) == 0.0
    assert auto_cd_pass_fraction(32 / 35) == SPARSE_PASS > 0  # 3 of 35 neurons observed per bin
    sparse = make_lorenz_spikes(num_neurons=35, num_samples=10, num_conditions=4, trials_per_condition=10, keep=3)
    config, notes = resolve_data_defaults(LfadsConfig(), sparse.data)
    assert config.cd_pass_fraction == SPARSE_PASS
    assert (f"cd_pass_fraction auto -> {SPARSE_PASS:g} (91% of the training entries are unobserved, more than 80%: "
            "some entries the encoder sees also train)") in notes
    dense, notes = resolve_data_defaults(LfadsConfig(), np.zeros((40, 10, 6)))
    assert dense.cd_pass_fraction == 0.0
    assert not any("cd_pass_fraction" in note for note in notes)  # pure CD, as without the key: not stated


def test_inference_refines_each_trials_posterior_only_on_sparse_data(tmp_path):
    assert auto_inference(0.0) == auto_inference(0.31) == auto_inference(REFINE_UNOBSERVED) == "sample_average"
    # 10 of 29 neurons per bin; 2-photon sub-frame bins; 3 of 35 neurons
    assert auto_inference(19 / 29) == auto_inference(0.75) == auto_inference(32 / 35) == "refined"
    sparse = make_lorenz_spikes(num_neurons=35, num_samples=8, num_conditions=4, trials_per_condition=10, keep=3)
    config, notes = resolve_data_defaults(LfadsConfig(), sparse.data)
    assert config.inference == "refined"
    assert ("inference auto -> refined (91% of the training entries are unobserved, more than 50%: each trial's "
            "posterior is refined on its own data)") in notes
    dense, notes = resolve_data_defaults(LfadsConfig(), np.zeros((40, 10, 6)))
    assert dense.inference == "sample_average" and not any("inference" in note for note in notes)
    # End to end: the run's outputs say how they were made.
    write_dataset(tmp_path / "d.h5", sparse)
    small = LfadsConfig(ic_enc_dim=6, gen_dim=8, ic_dim=3, factors_dim=3, max_epochs=1, kl_increase_epochs=1,
                        l2_increase_epochs=1, posterior_samples=2, refinement_steps=3, device="cpu")
    train_model(small, tmp_path / "d.h5", tmp_path / "run", progress=False, echo=lambda line: None)
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["inference"] == "refined"
    with h5py.File(tmp_path / "run" / "valid_output.h5", "r") as f:
        assert (f.attrs["inference"], int(f.attrs["refinement_steps"])) == ("refined", 3)


def _observed_per_bin(observed: int, trials: int = 40, bins: int = 10, neurons: int = 50) -> np.ndarray:
    """Spike counts with exactly ``observed`` of ``neurons`` sampled in every bin (the rest NaN)."""
    rng = np.random.default_rng(observed)
    data = rng.poisson(1.0, (trials, bins, neurons)).astype(np.float32)
    order = rng.random((trials, bins, neurons)).argsort(axis=-1)
    data[order >= observed] = np.nan
    return data


# Just on the dense side of each threshold: 11 of 50 observed is 78% unobserved (<= 80%: pure CD), 26 of 50
# is 48% (<= 50%: the encoder's posterior). Counting 2 appended bins of 12 would make them 82% and 57%.
NEAR_THRESHOLDS = [(11, "cd_pass_fraction", 0.0), (26, "inference", "sample_average")]


@pytest.mark.parametrize("observed, key, expected", NEAR_THRESHOLDS)
def test_the_event_delays_padding_does_not_count_as_unobserved(observed, key, expected):
    from neurodyn.data.event_timing import append_unobserved_bins
    from neurodyn.train.defaults import training_unobserved_fraction

    data = _observed_per_bin(observed)
    plain, _ = resolve_data_defaults(LfadsConfig(), data)
    padded_data = append_unobserved_bins(data, 2)
    padded, notes = resolve_data_defaults(LfadsConfig(event_delay_bins=2), padded_data)
    assert getattr(plain, key) == getattr(padded, key) == expected
    assert training_unobserved_fraction(LfadsConfig(event_delay_bins=2), padded_data) == pytest.approx(
        1 - observed / 50, abs=1e-12)
    assert not any(key in note for note in notes)
    # Data given without the padding are taken whole (their last bins are samples of the data's).
    assert training_unobserved_fraction(LfadsConfig(event_delay_bins=2), data) == pytest.approx(1 - observed / 50)


@pytest.mark.parametrize("observed, key, expected", NEAR_THRESHOLDS)
def test_a_file_with_an_event_delay_gets_the_defaults_of_its_own_bins(tmp_path, observed, key, expected):
    """End to end: read_model_data appends the event delay's bins; the trainer resolves the 'auto' keys
    as for the same file without a delay."""
    from neurodyn.data.seed_format import NeuralDataset
    from neurodyn.train.run import read_model_data
    from neurodyn.train.trainer import LfadsTrainer

    small = LfadsConfig(ic_enc_dim=4, gen_dim=4, ic_dim=2, factors_dim=2, device="cpu")
    resolved = {}
    for delay_ms in (0.0, 40.0):
        path = tmp_path / f"delay{int(delay_ms)}.h5"
        write_dataset(path, NeuralDataset(_observed_per_bin(observed), attrs={"bin_ms": 20.0,
                                                                             "event_delay_ms": delay_ms}))
        data = read_model_data(path, small)
        assert data.dataset.data.shape[1] == 10 + int(delay_ms / 20)
        resolved[delay_ms] = getattr(LfadsTrainer(data.config, **data.trainer_inputs()).config, key)
    assert resolved[0.0] == resolved[40.0] == expected


def test_co_dim_auto_gives_a_controller_unless_the_data_are_sparse():
    assert auto_co_dim(0.0) == auto_co_dim(0.75) == auto_co_dim(SPARSE_UNOBSERVED) == CONTROLLER_DIM > 0
    assert auto_co_dim(32 / 35) == auto_co_dim(0.9) == 0  # 3 of 35 / 10 of 100 neurons observed per bin
    # Staggered 2-photon sampling, one of 4 sub-frame bins observed per neuron: a controller.
    two_photon = np.zeros((40, 16, 8))
    for neuron in range(8):
        two_photon[:, [b for b in range(16) if b % 4 != neuron % 4], neuron] = np.nan
    config, notes = resolve_data_defaults(LfadsConfig(observation="zig"), two_photon)
    assert config.co_dim == CONTROLLER_DIM and config.uses_controller
    assert "co_dim auto -> 4 (25% of the training entries are observed: a controller infers inputs)" in notes
    sparse = make_lorenz_spikes(num_neurons=35, num_samples=10, num_conditions=4, trials_per_condition=10, keep=3)
    config, notes = resolve_data_defaults(LfadsConfig(), sparse.data)
    assert config.co_dim == 0 and not config.uses_controller
    assert "co_dim auto -> 0 (more than 80% of the training entries are unobserved: no controller)" in notes
    kept, notes = resolve_data_defaults(LfadsConfig(co_dim=2), sparse.data)
    assert kept.co_dim == 2 and not any(note.startswith("co_dim") for note in notes)


def test_a_model_built_without_data_takes_co_dim_auto_as_no_controller():
    from neurodyn.lfads.model import LFADS
    from neurodyn.observation.registry import make_observation_model

    config = LfadsConfig(ic_enc_dim=4, gen_dim=6, ic_dim=2, factors_dim=3)
    assert config.co_dim == "auto" and config.controller_dim == 0
    model = LFADS(config, 5, make_observation_model("poisson", 5))
    assert model.co_dim == 0 and not hasattr(model, "ci_encoder")
    controlled = LFADS(config.model_copy(update={"co_dim": 3}), 5, make_observation_model("poisson", 5))
    assert controlled.co_dim == 3 and hasattr(controlled, "ci_encoder")


def test_sample_validation_share_is_a_tenth_of_the_entries_only_with_entry_validation():
    from neurodyn.train.defaults import ENTRY_VALIDATION_FRACTION, sample_validation_share

    assert sample_validation_share(LfadsConfig()) == 0.0
    assert sample_validation_share(LfadsConfig(validation="entries")) == ENTRY_VALIDATION_FRACTION == 0.1
    assert sample_validation_share(LfadsConfig(validation="entries", sample_validation_fraction=0.25)) == 0.25
    assert sample_validation_share(LfadsConfig(sample_validation_fraction=0.05)) == 0.05
    for bad in (-0.1, 0.6):
        with pytest.raises(ValueError, match="expected 'auto' or a number from 0 to 0.5"):
            LfadsConfig(sample_validation_fraction=bad)


def test_entries_held_out_for_validation_count_as_observed_for_the_defaults():
    from neurodyn.data.seed_format import split_sample_validation

    data = np.random.default_rng(0).poisson(1.0, size=(40, 16, 8)).astype(float)
    data[:, :, :6][np.random.default_rng(1).random((40, 16, 6)) < 0.85] = np.nan  # 64% unobserved: a controller
    training, held_out = split_sample_validation(data, 0.5, seed=0)  # 82% unobserved without the held-out ones
    assert resolve_data_defaults(LfadsConfig(), training)[0].co_dim == 0
    config, notes = resolve_data_defaults(LfadsConfig(), training, held_out=held_out)
    assert config.co_dim == resolve_data_defaults(LfadsConfig(), data)[0].co_dim == CONTROLLER_DIM
