"""Single-trial inputs: does the LFADS controller find input kicks on trials that never repeat?

Data: ``synth.lorenz_kicks`` (``neurodyn synth lorenz-kicks``): 29 Poisson neurons driven by the
Lorenz system, 50 bins of 20 ms, every trial its own initial state, and one kick per trial (a push
of size 30 of the Lorenz state along x with a random sign over 2 bins, at a random bin from 10 to
40). 20% of the trials (seeded) are the test split; the rest are split by ``valid_ratio`` (0.2) into training
and validation trials. Test trials are never trained on nor used for early stopping.

Models, each trained once with the ``LfadsConfig`` defaults except what the comparison needs:

* autonomous: ``co_dim 0`` (the default);
* controller: ``co_dim 2`` (inferred inputs), every other key default;
* ext_input: ``co_dim 0``, the kick given as the measured input ``ext_input`` (its sign at the
  kick's bins), so the generator is told when and which way the state was pushed;
* Gaussian smoothing of the spike counts (no model): the kernel width (1-16 bins) that gives the
  best R^2 against the true rates of the validation trials (an oracle choice that favours it);
* ideal: the ceiling on kicks found. An observer that knows the Lorenz flow, the readout, each
  trial's state at bin 0 and the kick's axis and size picks the maximum-likelihood kick bin and sign
  under the Poisson counts; it misses a kick only where spike noise hides it.

Scores on the test trials: rate R^2 against the true rates (``evaluate.metrics.rate_r2``) of the
rates from standard inference (each trial's own posterior, sampled ``posterior_samples`` times and
averaged); for the controller, "kicks found": the share of test trials whose inferred inputs peak
within 2 bins of the true kick bin. The rule: per trial, subtract each inferred-input dimension's
median over time, take the Euclidean norm over dimensions at each bin, and find its largest value
in bins ``earliest_kick_bin - 2`` .. end (bins 8-49 at the defaults), so the first bins, where the
inferred inputs stand in for the initial condition, are left out. "chance" is the share a peak
drawn uniformly in that window would score.

Usage (models trained ``--processes`` at a time, one torch thread each)::

    PYTHONPATH=src python bench/single_trial_inputs.py [--trials 800] [--epochs 400] [--processes 2]
        [--models autonomous controller ext_input smoothing ideal] [--set KEY=VALUE ...] [--kick-size 30]
        [--neurons 29] [--seed 0] [--save-json FILE] [--quick]   (6 min on 2 idle cores, up to 17 when shared)

``--set`` changes LfadsConfig keys of the models that use them (e.g. ``--set kl_co_weight=1e-5``
for the investigation of the controller's settings); the table names them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from _common import commit_line, machine_line

# The data design (the Lorenz spiking benchmark's sizes, trials that never repeat). Kick size 30: the
# smallest size measured at which the ideal observer finds (nearly) every kick (99%; 98% at 20, 86% at
# 10), so "kicks found" measures the model rather than the spike noise (bench/README_single_trial.md).
DATA = dict(num_neurons=29, num_samples=50, bin_ms=20.0, kick_size=30.0, kick_duration_bins=2, kick_axes="x",
            earliest_kick_bin=10)
TEST_FRACTION = 0.2
# Bins either side of the true kick bin within which an inferred-input peak counts as found.
KICK_TOLERANCE_BINS = 2
SMOOTHING_WIDTHS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)  # Gaussian kernel std, bins
# What each model changes from the LfadsConfig defaults.
MODELS = {
    "autonomous": dict(co_dim=0),
    "controller": dict(co_dim=2),
    "ext_input": dict(co_dim=0),  # ext_input_dim is set from the data
}
CONTROLLER_KEYS = {"co_dim", "ci_enc_dim", "ci_lag", "con_dim", "co_prior", "co_prior_df", "co_prior_tau",
                   "co_prior_nvar", "kl_co_weight", "l2_con_scale"}


def make_data(trials: int, seed: int, design: dict):
    from neurodyn.synth.lorenz_kicks import make_lorenz_kicks

    return make_lorenz_kicks(num_trials=trials, seed=seed, **design)


def split_roles(num_trials: int, valid_ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, valid, test) trial indices: a seeded test fraction, the rest split by ``valid_ratio``."""
    from neurodyn.data.seed_format import split_trials

    order = np.random.default_rng(seed + 1).permutation(num_trials)
    num_test = int(round(TEST_FRACTION * num_trials))
    test, rest = np.sort(order[:num_test]), np.sort(order[num_test:])
    train_pos, valid_pos = split_trials(rest.size, valid_ratio, seed)
    return rest[train_pos], rest[valid_pos], test


