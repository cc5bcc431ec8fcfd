"""Synthetic 2-photon calcium imaging of a Lorenz-driven population (RADICaL's example dataset design).

Generative model (time in fine "spike steps", ``spike_steps_per_subframe`` per sub-frame bin and
``K = subframe_bins`` sub-frame bins per frame):

1. Lorenz latents per condition at every spike step, ``lorenz_speed`` Lorenz time units per
   second, z-scored per dimension (``synth.lorenz_spikes``); each trial is preceded by
   ``iti_frames`` frames of the same trajectory (inter-trial interval) so that its calcium starts
   from a realistic level.
2. Rates log-linear in the latents, each neuron spanning ``[min_rate_hz, max_rate_hz]``; Poisson
   spikes per step, drawn anew for every trial.
3. Fluorescence (dF/F, in units of one spike's peak): spikes convolved with a GCaMP-like kernel
   ``exp(-t / decay) - exp(-t / rise)`` scaled to peak 1, in one continuous session (trials back to
   back), sampled once per frame at each neuron's own scan time, plus Gaussian noise ``noise_std``.
4. Events: each neuron's session trace deconvolved by OASIS (AR(1) with the known decay, L1
   sparsity, noise estimated from the trace, baseline 0); events below ``min_event_size`` (L1
   fragments) are set to zero -> ``data.deconvolution``.
5. Sub-frame binning: each frame's event goes into the sub-bin holding the neuron's scan time,
   the other K - 1 sub-bins are NaN -> ``data.subframe``.

Outputs (trials-first, ``frames * K`` sub-bins): ``data`` events (NaN = not sampled);
``truth`` the firing rate averaged over each sub-bin times the frame duration, i.e. the expected
spikes per frame at that sub-bin's rate; ``latents`` the z-scored Lorenz state averaged over each
sub-bin; ``condition``. Each observation is one frame's event, in units of about one spike
(``attrs['event_size_per_spike']`` is the measured ratio), so ``truth`` is on the scale of the
inferred event rate while keeping sub-frame time resolution. An event sums the spikes of about
the frame before the scan, seen through the indicator's rise, so it trails ``truth`` and
``latents``: ``attrs['event_delay_ms']`` is that delay (``data.event_timing``), which training
removes by default (``event_delay_bins: auto``); ``indicator_decay_ms``, ``indicator_rise_ms`` and
``event_kinetics_source`` ("decay given, rise given": the true kinetics) name what it assumes, as
``neurodyn prepare 2p`` does for a recording. The latent R^2 is the primary metric.

``make_lorenz_2p_recording`` returns the fluorescence behind the events (steps 1-3) as a recording
for ``data.prepare_2p``, to test the real-data pipeline against the known truth.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from neurodyn.data.deconvolution import deconvolve_traces
from neurodyn.data.event_timing import calcium_kernel_peak, resolve_event_kinetics
from neurodyn.data.prepare_2p import FluorescenceTraces
from neurodyn.data.seed_format import NeuralDataset
from neurodyn.data.subframe import bin_subframes
from neurodyn.errors import NeurodynError
from neurodyn.synth.lorenz import BETA, RHO, SIGMA
from neurodyn.synth.lorenz_spikes import lorenz_population


def calcium_trace(spikes: np.ndarray, step_s: float, rise_s: float, decay_s: float) -> np.ndarray:
    """Calcium ``(..., steps)`` from spike counts per step: each spike adds the kernel (peak 1) from the next step on."""
    decay = lfilter([1.0], [1.0, -np.exp(-step_s / decay_s)], spikes, axis=-1)
    rise = lfilter([1.0], [1.0, -np.exp(-step_s / rise_s)], spikes, axis=-1)
    return (decay - rise) / calcium_kernel_peak(rise_s, decay_s)


def stratified_scan_steps(rng: np.random.Generator, num_neurons: int, frame_steps: int) -> np.ndarray:
    """Each neuron's scan step within the frame ``(N,)``: neurons spread evenly over the frame in random order."""
    positions = (rng.permutation(num_neurons) + rng.random(num_neurons)) / num_neurons
    return np.minimum(np.floor(positions * frame_steps).astype(np.int64), frame_steps - 1)


