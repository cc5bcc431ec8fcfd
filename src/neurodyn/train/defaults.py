"""Settings that default to values derived from the data (``auto`` in the config).

The right batch size, learning rate, encoder input and coordinated dropout's gradient depend on the
data a user brings: with 480 training trials and 128 trials per step an epoch is 3-4 optimiser
steps, far too few. A config that sets a key keeps it; ``auto`` keys are resolved here, once, from
the training trials, and the values used are written to the run's ``config.yaml`` and stated in its
log.
"""

from __future__ import annotations

import math

import numpy as np

from neurodyn.config import LfadsConfig

# Trials per step: the largest power of two <= training trials / STEPS_PER_EPOCH, within these bounds.
STEPS_PER_EPOCH = 16
BATCH_BOUNDS = (16, 128)
# Learning rate at 128 trials per step (the earlier default), scaled as batch_size ** LR_EXPONENT:
# 0.0025 at 16 trials per step, where small 2-photon sets train best (bench/radical_batch_size.py).
REFERENCE_LR, REFERENCE_BATCH, LR_EXPONENT = 4e-3, 128, 0.226
# Observation models whose encoders see the observation mask when entries are unobserved
# (mask_as_input: auto): none. Measured with everything else equal, the mask cost accuracy on every
# set: 2-photon events in sub-frame bins, latent R^2 0.968 on / 0.978 off (bench/defaults_heldout.py
# --sets 2p); the RADICaL demo's population 0.916 on / 0.966 off; 3 of 35 spiking neurons observed,
# rate R^2 0.540 on / 0.567 off and 0.546 / 0.590 (bench/README_defaults.md).
MASK_INPUT_OBSERVATIONS: tuple[str, ...] = ()
# cd_pass_fraction: auto. Pure coordinated dropout trains only on the entries the encoder did not see;
# when fewer than 1 in 5 entries is observed at all (SPARSE_UNOBSERVED), that leaves a few entries per
# bin, and letting some of the seen entries pass gradient too (SPARSE_PASS) measured better
# (bench/README_defaults.md, 3 of 35 spiking neurons per bin). Denser data keep pure CD.
SPARSE_UNOBSERVED, SPARSE_PASS = 0.8, 0.2
# inference: auto. Above REFINE_UNOBSERVED each trial's posterior is refined on its own ELBO before it
# is sampled (train.posterior_refinement). Rate or latent R^2, encoder -> refined, two seeds where two
# are given: 3 of 35 spiking neurons per bin (91% unobserved) 0.884 -> 0.908, 0.880 -> 0.894; 2-photon
# sub-frame bins (75%) 0.978 -> 0.989, 0.980 -> 0.989 (bench/README_defaults.md); 10 of 29 Lorenz
# neurons per bin (66%) 0.929 -> 0.944, 0.925 -> 0.942; 15 of 29 (48%) 0.947 -> 0.954; 20 of 29 (31%)
# 0.966 -> 0.970; fully observed 0.959 -> 0.963 (bench/sbtt_sweep.py). Refining costs time (with 100
# steps about as much again as training on the 2-photon set; the default is now 50); below half
# unobserved it gained under 0.01, so denser data keep the encoder's posterior.
REFINE_UNOBSERVED = 0.5
# kl_ic_weight / kl_co_weight: auto. The reconstruction term is a mean over entries and the KL a sum
# per trial, so a fixed weight w makes a trial's KL weigh w x (bins x neurons) against that trial's
# summed evidence: 0.15 on the 29-neuron, 50-bin Lorenz set the old default 1e-4 was tuned on, but 2.6
# on NLB's MC_Maze_Small (142 neurons x 180 bins), where the IC posterior collapsed (KL_ic under 1 nat
# per trial, co-bps 0.122, vel R^2 0.131 over seeds 0 1; kl_ic_weight 1e-5: 0.147 and 0.251; 1e-6:
# 0.130 and 0.253; bench/README_suite.md). The weight is capped so that this ratio stays at most
# KL_TRIAL_SHARE, and never above KL_MAX_WEIGHT (the old default, kept on small trials).
KL_MAX_WEIGHT, KL_TRIAL_SHARE = 1e-4, 0.25
# co_dim: auto. With a controller (CONTROLLER_DIM inferred inputs) the first metric of every set of the
# suite with at least 1 in 4 entries observed rose or held, two seeds each (bench/suite.py --seeds 0 1,
# docs/benchmarks.md: MC_Maze_Small co-bps 0.163 -> 0.205, M1 0.067 -> 0.078, chaotic RNN rate R^2
# 0.682 -> 0.737, input-driven 0.601 -> 0.724, 2-photon events in 4 sub-frame bins latent R^2 0.975 ->
# 0.987, Lorenz 0.975 -> 0.977), while on both sets with fewer than 1 in 5 observed it fell far beyond
# their seed spread (3 of 35 spiking neurons per bin 0.588 -> 0.354; 10 of 100 0.516 -> -0.91;
# bench/README_suite.md). The sparse side is the one that already departs from pure coordinated
# dropout (SPARSE_UNOBSERVED), so one threshold says what "sparse" is.
CONTROLLER_DIM = 4
# spike_jitter_bins: auto. Spikes move by up to SPIKE_JITTER_MS, in whole bins, when at least
# SPIKE_JITTER_MIN_BINS fit; coarser bins get none. Measured on the suite (bench/suite.py, two seeds each,
# bench/README_suite.md), first metric, mean change: 5 ms bins, 4 bins (20 ms): MC_Maze_Small co-bps
# +0.011, rnn_small rate R^2 +0.016; 10 ms bins, 2 bins (20 ms): chaotic RNN +0.009, input-driven +0.029,
# sparse input-driven +0.002. On 20 ms bins one bin (20 ms) lowered Lorenz by 0.005 (beyond its seed
# spread of 0.002) while lorenz_100 and lorenz_sparse rose; two bins (40 ms) lowered Lorenz 0.020, the
# 1000-trial RNN 0.012 and M1 (50 ms bins, 100 ms) 0.008 co-bps: a coarse bin already blurs spike
# times by its own width.
SPIKE_JITTER_MS, SPIKE_JITTER_MIN_BINS = 20.0, 2
# max_epochs and early_stopping_patience: auto. Counted in epochs, a small set gets far fewer optimiser
# steps than a large one: with 48 training trials (NLB's MC_Maze_Small, 3 steps per epoch) 400 epochs
# are 1200 steps and 40 epochs of patience 120, and both it and the 200-trial chaotic RNN trained to
# the cap. Each is its value in epochs (MIN_EPOCHS, PATIENCE_EPOCHS), raised where needed to as many
# optimiser steps as epochs of STEPS_PER_EPOCH steps give (what sets of 256 or more training trials
# already had). Suite, two seeds (bench/README_suite.md): the cap alone raised MC_Maze_Small's co-bps
# 0.216 -> 0.225 and the RNN 0.745 -> 0.747; the patience then took MC_Maze_Small to 0.234 and the
# other small sets repeated their values. The KL/L2 ramps stay in epochs: stretched the same way they
# lowered every small set's first metric.
MIN_EPOCHS, PATIENCE_EPOCHS = 400, 40
MIN_STEPS = MIN_EPOCHS * STEPS_PER_EPOCH
# sample_validation_fraction: auto. With validation: entries the held-out entries are the validation
# data, so some must be held out; without, validation trials are (and sample validation of 10% measured
# no gain beside them: docs/benchmarks.md, "Augmentations on small data").
ENTRY_VALIDATION_FRACTION = 0.1