def kick_peak_bins(inferred_inputs: np.ndarray, first_bin: int) -> np.ndarray:
    """Per trial, the bin (>= ``first_bin``) where the inferred inputs ``(trials, T, co_dim)`` deviate most
    from their own per-dimension median over time (Euclidean norm over dimensions)."""
    deviation = inferred_inputs - np.median(inferred_inputs, axis=1, keepdims=True)
    magnitude = np.linalg.norm(deviation, axis=-1)[:, first_bin:]
    return first_bin + np.argmax(magnitude, axis=1)


def kick_contrast(inferred_inputs: np.ndarray, kick_bin: np.ndarray, first_bin: int, tolerance: int) -> float:
    """How much the inferred inputs stand out at the kick: their mean deviation (as in ``kick_peak_bins``)
    within ``tolerance`` bins of the kick over their mean deviation at the other bins from ``first_bin`` on."""
    deviation = np.linalg.norm(inferred_inputs - np.median(inferred_inputs, axis=1, keepdims=True), axis=-1)
    bins = np.arange(inferred_inputs.shape[1])
    near = np.abs(bins[None] - kick_bin[:, None]) <= tolerance
    window = bins[None] >= first_bin
    return float(deviation[near & window].mean() / deviation[~near & window].mean())


def kicks_found(peaks: np.ndarray, kick_bin: np.ndarray, tolerance: int) -> float:
    return float(np.mean(np.abs(peaks - kick_bin) <= tolerance))


def chance_found(kick_bin: np.ndarray, first_bin: int, num_samples: int, tolerance: int) -> float:
    """The share a peak drawn uniformly from bins ``first_bin .. num_samples - 1`` would score."""
    window = np.arange(first_bin, num_samples)
    return float(np.mean([np.mean(np.abs(window - k) <= tolerance) for k in kick_bin]))


def ideal_observer_kick_bins(dataset, trials: np.ndarray, first_bin: int) -> np.ndarray:
    """The kick bin an ideal observer picks for each of ``trials``: it knows the Lorenz flow, the readout, each
    trial's state at bin 0 and the kick's axis and size, and takes the maximum-likelihood kick (bin in
    ``first_bin .. T - 2`` and sign) under the Poisson counts. A ceiling on "kicks found": what is left is the
    spike noise, not the model's ignorance of the dynamics or the initial state."""
    from neurodyn.synth.lorenz_kicks import kicked_lorenz_states

    attrs = dataset.attrs
    mean, std = np.asarray(attrs["latent_mean"]), np.asarray(attrs["latent_std"])
    weights, bias = np.asarray(attrs["readout_weights"]), np.asarray(attrs["readout_bias"])
    axis = np.asarray(attrs["kick_axis"])[trials]
    start = dataset.latents[trials, 0] * std + mean  # bin 0 comes before any kick
    counts = dataset.data[trials].astype(np.float64)
    push_size = attrs["kick_size"] / (attrs["kick_duration_bins"] * attrs["lorenz_time_per_bin"])
    candidates = [(k, sign) for k in range(first_bin, dataset.num_samples - 1) for sign in (-1.0, 1.0)]
    log_likelihood = np.empty((trials.size, len(candidates)))
    for j, (k, sign) in enumerate(candidates):
        push = np.zeros((trials.size, 3))
        push[np.arange(trials.size), axis] = sign * push_size
        states = kicked_lorenz_states(start, dataset.num_samples, attrs["lorenz_time_per_bin"],
                                      attrs["integration_steps_per_bin"], np.full(trials.size, k), push,
                                      attrs["kick_duration_bins"])
        log_rates = ((states - mean) / std) @ weights.T + bias
        log_likelihood[:, j] = (counts * log_rates - np.exp(log_rates)).sum(axis=(1, 2))
    return np.array([candidates[j][0] for j in log_likelihood.argmax(axis=1)])


def ideal_observer_score(trials: int, seed: int, design: dict) -> dict:
    """Kicks found by the ideal observer (``ideal_observer_kick_bins``) on the test trials."""
    from neurodyn.config import LfadsConfig

    started = time.perf_counter()
    dataset = make_data(trials, seed, design)
    _, _, test = split_roles(dataset.num_trials, LfadsConfig().valid_ratio, seed)
    kick_bin = np.asarray(dataset.attrs["kick_bin"])[test]
    first_bin = DATA["earliest_kick_bin"] - KICK_TOLERANCE_BINS
    peaks = ideal_observer_kick_bins(dataset, test, first_bin)
    return dict(model="ideal", found=kicks_found(peaks, kick_bin, KICK_TOLERANCE_BINS),
                chance=chance_found(kick_bin, first_bin, dataset.num_samples, KICK_TOLERANCE_BINS),
                peak_offset_median=float(np.median(peaks - kick_bin)), seconds=time.perf_counter() - started)


