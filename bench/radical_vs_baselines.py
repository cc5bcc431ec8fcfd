"""RADICaL vs frame-rate AutoLFADS vs Gaussian smoothing on fast synthetic 2p dynamics; prints a table.

The RADICaL paper's claim: with fast latent dynamics (a Lorenz cycle lasting several frames, not
dozens), RADICaL (zero-inflated gamma + SBTT on sub-frame bins) recovers the latent states better
than AutoLFADS on frame-rate events, which beats smoothing the events. Every method is scored at
sub-frame resolution on the validation trials of one split:

* latent R^2: ``map_to_latents`` (ridge from log-rates to the true Lorenz states, fit on train trials)
* rate correlation: Pearson r between inferred and true rates per neuron, averaged over neurons
* lagged latent R^2 and rate correlation: the same scores with the rates at bin t + lag against the
  truth at bin t, the lag (one per method, 0 to 2 frames) chosen by latent R^2 on the training
  trials: a check that no delay is left

Calcium events trail the spikes they report by about a frame (``data.event_timing``; 31.7 ms with
the synthetic defaults), which at a few frames per Lorenz cycle would cap every method's score.
Both models remove it the same way, ``event_delay_bins: auto`` (4 sub-bins for RADICaL, 1 frame for
the frame-rate model: each runs that far past the data and its rates are read that much later),
and the smoothed events are moved 4 sub-bins earlier; ``--event-delay 0`` fits and scores the
events where they are stored instead.

Both models train on batches of 16 trials with learning rates searched from 0.0025 in
[0.0005, 0.01]: on a CPU an epoch costs about the same at 16 trials per step as at 64, and the 4x
more steps train RADICaL's long, 75%-unobserved sequences much further per epoch (at 8 units/s,
data seed 0: latent R^2 0.901 with 64 trials and rates from 0.01, 0.870 with 16 trials and rates
from 0.01, 0.959 with 16 trials and rates from 0.0025; the frame-rate model 0.924 / 0.830 / 0.930).

Frame-rate outputs are brought to sub-frame resolution by linear interpolation between frame
centres. Smoothing picks its kernel width by cross-validated latent R^2 on the training trials.
Both AutoLFADS variants are scored twice from the same run: rates inferred by empirical Bayes
(``inference: empirical_bayes``, the headline rows) and by each trial's own posterior
(sample-and-average, ``rates_sample_average`` in the output files).

    python bench/radical_vs_baselines.py [--lorenz-speed 4] [--workers 4] [--generations 40]
        [--gen-dim 64 --factors-dim 10 --ic-dim 32] [--batch-size 16] [--learning-rate 0.0025 0.0005 0.01]
        [--seed 0] [--pbt-seed 0] [--event-delay auto|0]
        [--methods radical frame-rate smoothing]
        [--save-rates FILE.npz]   (~25 min on 2 cores at the defaults; ~40 min at --gen-dim 100
        --factors-dim 20 --ic-dim 64 --lorenz-speed 8, the seed config's sizes)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

from neurodyn.config import LfadsConfig, validate_run_config
from neurodyn.data.seed_format import write_dataset
from neurodyn.data.subframe import frame_rate_dataset, frames_to_subframes
from neurodyn.evaluate.metrics import map_to_latents
from neurodyn.runs.outputs import read_run_outputs
from neurodyn.pbt.run import run_pbt
from neurodyn.synth.lorenz_2p import make_lorenz_2p
from neurodyn.train.run import resolve_event_delay, split_dataset

MODEL = {"observation": "zig", "inference": "empirical_bayes", "mask_as_input": True, "ic_enc_dim": 64, "ic_dim": 32, "gen_dim": 64, "factors_dim": 10, "batch_size": 16,
         "kl_increase_epochs": 10, "l2_increase_epochs": 10, "posterior_samples": 20,
         "learning_rate_init": {"explore_range": [0.0005, 0.01], "init_sample_mode": 0.0025},
         "keep_ratio": {"explore_range": [0.5, 0.9], "init_sample_mode": "rand"},
         "kl_ic_weight": {"explore_range": [1e-6, 1e-3], "init_sample_mode": "logrand"},
         "l2_gen_scale": {"explore_range": [1e-5, 1e-1], "init_sample_mode": "logrand"}}

SMOOTHING = "Gaussian smoothing of events"
METHODS = {"radical": "RADICaL", "frame-rate": "frame-rate AutoLFADS", "smoothing": SMOOTHING}  # --methods: row name


def rate_correlation(true_rates: np.ndarray, inferred: np.ndarray) -> float:
    """Mean over neurons of the Pearson correlation over all (trial, bin) entries."""
    t = true_rates.reshape(-1, true_rates.shape[-1])
    x = inferred.reshape(-1, inferred.shape[-1])
    t, x = t - t.mean(0), x - x.mean(0)
    r = (t * x).sum(0) / np.sqrt((t * t).sum(0) * (x * x).sum(0) + 1e-30)
    return float(np.mean(r))


def pbt_rates(data_path: Path, out: Path, settings: dict, run_name: str,
              valid_idx: np.ndarray) -> dict[str, np.ndarray]:
    """Run AutoLFADS on ``data_path``; the best model's rates for every trial, trials-first, by inference
    method: ``{"empirical Bayes": ..., "sample average": ...}``."""
    config = validate_run_config({**MODEL, **settings, "run_name": run_name})
    run_pbt(config, data_path, out, progress=False, echo=lambda line: None)
    found = {}
    for name, key in (("empirical Bayes", "rates"), ("sample average", "rates_sample_average")):
        outputs = read_run_outputs(out, rates_key=key)
        if not np.array_equal(np.sort(outputs["valid"].trial_idx), np.sort(valid_idx)):
            raise RuntimeError("the model's validation trials are not the ones the benchmark scores")
        rates = np.empty((sum(o.trial_idx.size for o in outputs.values()), *outputs["train"].rates.shape[1:]))
        for output in outputs.values():
            rates[output.trial_idx] = output.rates
        found[name] = rates
    return found


def smoothing_rates(frame_events: np.ndarray, latents_sub: np.ndarray, train_idx: np.ndarray, k: int,
                    delay_bins: int = 0) -> np.ndarray:
    """Gaussian-smoothed frame events (width picked by CV latent R^2 on train trials), at sub-frame rate,
    moved ``delay_bins`` sub-bins earlier (the last value repeated at the end) like the models' events."""
    floor = 1e-3 * float(np.nanmean(frame_events))  # log features need a positive floor
    best = None
    folds = np.array_split(np.random.default_rng(0).permutation(train_idx), 2)
    for sigma in (0.5, 1.0, 1.5, 2.0, 3.0):
        smoothed = frames_to_subframes(gaussian_filter1d(np.nan_to_num(frame_events), sigma, axis=1), k) + floor
        smoothed = np.concatenate([smoothed[:, delay_bins:], np.repeat(smoothed[:, -1:], delay_bins, axis=1)], axis=1)
        score = np.mean([map_to_latents(smoothed[a], latents_sub[a], smoothed[b], latents_sub[b]).r2
                         for a, b in (folds, folds[::-1])])
        if best is None or score > best[0]:
            best = (score, smoothed)
    return best[1]


