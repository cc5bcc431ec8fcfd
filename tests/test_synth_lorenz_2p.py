"""The synthetic 2p Lorenz set: shapes, determinism, sub-frame layout, attributes, kernel, signal,
file round trip, the CLI, and a short ZIG training run on it."""

import math

import numpy as np
import pytest
import torch

from neurodyn.cli.main import main
from neurodyn.config import LfadsConfig
from neurodyn.observation.registry import read_dataset_for
from neurodyn.data.seed_format import write_dataset
from neurodyn.data.event_timing import calcium_kernel_peak
from neurodyn.synth.lorenz_2p import calcium_trace, make_lorenz_2p
from neurodyn.train.inference import infer
from neurodyn.train.trainer import LfadsTrainer

pytest.importorskip("oasis")

TINY = dict(num_neurons=12, num_frames=10, subframe_bins=3, num_conditions=6, trials_per_condition=4,
            iti_frames=8, seed=3)


@pytest.fixture(scope="module")
def tiny():
    return make_lorenz_2p(**TINY)


def test_shapes_and_condition_labels(tiny):
    trials, subbins, neurons = 24, 30, 12
    assert tiny.data.shape == tiny.truth.shape == (trials, subbins, neurons)
    assert tiny.latents.shape == (trials, subbins, 3)
    np.testing.assert_array_equal(tiny.condition, np.repeat(np.arange(6), 4))


def test_same_seed_same_data_other_seed_other_data(tiny):
    again = make_lorenz_2p(**TINY)
    np.testing.assert_array_equal(again.data, tiny.data)
    np.testing.assert_array_equal(again.truth, tiny.truth)
    np.testing.assert_array_equal(again.latents, tiny.latents)
    other = make_lorenz_2p(**{**TINY, "seed": 4})
    assert not np.array_equal(np.nan_to_num(other.data), np.nan_to_num(tiny.data))


def test_exactly_one_observed_subbin_per_frame_at_the_scan_time(tiny):
    k = tiny.attrs["subframe_bins"]
    offsets = np.asarray(tiny.attrs["scan_offsets"])
    observed = ~np.isnan(tiny.data).reshape(24, 10, k, 12)
    assert np.all(observed.sum(axis=2) == 1)
    observed_bin = observed.argmax(axis=2)  # (trials, frames, neurons)
    np.testing.assert_array_equal(observed_bin, np.broadcast_to(np.floor(offsets * k).astype(int), observed_bin.shape))
    events = tiny.data[~np.isnan(tiny.data)]
    assert np.all(events >= 0) and 0.05 < np.mean(events > 0) < 0.95


def test_attributes_describe_the_sub_frame_layout(tiny):
    attrs = tiny.attrs
    assert attrs["frame_rate_hz"] == 31.25 and attrs["subframe_bins"] == 3
    assert attrs["bin_ms"] == pytest.approx(1000.0 / (31.25 * 3))
    offsets = np.asarray(attrs["scan_offsets"])
    assert offsets.shape == (12,) and np.all((offsets >= 0) & (offsets < 1))
    # neurons are spread over the whole frame: every sub-bin holds some neuron's scan time
    assert set(np.floor(offsets * 3).astype(int)) == {0, 1, 2}
    for key in ("truth_units", "noise_std", "rise_ms", "decay_ms", "lorenz_speed", "seed", "event_size_per_spike"):
        assert key in attrs


def test_truth_is_rate_times_frame_duration_within_the_rate_range(tiny):
    frame_s = 1.0 / tiny.attrs["frame_rate_hz"]
    low, high = tiny.attrs["min_rate_hz"], tiny.attrs["max_rate_hz"]  # each neuron spans this range
    assert tiny.truth.min() >= low * frame_s * (1 - 1e-5)
    assert tiny.truth.max() <= high * frame_s * (1 + 1e-5)
    assert tiny.truth.max() > 10.0 * frame_s
    assert np.all(np.isfinite(tiny.latents)) and abs(tiny.latents.mean()) < 1.0


def test_calcium_kernel_peaks_at_one_at_the_analytic_time():
    rise, decay, step = 0.02, 0.3, 1e-4
    spikes = np.zeros(20000)
    spikes[0] = 1
    calcium = calcium_trace(spikes, step, rise, decay)
    peak_time = np.log(decay / rise) * rise * decay / (decay - rise)
    assert calcium.max() == pytest.approx(1.0, rel=1e-5)
    assert np.argmax(calcium) * step == pytest.approx(peak_time, abs=2 * step)
    assert calcium_kernel_peak(rise, decay) == pytest.approx(np.exp(-peak_time / decay) - np.exp(-peak_time / rise))


def test_events_carry_the_rates():
    dataset = make_lorenz_2p(num_neurons=6, num_frames=16, subframe_bins=2, num_conditions=4, trials_per_condition=30,
                             iti_frames=8, seed=5, noise_std=0.1)
    frames = dataset.data.reshape(120, 16, 2, 6)
    events = np.nansum(frames, axis=2)  # one event per frame
    truth = dataset.truth.reshape(120, 16, 2, 6).mean(axis=2)  # expected spikes per frame
    # condition-averaged events follow the condition-averaged expected spikes
    means = [(events[dataset.condition == c].mean(0), truth[dataset.condition == c].mean(0)) for c in range(4)]
    ev, tr = np.concatenate([m[0] for m in means]), np.concatenate([m[1] for m in means])
    correlations = [np.corrcoef(ev[:, n], tr[:, n])[0, 1] for n in range(6)]
    assert np.mean(correlations) > 0.5
    # events are in about spike units, so their mean matches the mean expected spikes per frame
    assert events.mean() == pytest.approx(truth.mean(), rel=0.25)