def auto_batch_size(num_train_trials: int) -> int:
    """The largest power of two <= trials / STEPS_PER_EPOCH, clipped to BATCH_BOUNDS (all trials when fewer)."""
    if num_train_trials <= BATCH_BOUNDS[0]:
        return max(1, num_train_trials)
    target = num_train_trials / STEPS_PER_EPOCH
    power = 2 ** int(math.floor(math.log2(target))) if target >= 1 else 1
    return int(min(max(power, BATCH_BOUNDS[0]), BATCH_BOUNDS[1]))


def auto_learning_rate(batch_size: int) -> float:
    """The learning rate matched to ``batch_size`` (3 significant digits)."""
    value = REFERENCE_LR * (batch_size / REFERENCE_BATCH) ** LR_EXPONENT
    return float(f"{value:.3g}")


def epochs_for_steps(epochs: int, steps_per_epoch: int) -> int:
    """``epochs`` (a count meant for epochs of STEPS_PER_EPOCH optimiser steps) for epochs of
    ``steps_per_epoch`` steps: enough epochs for as many steps, never fewer than ``epochs``."""
    return max(epochs, math.ceil(epochs * STEPS_PER_EPOCH / max(1, steps_per_epoch)))


def auto_cd_pass_fraction(unobserved: float) -> float:
    """``cd_pass_fraction`` for data with this fraction of unobserved entries: SPARSE_PASS above
    SPARSE_UNOBSERVED, else 0 (pure coordinated dropout)."""
    return SPARSE_PASS if unobserved > SPARSE_UNOBSERVED else 0.0


def auto_kl_weight(entries_per_trial: int) -> float:
    """``kl_ic_weight`` / ``kl_co_weight`` for trials of ``entries_per_trial`` (bins x neurons) entries:
    min(KL_MAX_WEIGHT, KL_TRIAL_SHARE / entries), 3 significant digits."""
    value = min(KL_MAX_WEIGHT, KL_TRIAL_SHARE / max(1, entries_per_trial))
    return float(f"{value:.3g}")