def lagged_latent_r2(rates: np.ndarray, latents: np.ndarray, train_idx: np.ndarray, valid_idx: np.ndarray,
                     max_lag: int) -> tuple[float, int]:
    """Latent R^2 allowing for the indicator's delay: ridge from the rates at bin t + lag to the latents
    at bin t, the lag (0..max_lag sub-bins, one for the whole population) picked by 2-fold
    cross-validation on the training trials, then scored on the validation trials. Returns (R^2, lag).

    A calcium event at its scan time reflects spikes over the preceding frame plus the indicator's
    rise, so every method's rates trail the latents; with a cycle of ~3 frames that delay alone
    caps the unlagged R^2."""
    def score(lag: int, fit: np.ndarray, test: np.ndarray) -> float:
        end = rates.shape[1] - lag
        return map_to_latents(rates[fit, lag:], latents[fit, :end], rates[test, lag:], latents[test, :end]).r2

    folds = np.array_split(np.random.default_rng(0).permutation(train_idx), 2)
    best_lag = max(range(max_lag + 1), key=lambda lag: np.mean([score(lag, a, b) for a, b in (folds, folds[::-1])]))
    return score(best_lag, train_idx, valid_idx), best_lag


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--neurons", type=int, default=100)
    parser.add_argument("--conditions", type=int, default=20)
    parser.add_argument("--trials-per-condition", type=int, default=20)
    parser.add_argument("--lorenz-speed", type=float, default=4.0, help="Lorenz time units per second")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--generations", type=int, default=40,
                        help="PBT generations per method (RADICaL keeps improving to ~40: 0.868 at 16, 0.961 at 40)")
    parser.add_argument("--epochs-per-generation", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    parser.add_argument("--pbt-seed", type=int, default=0, help="seed of both populations and of the train/valid split")
    parser.add_argument("--gen-dim", type=int, default=MODEL["gen_dim"], help="generator units (both models)")
    parser.add_argument("--factors-dim", type=int, default=MODEL["factors_dim"], help="factors (both models)")
    parser.add_argument("--ic-dim", type=int, default=MODEL["ic_dim"], help="initial-condition dimensions (both models)")
    parser.add_argument("--batch-size", type=int, default=MODEL["batch_size"],
                        help="trials per training step (both models); an epoch costs about the same at 16 as at 64 "
                        "on a CPU, and 4x the steps train RADICaL's long sparse sequences much faster per epoch")
    parser.add_argument("--learning-rate", type=float, nargs=3, metavar=("INIT", "LOW", "HIGH"),
                        default=[MODEL["learning_rate_init"]["init_sample_mode"],
                                 *MODEL["learning_rate_init"]["explore_range"]],
                        help="the learning-rate search of both models: initial value and range (default 0.0025 "
                        "0.0005 0.01; the settings of runs A-D were --batch-size 64 --learning-rate 0.01 0.002 0.02)")
    parser.add_argument("--event-delay", default="auto", choices=["auto", "0"],
                        help="event_delay_bins of both models ('auto': the data's event_delay_ms, i.e. 4 sub-bins "
                        "and 1 frame at the defaults; 0: fit events at their scan times); smoothing follows")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS),
                        help="which methods to run (default all); e.g. one model's spread over --pbt-seed values "
                        "without re-training the other")
    parser.add_argument("--save-rates", type=Path, help="also write every method's rates, the latents and the split "
                        "to this .npz, for analyses without re-training")
    args = parser.parse_args()

    dataset = make_lorenz_2p(num_neurons=args.neurons, num_conditions=args.conditions,
                             trials_per_condition=args.trials_per_condition, lorenz_speed=args.lorenz_speed,
                             seed=args.seed)
    k = int(dataset.attrs["subframe_bins"])
    frame_s = 1.0 / dataset.attrs["frame_rate_hz"]
    print(f"data: {dataset.num_trials} trials, {dataset.num_neurons} neurons, {dataset.num_samples // k} frames x "
          f"{k} sub-bins; Lorenz speed {args.lorenz_speed} units/s (a cycle of ~0.75 units lasts "
          f"~{0.75 / args.lorenz_speed / frame_s:.1f} frames)")
    # The frame-rate file states the same event delay, in its own (frame) bins.
    frame_dataset = frame_rate_dataset(dataset)
    frame_events = frame_dataset.data
    model_config = LfadsConfig(event_delay_bins=0 if args.event_delay == "0" else "auto", seed=args.pbt_seed)
    sub_delay = resolve_event_delay(model_config, dataset)  # the same rounding training applies
    print(f"events trail the spikes by {dataset.attrs['event_delay_ms']:.1f} ms (event_delay_ms); event_delay_bins "
          f"{args.event_delay} = {sub_delay} sub-bins for RADICaL, {resolve_event_delay(model_config, frame_dataset)} "
          "frame(s) for the frame-rate model")
    # The models' own split, so the scored validation trials are ones they never trained on.
    split = split_dataset(dataset, model_config)
    train_idx, valid_idx = split.train, split.valid
    settings = {"event_delay_bins": model_config.event_delay_bins, "num_workers": args.workers,
                "max_generations": args.generations, "epochs_per_generation": args.epochs_per_generation,
                "num_no_best_to_stop": args.generations, "gen_dim": args.gen_dim, "factors_dim": args.factors_dim,
                "ic_dim": args.ic_dim, "batch_size": args.batch_size, "seed": args.pbt_seed,
                "learning_rate_init": {"init_sample_mode": args.learning_rate[0],
                                       "explore_range": args.learning_rate[1:]}}
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        sub_path, frame_path = folder / "sub_data.h5", folder / "frame_data.h5"
        write_dataset(sub_path, dataset)
        write_dataset(frame_path, frame_dataset)
        # (sub-bins per model bin: RADICaL's rates are already sub-frame, and 1 leaves them as they are)
        for method, name, path, subbins in (("radical", "sub", sub_path, 1), ("frame-rate", "frame", frame_path, k)):
            if method not in args.methods:
                continue
            started = time.perf_counter()
            rates = pbt_rates(path, folder / name, settings, name, valid_idx)
            seconds = time.perf_counter() - started
            for inference in ("empirical Bayes", "sample average"):
                results[f"{METHODS[method]}, {inference}"] = (frames_to_subframes(rates[inference], subbins), seconds)
    if "smoothing" in args.methods:
        started = time.perf_counter()
        results[SMOOTHING] = (smoothing_rates(frame_events, dataset.latents, train_idx, k, sub_delay),
                              time.perf_counter() - started)

    if args.save_rates:
        np.savez_compressed(args.save_rates, latents=dataset.latents, truth=dataset.truth, train_idx=train_idx,
                            valid_idx=valid_idx, **{name: rates for name, (rates, _) in results.items()})
    print(f"\n{'method':<38} {'latent R^2':>10} {'rate corr':>10} {'lagged: R^2':>12} {'corr':>6} {'lag':>4} "
          f"{'wall s':>8}")
    scores, lagged_scores = {}, {}
    for name, (rates, seconds) in results.items():
        mapping = map_to_latents(rates[train_idx], dataset.latents[train_idx], rates[valid_idx],
                                 dataset.latents[valid_idx])
        correlation = rate_correlation(dataset.truth[valid_idx], rates[valid_idx])
        lagged, lag = lagged_latent_r2(rates, dataset.latents, train_idx, valid_idx, max_lag=2 * k)
        end = rates.shape[1] - lag
        lagged_correlation = rate_correlation(dataset.truth[valid_idx, :end], rates[valid_idx, lag:])
        scores[name], lagged_scores[name] = mapping.r2, lagged
        print(f"{name:<38} {mapping.r2:>10.3f} {correlation:>10.3f} {lagged:>12.3f} {lagged_correlation:>6.3f} "
              f"{lag:>4} {seconds:>8.0f}")
    if set(args.methods) != set(METHODS):
        return  # the comparison needs every method
    for label, table in (("latent R^2", scores), ("lagged latent R^2", lagged_scores)):
        smoothing = table[SMOOTHING]
        for inference in ("empirical Bayes", "sample average"):
            radical, frame = table[f"RADICaL, {inference}"], table[f"frame-rate AutoLFADS, {inference}"]
            print(f"{label}, {inference}: RADICaL > frame-rate AutoLFADS > smoothing: "
                  f"{'yes' if radical > frame > smoothing else 'NO'} (margin {radical - frame:+.3f}, unexplained "
                  f"variance {1 - radical:.3f} vs {1 - frame:.3f}); RADICaL >= 0.9: {'yes' if radical >= 0.9 else 'NO'}")


if __name__ == "__main__":
    main()