def train_and_score(name: str, trials: int, seed: int, design: dict, epochs: int | None, overrides: dict,
                    quick: bool) -> dict:
    """Train one model (in a worker process with one torch thread) and score it on the test trials."""
    import torch

    torch.set_num_threads(1)
    from neurodyn.config import LfadsConfig
    from neurodyn.evaluate.metrics import rate_r2
    from neurodyn.train.inference import infer
    from neurodyn.train.trainer import LfadsTrainer

    started = time.perf_counter()
    dataset = make_data(trials, seed, design)
    settings = dict(MODELS[name], seed=seed, device="cpu")
    uses_controller = settings["co_dim"] > 0
    settings.update({k: v for k, v in overrides.items() if uses_controller or k not in CONTROLLER_KEYS})
    if name == "ext_input":
        settings["ext_input_dim"] = dataset.ext_input_dim
    if epochs is not None:
        settings["max_epochs"] = epochs
    if quick:
        settings.update(kl_increase_epochs=1, l2_increase_epochs=1, posterior_samples=5)
    config = LfadsConfig(**settings)
    train, valid, test = split_roles(dataset.num_trials, config.valid_ratio, seed)
    ext = dataset.ext_input if name == "ext_input" else None
    trainer = LfadsTrainer(config, dataset.data[train], dataset.data[valid],
                           train_ext_input=None if ext is None else ext[train],
                           valid_ext_input=None if ext is None else ext[valid])
    trainer.fit(progress=False)  # early stopping on the smoothed validation NLL; best weights restored
    outputs = infer(trainer.model, dataset.data[test], config.posterior_samples, config.valid_batch_size, seed,
                    ext_input=None if ext is None else ext[test])
    row = dict(model=name, r2=rate_r2(dataset.truth[test], outputs["rates"]), epochs=trainer.epoch,
               best_epoch=trainer.best_epoch, valid_nll=trainer.best_valid_nll,
               seconds=time.perf_counter() - started,
               history=[{k: float(v) for k, v in epoch.items()} for epoch in trainer.history])
    if "inferred_inputs" in outputs:
        kick_bin = np.asarray(dataset.attrs["kick_bin"])[test]
        first_bin = DATA["earliest_kick_bin"] - KICK_TOLERANCE_BINS
        peaks = kick_peak_bins(outputs["inferred_inputs"], first_bin)
        row.update(found=kicks_found(peaks, kick_bin, KICK_TOLERANCE_BINS),
                   chance=chance_found(kick_bin, first_bin, dataset.num_samples, KICK_TOLERANCE_BINS),
                   peak_offset_median=float(np.median(peaks - kick_bin)),
                   contrast=kick_contrast(outputs["inferred_inputs"], kick_bin, first_bin, KICK_TOLERANCE_BINS),
                   kl_co=float(trainer.history[-1]["kl_co"]))
    return row


def smoothing_score(trials: int, seed: int, design: dict) -> dict:
    """Gaussian smoothing of the counts: width chosen on the validation trials' true rates, scored on test."""
    from scipy.ndimage import gaussian_filter1d

    from neurodyn.config import LfadsConfig
    from neurodyn.evaluate.metrics import rate_r2

    started = time.perf_counter()
    dataset = make_data(trials, seed, design)
    _, valid, test = split_roles(dataset.num_trials, LfadsConfig().valid_ratio, seed)

    def smoothed(idx, width):
        return gaussian_filter1d(dataset.data[idx].astype(np.float64), width, axis=1)

    width = max(SMOOTHING_WIDTHS, key=lambda w: rate_r2(dataset.truth[valid], smoothed(valid, w)))
    return dict(model="smoothing", r2=rate_r2(dataset.truth[test], smoothed(test, width)), width=width,
                seconds=time.perf_counter() - started)


# Rows computed without training, in this process.
SCORES = {"smoothing": smoothing_score, "ideal": ideal_observer_score}


def parse_overrides(pairs: list[str]) -> dict:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            overrides[key] = int(value)
        except ValueError:
            try:
                overrides[key] = float(value)  # YAML would read 1e-3 as text
            except ValueError:
                overrides[key] = yaml.safe_load(value)
    return overrides