def auto_co_dim(unobserved: float) -> int:
    """``co_dim`` for data with this fraction of unobserved entries: CONTROLLER_DIM, or 0 (an autonomous
    generator) above SPARSE_UNOBSERVED."""
    return 0 if unobserved > SPARSE_UNOBSERVED else CONTROLLER_DIM


def auto_inference(unobserved: float) -> str:
    """``inference`` for data with this fraction of unobserved entries: 'refined' above REFINE_UNOBSERVED,
    else 'sample_average'."""
    return "refined" if unobserved > REFINE_UNOBSERVED else "sample_average"


def auto_spike_jitter_bins(bin_ms: float | None, observation: str) -> int:
    """``spike_jitter_bins`` for bins of ``bin_ms`` ms: the whole bins in SPIKE_JITTER_MS when there are at
    least SPIKE_JITTER_MIN_BINS of them, else 0; 0 too for a bin width that is not known (None) and for
    observation models other than Poisson counts (no spikes to move)."""
    if observation != "poisson" or bin_ms is None or not bin_ms > 0:
        return 0
    bins = int(math.floor(SPIKE_JITTER_MS / bin_ms + 1e-9))
    return bins if bins >= SPIKE_JITTER_MIN_BINS else 0


def sample_validation_share(config: LfadsConfig) -> float:
    """The share of the training entries held out for validation: ``sample_validation_fraction``, and
    for 'auto' ENTRY_VALIDATION_FRACTION with ``validation: entries``, else 0."""
    if config.sample_validation_fraction != "auto":
        return float(config.sample_validation_fraction)
    return ENTRY_VALIDATION_FRACTION if config.validation == "entries" else 0.0


def unobserved_fraction(train_data: np.ndarray) -> float:
    """The fraction of unobserved (NaN) entries among the neurons recorded in each trial: a neuron with
    no observed entry in a trial is another session's (stitching, ``neurodyn.data.sessions``), not a
    missing sample."""
    observed = ~np.isnan(train_data)
    recorded = observed.any(axis=1, keepdims=True)  # (trials, 1, N)
    total = recorded.sum() * train_data.shape[1]
    return float(1.0 - observed.sum() / total) if total else 0.0


def data_bins(config: LfadsConfig, train_data: np.ndarray) -> np.ndarray:
    """``train_data`` ``(trials, T, N)`` without the bins an event delay appends: with ``event_delay_bins``
    d (resolved), ``neurodyn.train.run.read_model_dataset`` follows each trial with d unobserved bins
    so the model runs d bins past the data; they are no sample of the data's, so the fraction of
    unobserved entries leaves them out. The last d bins are dropped only when no trial observes
    anything in them (data handed in without that padding are taken whole)."""
    delay = config.event_delay_bins
    if delay == "auto" or not 0 < int(delay) < train_data.shape[1]:
        return train_data
    tail = train_data[:, train_data.shape[1] - int(delay):]
    return train_data[:, :train_data.shape[1] - int(delay)] if np.isnan(tail).all() else train_data


def training_unobserved_fraction(config: LfadsConfig, train_data: np.ndarray) -> float:
    """The fraction of unobserved entries that decides ``cd_pass_fraction: auto`` and ``inference: auto``:
    over every entry of the data's own bins (the event delay's padding left out, ``data_bins``) —
    held-out neurons and forward-prediction bins included, as they are entries of the data; for
    several sessions among the neurons each trial records (``unobserved_fraction``)."""
    bins = data_bins(config, train_data)
    if len(config.session_neurons) > 1:
        return unobserved_fraction(bins)
    return float(np.isnan(bins).mean()) if bins.size else 0.0