def make_lorenz_2p(
    num_neurons: int = 100,
    num_frames: int = 32,
    frame_rate_hz: float = 31.25,
    subframe_bins: int = 4,
    spike_steps_per_subframe: int = 8,
    num_conditions: int = 65,
    trials_per_condition: int = 24,
    lorenz_speed: float = 1.5,
    min_rate_hz: float = 2.0,
    max_rate_hz: float = 60.0,
    rise_ms: float = 20.0,
    decay_ms: float = 300.0,
    noise_std: float = 0.3,
    min_event_size: float = 0.1,
    iti_frames: int = 16,
    seed: int = 0,
    burn_in_time: float = 3.0,
    initial_state_spread: float = 10.0,
) -> NeuralDataset:
    """Generate the synthetic 2p Lorenz dataset (see the module docstring for the model).

    With the defaults: 31.25 Hz frames (32 ms) split into K = 4 sub-bins of 8 ms, 1 ms spike
    steps, 32 frames (1.02 s, 128 sub-bins) per trial, 65 conditions x 24 trials, GCaMP6f-like
    kernel (rise 20 ms, decay 300 ms), noise 0.3 x one spike's peak, events below 0.1 dropped. Trials are ordered condition
    by condition (``condition[k] = k // trials_per_condition``).
    """
    _check_settings(locals())
    session = _simulate_session(locals())
    traces, step_s, condition = session.traces, session.step_s, session.condition
    frames_per_trial, trial_start, scan_offsets = session.frames_per_trial, session.trial_start, session.scan_offsets
    num_trials, population, spikes_in_trials = condition.size, session.population, session.spikes_in_trials
    latents, condition_rates = population.latents, population.rates  # per condition; spikes per step

    events = deconvolve_traces(traces, frame_rate_hz, decay_s=decay_ms / 1000.0, baseline=0.0, penalty="l1",
                               min_event_size=min_event_size, source="lorenz-2p fluorescence, neuron")
    events = events.reshape(num_neurons, num_trials, frames_per_trial)[:, :, iti_frames:].transpose(1, 2, 0)
    data = bin_subframes(events, scan_offsets, subframe_bins, source="lorenz-2p events")

    num_subbins = num_frames * subframe_bins
    per_subbin = (num_conditions, num_subbins, spike_steps_per_subframe)
    # spikes per sub-bin x K = mean rate over the sub-bin x frame duration
    truth = subframe_bins * condition_rates[:, trial_start:].reshape(*per_subbin, num_neurons).sum(2)[condition]
    trial_latents = latents[:, trial_start:].reshape(*per_subbin, 3).mean(2)[condition]

    attrs = {
        "generator": "neurodyn lorenz-2p",
        "frame_rate_hz": float(frame_rate_hz),
        "subframe_bins": int(subframe_bins),
        "bin_ms": 1000.0 / (frame_rate_hz * subframe_bins),  # sub-frame bin width
        "scan_offsets": scan_offsets,  # (neurons,) scan time within the frame, fraction of a frame
        "truth_units": "expected spikes per frame at the sub-bin's rate (rate x frame duration)",
        "data_units": "OASIS event size; fluorescence in units of one spike's peak dF/F",
        "event_size_per_spike": float(events.sum() / max(spikes_in_trials, 1.0)),
        "spike_step_ms": 1000.0 * step_s,
        "num_frames": int(num_frames),
        "iti_frames": int(iti_frames),
        "seed": int(seed),
        "num_conditions": int(num_conditions),
        "trials_per_condition": int(trials_per_condition),
        "min_rate_hz": float(min_rate_hz),
        "max_rate_hz": float(max_rate_hz),
        "rise_ms": float(rise_ms),
        "decay_ms": float(decay_ms),
        "noise_std": float(noise_std),
        "min_event_size": float(min_event_size),
        "deconvolution": "OASIS AR(1), known decay, L1, noise estimated, baseline 0",
        # median time from the spikes behind an event to its sample (data.event_timing): the
        # training's event_delay_bins 'auto' moves events this much earlier; with the kinetics it
        # assumes (the true ones, AR(1) deconvolution), named as 'neurodyn prepare 2p' names them
        **resolve_event_kinetics(frame_rate_hz, given_decay_ms=decay_ms, given_rise_ms=rise_ms).attrs(),
        "lorenz_speed": float(lorenz_speed),  # Lorenz time units per second
        "lorenz_sigma": SIGMA,
        "lorenz_rho": RHO,
        "lorenz_beta": BETA,
        "burn_in_time": float(burn_in_time),
        "initial_state_spread": float(initial_state_spread),
        "latent_mean": population.latent_mean,  # (3,): raw Lorenz state = latents * latent_std + latent_mean
        "latent_std": population.latent_std,
        "readout_weights": population.weights,  # (neurons, 3): log(spikes per spike step) per latent unit
        "readout_bias": population.bias,  # (neurons,)
    }
    return NeuralDataset(data=data, truth=truth, latents=trial_latents, condition=condition, attrs=attrs,
                         source="<lorenz-2p>")