def print_table(rows: list[dict], args, overrides: dict, wall: float, num_test: int, commit: str) -> None:
    import torch

    print(f"\nSingle-trial inputs: Lorenz kicks, {args.trials} trials ({num_test} test) x {DATA['num_samples']} bins "
          f"x {args.neurons} neurons, kick size {args.kick_size:g} along {DATA['kick_axes']}, seed "
          f"{args.seed}")
    print(f"finished: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; commit at the start: {commit}; "
          f"torch {torch.__version__}")
    print(f"machine: {machine_line()}")
    print(f"command: {' '.join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])}")
    if overrides:
        print(f"config changes from the defaults besides co_dim: {overrides}")
    header = (f"{'model':<12} | {'test rate R^2':>13} | {'kicks found':>11} | {'chance':>6} | {'peak - kick':>11} | "
              f"{'contrast':>8} | "
              f"{'epochs (best)':>13} | {'wall s':>6}")
    print(header)
    print("-" * len(header))
    order = {name: i for i, name in enumerate([*MODELS, *SCORES])}
    for row in sorted(rows, key=lambda r: order[r["model"]]):
        found = f"{row['found']:.0%}" if "found" in row else "-"
        chance = f"{row['chance']:.0%}" if "chance" in row else "-"
        offset = f"{row['peak_offset_median']:+.0f}" if "peak_offset_median" in row else "-"
        contrast = f"{row['contrast']:.2f}" if "contrast" in row else "-"
        epochs = (f"{row['epochs']} ({row['best_epoch']})" if "epochs" in row
                  else f"width {row['width']:g} bins" if "width" in row else "-")
        r2 = f"{row['r2']:.3f}" if "r2" in row else "-"
        print(f"{row['model']:<12} | {r2:>13} | {found:>11} | {chance:>6} | {offset:>11} | {contrast:>8} | "
              f"{epochs:>13} | "
              f"{row['seconds']:>6.0f}")
    print(f"wall {wall:.0f} s ({wall / 60:.1f} min); 'peak - kick' is the median offset (bins) of the inferred-input "
          f"peak from the kick bin; found = within {KICK_TOLERANCE_BINS} bins; contrast = mean inferred-input "
          f"deviation near the kick / elsewhere")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=800, help="trials (each its own initial state; 20%% test)")
    parser.add_argument("--epochs", type=int, default=None, help="max_epochs (default: the config default, 400)")
    parser.add_argument("--processes", type=int, default=2, help="models trained at once (one thread each)")
    parser.add_argument("--models", nargs="+", default=[*MODELS, *SCORES], choices=[*MODELS, *SCORES])
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="LfadsConfig keys changed from the defaults (controller keys only for the controller)")
    parser.add_argument("--seed", type=int, default=0, help="data, split, initialisation and sampling seed")
    parser.add_argument("--kick-size", type=float, default=DATA["kick_size"],
                        help="kick strength in Lorenz units (the attractor's std is about 8 per axis; default: 30)")
    parser.add_argument("--neurons", type=int, default=DATA["num_neurons"], help="neurons (default: 29)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 120 trials, 3 epochs, 5 samples")
    parser.add_argument("--save-json", metavar="FILE", help="also write the rows and training histories as JSON")
    args = parser.parse_args()
    overrides = parse_overrides(args.overrides)
    commit = commit_line()
    if args.quick:
        args.trials, args.epochs = 120, 3
    started = time.perf_counter()
    rows = []
    design = {**DATA, "kick_size": args.kick_size, "num_neurons": args.neurons}
    rows.extend(SCORES[name](args.trials, args.seed, design) for name in args.models if name in SCORES)
    names = [m for m in args.models if m not in SCORES]
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, args.processes)) as pool:
        futures = [pool.submit(train_and_score, name, args.trials, args.seed, design, args.epochs, overrides,
                               args.quick)
                   for name in names]
        for future in concurrent.futures.as_completed(futures):
            row = future.result()
            rows.append(row)
            extra = (f", kicks found {row['found']:.0%} (chance {row['chance']:.0%}), contrast {row['contrast']:.2f}, "
                     f"last kl_co {row['kl_co']:.3g}" if "found" in row else "")
            print(f"{row['model']}: test R^2 {row['r2']:.3f}{extra}, {row['epochs']} epochs (best "
                  f"{row['best_epoch']}), {row['seconds']:.0f} s", flush=True)
    num_test = int(round(TEST_FRACTION * args.trials))
    print_table(rows, args, overrides, time.perf_counter() - started, num_test, commit)
    if args.save_json:
        from neurodyn.data.atomic import write_text_atomic

        write_text_atomic(args.save_json, json.dumps({"command": sys.argv, "commit": commit, "overrides": overrides,
                                                        "rows": rows}))


if __name__ == "__main__":
    main()