def resolve_data_defaults(config: LfadsConfig, train_data: np.ndarray, bin_ms: float | None = None,
                          held_out: np.ndarray | None = None) -> tuple[LfadsConfig, list[str]]:
    """``config`` with its ``auto`` keys resolved from ``train_data`` ``(trials, T, N)`` (NaN = unobserved)
    and the bin width ``bin_ms`` (ms; None when the data file does not record it), and one line per
    resolved key saying what was chosen and why.

    ``train_data`` is the training trials as the model sees them: with ``event_delay_bins`` d, their
    last d bins are the unobserved padding ``read_model_dataset`` appends, which the fraction of
    unobserved entries (``training_unobserved_fraction``) leaves out. ``held_out`` (shaped like it, NaN
    elsewhere): the entries held out of it for validation, which count as observed here: holding
    entries out must not change what the data are."""
    if held_out is not None:
        train_data = np.where(np.isnan(train_data), held_out, train_data)
    updates, notes = {}, []
    num_trials = int(train_data.shape[0])
    batch_size = config.batch_size
    if batch_size == "auto":
        batch_size = auto_batch_size(num_trials)
        updates["batch_size"] = batch_size
        notes.append(f"batch_size auto -> {batch_size} ({num_trials} training trials: "
                     f"{math.ceil(num_trials / batch_size)} steps per epoch)")
    steps = math.ceil(num_trials / int(batch_size))
    if config.max_epochs == "auto":
        updates["max_epochs"] = epochs_for_steps(MIN_EPOCHS, steps)
        if updates["max_epochs"] > MIN_EPOCHS:  # stated when it departs from the plain cap
            notes.append(f"max_epochs auto -> {updates['max_epochs']} ({steps} steps per epoch: at least {MIN_STEPS} "
                         "optimiser steps before the cap)")
    if config.early_stopping_patience == "auto":
        updates["early_stopping_patience"] = epochs_for_steps(PATIENCE_EPOCHS, steps)
        if updates["early_stopping_patience"] > PATIENCE_EPOCHS:
            notes.append(f"early_stopping_patience auto -> {updates['early_stopping_patience']} ({steps} steps per "
                         f"epoch: at least {PATIENCE_EPOCHS * STEPS_PER_EPOCH} optimiser steps without a better "
                         "validation NLL before stopping)")
    if config.learning_rate_init == "auto":
        updates["learning_rate_init"] = auto_learning_rate(int(batch_size))
        notes.append(f"learning_rate_init auto -> {updates['learning_rate_init']:g} (matched to {batch_size} trials "
                     "per step)")
    unobserved = training_unobserved_fraction(config, train_data)
    co_dim = config.co_dim
    if co_dim == "auto":
        co_dim = updates["co_dim"] = auto_co_dim(unobserved)
        why = (f"more than {SPARSE_UNOBSERVED:.0%} of the training entries are unobserved: no controller" if not co_dim
               else f"{1 - unobserved:.0%} of the training entries are observed: a controller infers inputs")
        notes.append(f"co_dim auto -> {co_dim} ({why})")
    entries = int(np.prod(data_bins(config, train_data).shape[1:]))
    for key in ("kl_ic_weight", "kl_co_weight"):
        if getattr(config, key) == "auto":
            updates[key] = auto_kl_weight(entries)
            if updates[key] < KL_MAX_WEIGHT and (key == "kl_ic_weight" or co_dim):
                notes.append(f"{key} auto -> {updates[key]:g} ({entries} entries per trial: a trial's KL weighs at "
                             f"most {KL_TRIAL_SHARE:g} of its summed reconstruction)")
    if config.cd_pass_fraction == "auto":
        updates["cd_pass_fraction"] = auto_cd_pass_fraction(unobserved)
        if updates["cd_pass_fraction"]:  # stated when it departs from pure coordinated dropout
            notes.append(f"cd_pass_fraction auto -> {updates['cd_pass_fraction']:g} ({unobserved:.0%} of the "
                         f"training entries are unobserved, more than {SPARSE_UNOBSERVED:.0%}: some entries the "
                         "encoder sees also train)")
    if config.inference == "auto":
        updates["inference"] = auto_inference(unobserved)
        if updates["inference"] == "refined":  # stated when it departs from the encoder's posterior
            notes.append(f"inference auto -> refined ({unobserved:.0%} of the training entries are unobserved, more "
                         f"than {REFINE_UNOBSERVED:.0%}: each trial's posterior is refined on its own data)")
    if config.spike_jitter_bins == "auto":
        jitter = updates["spike_jitter_bins"] = auto_spike_jitter_bins(bin_ms, config.observation)
        # Stated when spikes move, and when the bin width that would decide it is missing.
        if config.observation == "poisson" and (bin_ms is None or not bin_ms > 0):
            notes.append("spike_jitter_bins auto -> 0 (the data do not record their bin width 'bin_ms')")
        elif jitter:
            notes.append(f"spike_jitter_bins auto -> {jitter} ({bin_ms:g} ms bins: during training each spike moves "
                         f"by up to {jitter * bin_ms:g} ms)")
    if config.mask_as_input == "auto":
        on = unobserved > 0 and config.observation in MASK_INPUT_OBSERVATIONS
        updates["mask_as_input"] = on
        why = f"{unobserved:.0%} of the training entries are unobserved"
        if unobserved > 0 and not on:
            why += "; the mask measured worse on every benchmark set"
        notes.append(f"mask_as_input auto -> {'on' if on else 'off'} ({why})")
    if not updates:
        return config, []
    return LfadsConfig(**{**config.model_dump(), **updates}), notes