def make_lorenz_2p_recording(**settings) -> tuple[FluorescenceTraces, np.ndarray]:
    """The fluorescence ``make_lorenz_2p(**settings)`` deconvolves, as a recording for ``data.prepare_2p``.

    Returns the traces (one continuous session: ``(neurons, trials * (iti_frames + num_frames))``,
    frame ``f`` starting at ``f / frame_rate_hz`` s; each neuron's scan step within the frame as
    its "line", ``subframe_bins * spike_steps_per_subframe`` lines per frame; no neuropil) and
    each trial's start time ``(trials,)`` (its first frame after the ITI), so that
    ``prepare_two_photon`` cuts the same trials as ``make_lorenz_2p``, whose ``truth`` and
    ``latents`` they share.
    """
    merged = {**_DEFAULTS, **settings}
    unknown = sorted(set(settings) - set(_DEFAULTS))
    if unknown:
        raise NeurodynError(f"make_lorenz_2p_recording: unknown setting(s) {unknown}")
    _check_settings(merged)
    session = _simulate_session(merged)
    frames = session.traces.shape[1]
    first_frames = np.arange(session.condition.size) * session.frames_per_trial + merged["iti_frames"]
    traces = FluorescenceTraces(
        fluorescence=session.traces, neuropil=None, frame_times_s=np.arange(frames) / merged["frame_rate_hz"],
        frame_rate_hz=float(merged["frame_rate_hz"]), roi_lines=session.scan_steps.astype(np.float64),
        lines_per_frame=int(session.frame_steps), roi_indices=np.arange(merged["num_neurons"]),
        source="<lorenz-2p recording>")
    return traces, first_frames / merged["frame_rate_hz"]


_DEFAULTS = {name: parameter.default for name, parameter in inspect.signature(make_lorenz_2p).parameters.items()}


@dataclass(frozen=True)
class _Session:
    traces: np.ndarray  # (neurons, trials * frames_per_trial) noisy fluorescence, one sample per frame
    scan_steps: np.ndarray  # (neurons,) scan step within the frame
    scan_offsets: np.ndarray  # (neurons,) scan time, fraction of a frame
    frame_steps: int
    step_s: float
    frames_per_trial: int  # ITI + trial
    trial_start: int  # spike step at which the trial starts (after the ITI)
    condition: np.ndarray  # (trials,)
    population: object  # synth.lorenz_spikes population: latents, rates, weights, ...
    spikes_in_trials: float