def test_file_round_trip_and_command(tmp_path, tiny, capsys):
    path = tmp_path / "tiny_data.h5"
    write_dataset(path, tiny)
    back = read_dataset_for(path, "zig")
    np.testing.assert_array_equal(back.data, tiny.data)
    np.testing.assert_array_equal(back.attrs["scan_offsets"], tiny.attrs["scan_offsets"])
    out = tmp_path / "cli_data.h5"
    code = main(["synth", "lorenz-2p", str(out), "--neurons", "5", "--conditions", "3", "--trials-per-condition", "4",
                 "--frames", "6", "--subframe-bins", "2", "--seed", "1"])
    assert code == 0 and "12 sub-frame bins" in capsys.readouterr().out
    written = read_dataset_for(out, "zig")
    assert written.data.shape == (12, 12, 5) and written.attrs["subframe_bins"] == 2


def test_short_zig_training_run_gives_finite_rates_and_zig_parameters(tiny):
    config = LfadsConfig(observation="zig", ic_enc_dim=8, ci_enc_dim=6, con_dim=6, co_dim=1, ic_dim=4, gen_dim=10,
                         factors_dim=4, batch_size=8, device="cpu", kl_increase_epochs=2, l2_increase_epochs=2,
                         keep_ratio=0.8, seed=0)
    train, valid = tiny.data[:18], tiny.data[18:]
    trainer = LfadsTrainer(config, train, valid)
    smallest_event = train[train > 0].min()
    assert isinstance(trainer.config.s_min, float) and 0 < trainer.config.s_min < smallest_event
    for _ in range(3):
        row = trainer.step_epoch()
        assert math.isfinite(row["loss"]) and math.isfinite(row["valid_nll"])
    inferred = infer(trainer.model, valid, num_samples=3)
    assert inferred["rates"].shape == valid.shape and np.all(np.isfinite(inferred["rates"]))
    assert {"q", "alpha", "beta"} <= set(inferred)
    q, alpha, beta = inferred["q"], inferred["alpha"], inferred["beta"]
    assert q.shape == alpha.shape == beta.shape == valid.shape
    assert np.all((q > 0) & (q < 1)) and np.all(alpha > 0) and np.all(beta > 0)
    # the inferred rate is the ZIG mean q * (alpha / beta + s_min): check on the posterior-mean pass
    with torch.no_grad():
        visible = torch.tensor(~np.isnan(valid), dtype=torch.float32)  # what the encoders would see with mask_as_input
        readout = trainer.model(torch.nan_to_num(torch.tensor(valid)), sample_posteriors=False,
                                encoder_visible=visible).readout
        params = {k: v.numpy() for k, v in trainer.model.observation.named_params(readout).items()}
    expected = params["q"] * (params["alpha"] / params["beta"] + trainer.config.s_min)
    np.testing.assert_allclose(inferred["rates_posterior_mean"], expected, rtol=1e-5)


def test_recording_is_the_fluorescence_behind_the_events_and_kinetics_are_named(tiny):
    from neurodyn.data.deconvolution import deconvolve_traces
    from neurodyn.data.event_timing import event_delay_ms
    from neurodyn.data.subframe import bin_subframes
    from neurodyn.errors import NeurodynError
    from neurodyn.synth.lorenz_2p import make_lorenz_2p_recording

    recording, starts = make_lorenz_2p_recording(**TINY)
    frames_per_trial = TINY["iti_frames"] + TINY["num_frames"]
    assert recording.fluorescence.shape == (12, 24 * frames_per_trial) and recording.neuropil is None
    np.testing.assert_allclose(starts * recording.frame_rate_hz, np.arange(24) * frames_per_trial + TINY["iti_frames"])
    # Deconvolved as the generator does (known decay, baseline 0) and binned at each scan line: the set's events.
    events = deconvolve_traces(recording.fluorescence, recording.frame_rate_hz, decay_s=0.3, baseline=0.0,
                               min_event_size=0.1)
    events = events.reshape(12, 24, frames_per_trial)[:, :, TINY["iti_frames"]:].transpose(1, 2, 0)
    offsets = (recording.roi_lines + 0.5) / recording.lines_per_frame
    np.testing.assert_allclose(bin_subframes(events, offsets, TINY["subframe_bins"]), tiny.data, rtol=1e-6, atol=1e-7)
    attrs = tiny.attrs
    assert attrs["event_kinetics_source"] == "decay given, rise given"
    assert (attrs["indicator_decay_ms"], attrs["indicator_rise_ms"], attrs["deconvolution_rise_ms"]) == (300.0, 20.0, 0.0)
    assert attrs["event_delay_ms"] == event_delay_ms(32.0, 300.0, 20.0)
    with pytest.raises(NeurodynError, match=r"unknown setting\(s\) \['neurons'\]"):
        make_lorenz_2p_recording(neurons=3)