def _simulate_session(settings: dict) -> _Session:
    """Steps 1-3 of the module docstring: Lorenz latents, Poisson spikes, calcium sampled per frame plus noise."""
    ic_rng, readout_rng, scan_rng, spike_rng, noise_rng = (
        np.random.default_rng(stream) for stream in np.random.SeedSequence(settings["seed"]).spawn(5))
    num_neurons, frame_rate_hz = settings["num_neurons"], settings["frame_rate_hz"]
    frame_steps = settings["subframe_bins"] * settings["spike_steps_per_subframe"]
    step_s = 1.0 / (frame_rate_hz * frame_steps)
    frames_per_trial = settings["iti_frames"] + settings["num_frames"]  # the ITI comes first, then the trial
    steps_per_trial = frames_per_trial * frame_steps
    trial_start = settings["iti_frames"] * frame_steps

    population = lorenz_population(ic_rng, readout_rng, settings["num_conditions"], steps_per_trial,
                                   settings["lorenz_speed"] * step_s, 1, settings["burn_in_time"],
                                   settings["initial_state_spread"], num_neurons, settings["min_rate_hz"] * step_s,
                                   settings["max_rate_hz"] * step_s)
    condition_rates = population.rates  # per condition; spikes per step

    scan_steps = stratified_scan_steps(scan_rng, num_neurons, frame_steps)
    scan_offsets = (scan_steps + 0.5) / frame_steps  # mid-step, so the sub-bin is unambiguous
    condition = np.repeat(np.arange(settings["num_conditions"], dtype=np.int64), settings["trials_per_condition"])

    traces = np.empty((num_neurons, condition.size * frames_per_trial))
    spikes_in_trials = 0.0
    for n in range(num_neurons):
        spikes = spike_rng.poisson(condition_rates[:, :, n][condition]).astype(np.float64)  # (trials, steps)
        spikes_in_trials += spikes[:, trial_start:].sum()
        calcium = calcium_trace(spikes.reshape(-1), step_s, settings["rise_ms"] / 1000.0,
                                settings["decay_ms"] / 1000.0)
        traces[n] = calcium[scan_steps[n]::frame_steps]
    traces += settings["noise_std"] * noise_rng.standard_normal(traces.shape)
    return _Session(traces, scan_steps, scan_offsets, frame_steps, step_s, frames_per_trial, trial_start, condition,
                    population, float(spikes_in_trials))


def _check_settings(settings: dict) -> None:
    integers = [("num_neurons", 1), ("num_frames", 2), ("subframe_bins", 1), ("spike_steps_per_subframe", 1),
                ("num_conditions", 1), ("trials_per_condition", 1), ("iti_frames", 0)]
    for name, smallest in integers:
        value = settings[name]
        if int(value) != value or value < smallest:
            raise NeurodynError(f"{name} must be an integer of at least {smallest}; got {value}")
    for name in ("frame_rate_hz", "lorenz_speed", "min_rate_hz", "rise_ms", "decay_ms"):
        if not settings[name] > 0:
            raise NeurodynError(f"{name} must be positive; got {settings[name]}")
    if not settings["max_rate_hz"] > settings["min_rate_hz"]:
        raise NeurodynError(f"max_rate_hz ({settings['max_rate_hz']}) must be greater than "
                            f"min_rate_hz ({settings['min_rate_hz']})")
    if not settings["decay_ms"] > settings["rise_ms"]:
        raise NeurodynError(f"decay_ms ({settings['decay_ms']}) must be longer than rise_ms ({settings['rise_ms']})")
    for name in ("noise_std", "min_event_size"):
        if not settings[name] >= 0:
            raise NeurodynError(f"{name} must be non-negative; got {settings[name]}")
    if settings["burn_in_time"] < 0:
        raise NeurodynError(f"burn_in_time must be non-negative; got {settings['burn_in_time']}")
    if (settings["num_frames"] + settings["iti_frames"]) * settings["num_conditions"] * settings["trials_per_condition"] < 4:
        raise NeurodynError("the session is too short to deconvolve (fewer than 4 frames)")
