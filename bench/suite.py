"""The benchmark suite: what a user gets from the defaults on many data sets, real recordings first.

Every set is trained with ``neurodyn.train.run.train_model`` exactly as ``neurodyn train CONFIG --data
FILE`` would, with a config that names only what the set needs (``observation: zig`` for calcium
events; nothing else), scored with ``neurodyn evaluate`` on trials no model was trained on or chose
anything with, and set beside a baseline that uses the same trials for fitting:

  mc_maze_small   real: NLB'21 MC_Maze_Small (shipped), 15 of the 75 training-phase trials as local test
                  trials (prepare nlb --local-test-trials 15 --seed 0); co-bps of the 35 held-out
                  neurons and vel R^2 (NLB's 120 ms lag) on them. Baseline: spike smoothing + Poisson
                  GLM (NLB's co-smoothing baseline; width and penalty by CV on the 60 other trials).
  m1_continuous   real: continuous M1 session (Stevenson et al. 2011; ../shared/data, not shipped), 1 s
                  windows with 250 ms overlap, 25% of the neurons held out (seed 0); co-bps of the
                  held-out neurons on the merged series' bins that only valid windows cover, and vel
                  R^2 of the merged series (5-fold over time). Baseline: smoothing + Poisson GLM fit
                  on the training windows, merged and scored the same way.
  lorenz          Lorenz spikes, 29 neurons, 1560 trials, 50 bins of 20 ms, 2.5-75 Hz
  lorenz_sparse   the same system, 35 neurons of which 3 observed per bin (SBTT)
  lorenz_2p       2-photon events (ZIG), 60 neurons, 600 trials, 25 Hz frames in 4 sub-frame bins
  rnn             chaotic RNN (the LFADS paper's), 50 neurons, 200 trials, 100 bins of 10 ms, 1-50 Hz
  rnn_small       chaotic RNN, 20 neurons, 50 trials, 100 bins of 5 ms, 1-20 Hz
  rnn_large       chaotic RNN, 200 neurons, 1000 trials, 50 bins of 20 ms
  inputs          a 2-D oscillator kicked by inputs the model never sees, 40 neurons, 300 trials,
                  80 bins of 10 ms
  inputs_sparse   the same kind, 100 neurons of which 10 observed per bin, 2000 trials

Measured only when named with --sets (not in the suite's table):

  lorenz_100      Lorenz spikes, 29 neurons, 100 trials (10 conditions x 10), 50 bins of 20 ms: a small
                  synthetic set for options aimed at small data

Synthetic sets: 20% of the trials are test trials (file 'split'), 20% of the rest validate; metric
rate R^2 against the true rates on the test trials (latent R^2 of map_to_latents where a latent
exists; the 2p set is scored on latent R^2 only, its events being in another unit than its rates).
Baseline: Gaussian smoothing, width chosen on the training and valid trials (leave-centre-out
Poisson likelihood).

    python bench/suite.py [--quick] [--sets NAME ...] [--seeds 0 1] [--processes 2]
                          [--set KEY=VALUE ...] [--pbt] [--json results.json]

``--quick``: one seed and ``max_epochs`` 80 (the ramps scaled to 20 epochs): under 30 minutes on 2
cores. ``--set`` adds config keys to every model (a candidate default, e.g. ``--set
max_epochs=1000``), ``--pbt`` also runs ``neurodyn run`` with its default population. The table gives,
per set and metric, neurodyn's mean over seeds with the spread (max - min), the baseline, the gain
(neurodyn - baseline) and the seconds; below it the suite's median gain over the baseline and mean rank
on each set's first metric (1 = best of neurodyn and the baseline).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import commit_line, machine_line  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
M1_SESSION = SHARED_DATA / "m1_stevenson_2011" / "m1_stevenson_2011.mat"
QUICK = {"max_epochs": 80, "kl_increase_epochs": 20, "l2_increase_epochs": 20}
TEST_FRACTION, VALID_FRACTION = 0.2, 0.2
SPLIT_SEED = 0
# The smoothing baseline's widths (Gaussian sigma, bins): wide enough for sparse, slow sets.
SMOOTHING_WIDTHS_BINS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


@dataclass
class Score:
    """One set's scores: metric name -> value for neurodyn (per seed) and the baseline."""

    name: str
    seed: int
    metrics: dict = field(default_factory=dict)
    baseline: dict = field(default_factory=dict)
    baseline_name: str = ""
    seconds: float = 0.0
    epochs: int = 0
    shape: tuple = ()
    notes: list = field(default_factory=list)
    timing: dict = field(default_factory=dict)  # seconds per stage: data, training (with outputs), evaluate, baseline


# ---------------------------------------------------------------------------------------------
# Data sets


def synthetic_dataset(name: str):
    """The synthetic set ``name`` (fixed data seed) and the config keys it needs."""
    from neurodyn.synth.chaotic_rnn import make_chaotic_rnn_spikes
    from neurodyn.synth.input_driven import make_input_driven_spikes
    from neurodyn.synth.lorenz_2p import make_lorenz_2p
    from neurodyn.synth.lorenz_spikes import make_lorenz_spikes

    makers = {
        "lorenz": lambda: (make_lorenz_spikes(seed=5), {}),
        "lorenz_sparse": lambda: (make_lorenz_spikes(num_neurons=35, keep=3, seed=11), {}),
        "lorenz_2p": lambda: (make_lorenz_2p(num_neurons=60, frame_rate_hz=25.0, subframe_bins=4, num_conditions=30,
                                             trials_per_condition=20, seed=11), {"observation": "zig"}),
        "rnn": lambda: (make_chaotic_rnn_spikes(num_neurons=50, num_conditions=20, trials_per_condition=10,
                                                num_bins=100, bin_ms=10.0, seed=1), {}),
        "rnn_small": lambda: (make_chaotic_rnn_spikes(num_neurons=20, num_conditions=5, trials_per_condition=10,
                                                      num_bins=100, bin_ms=5.0, mean_rate_hz=(1.0, 20.0), seed=2), {}),
        "rnn_large": lambda: (make_chaotic_rnn_spikes(num_neurons=200, num_conditions=40, trials_per_condition=25,
                                                      num_bins=50, bin_ms=20.0, seed=3), {}),
        "inputs": lambda: (make_input_driven_spikes(num_neurons=40, num_trials=300, num_bins=80, bin_ms=10.0,
                                                    seed=4), {}),
        "inputs_sparse": lambda: (make_input_driven_spikes(num_neurons=100, num_trials=2000, num_bins=50,
                                                           bin_ms=10.0, keep=10, seed=6), {}),
        "lorenz_100": lambda: (make_lorenz_spikes(num_conditions=10, trials_per_condition=10, seed=7), {}),
    }
    from neurodyn.data.nlb_tensors import NlbSplit, trial_roles

    dataset, keys = makers[name]()
    # TEST_FRACTION of the trials 'test', VALID_FRACTION of the rest 'valid', seeded.
    num_test = int(np.floor(TEST_FRACTION * dataset.num_trials + 0.5))
    dataset.split = trial_roles(dataset.num_trials, 0, NlbSplit(valid_fraction=VALID_FRACTION,
                                                                local_test_trials=num_test, seed=SPLIT_SEED))
    return dataset, keys


REAL_SETS = ("mc_maze_small", "m1_continuous")
SYNTHETIC_SETS = ("lorenz", "lorenz_sparse", "lorenz_2p", "rnn", "rnn_small", "rnn_large", "inputs", "inputs_sparse")
ALL_SETS = REAL_SETS + SYNTHETIC_SETS
# Measured only when named (--sets): not part of the suite's table.
EXTRA_SETS = ("lorenz_100",)


def write_set(name: str, folder: Path):
    """Write set ``name``'s data file in ``folder``; returns (path, config keys, dataset)."""
    from neurodyn.data.seed_format import write_dataset

    path = folder / f"{name}_data.h5"
    if name == "mc_maze_small":
        from neurodyn.data.nlb_tensors import NlbSplit, nlb_dataset
        from neurodyn.datasets import mc_maze_small_files
        from neurodyn.demo import NLB_LOCAL_TEST_TRIALS, NLB_SPLIT_SEED

        # The local test trials of 'neurodyn demo --kind nlb'.
        dataset = nlb_dataset(mc_maze_small_files()[0],
                              split=NlbSplit(local_test_trials=NLB_LOCAL_TEST_TRIALS, seed=NLB_SPLIT_SEED))
        keys = {}
    elif name == "m1_continuous":
        from neurodyn.data.continuous import SessionVariables, Windowing, prepare_continuous

        dataset, _ = prepare_continuous(M1_SESSION, path, Windowing(window_ms=1000.0, overlap_ms=250.0),
                                        SessionVariables(data="spikes", behavior="handVel", time="time"),
                                        heldout_fraction=0.25, seed=SPLIT_SEED)
        return path, {}, dataset
    else:
        dataset, keys = synthetic_dataset(name)
    write_dataset(path, dataset)
    return path, keys, dataset


# ---------------------------------------------------------------------------------------------
# One set, one seed


def run_set(name: str, seed: int, overrides: dict, quick: bool, pbt: bool, with_baseline: bool) -> Score:
    """``score_set``, a failure kept as the score's note (the suite goes on with the other sets)."""
    try:
        return score_set(name, seed, overrides, quick, pbt, with_baseline)
    except Exception as error:  # noqa: BLE001 - a benchmark reports every failure and goes on
        return Score(name=name, seed=seed, notes=[f"{type(error).__name__}: {error}"])


def score_set(name: str, seed: int, overrides: dict, quick: bool, pbt: bool, with_baseline: bool) -> Score:
    """Train the defaults on set ``name`` (model seed ``seed``), evaluate, and the baseline when asked."""
    import torch

    torch.set_num_threads(1)
    from neurodyn.config import LfadsConfig
    from neurodyn.evaluate.report import evaluate_run
    from neurodyn.train.run import train_model

    score = Score(name=name, seed=seed)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        clock = time.perf_counter()
        data_path, keys, dataset = write_set(name, folder)
        score.timing["data"] = time.perf_counter() - clock
        score.shape = (dataset.num_trials, dataset.num_samples, dataset.num_neurons)
        settings = {"run_name": name, "seed": seed, **keys, **(QUICK if quick else {}), **overrides}
        started = time.perf_counter()
        if pbt:
            from neurodyn.config import validate_run_config
            from neurodyn.pbt.run import run_pbt

            run_dir = folder / "results"
            result = run_pbt(validate_run_config(settings, source="suite"), data_path, run_dir, progress=False,
                             echo=lambda line: None)
            score.epochs = result.generations
        else:
            run_dir = folder / "run"
            result = train_model(LfadsConfig(**settings), data_path, run_dir, progress=False, echo=lambda line: None)
            score.epochs = result.trainer.epoch
        score.seconds = time.perf_counter() - started  # training and writing the outputs, as a user waits
        score.timing["training"] = score.seconds
        clock = time.perf_counter()
        evaluation = evaluate_run(run_dir, data_path, figure_path=folder / "evaluation.png")
        score.metrics = set_metrics(name, evaluation)
        score.timing["evaluate"] = time.perf_counter() - clock
        if with_baseline:  # deterministic: once per set
            clock = time.perf_counter()
            score.baseline_name, score.baseline = baseline(name, dataset, run_dir, data_path)
            score.timing["baseline"] = time.perf_counter() - clock
    return score


def set_metrics(name: str, evaluation: dict) -> dict:
    """The set's metrics from ``evaluate``'s result, first the one the suite ranks on."""
    if name == "mc_maze_small":
        return {"co-bps": evaluation["test"]["co_bps"], "vel R^2": evaluation["test"]["vel_r2"]}
    if name == "m1_continuous":
        merged = evaluation["continuous"]
        return {"co-bps": merged["co_bps_valid_bins"], "vel R^2": merged["vel_r2"]}
    test = evaluation["test"]
    if name == "lorenz_2p":
        return {"latent R^2": test["latent_r2"]}
    metrics = {"rate R^2": test["rate_r2"]}
    if test.get("latent_r2") is not None:
        metrics["latent R^2"] = test["latent_r2"]
    return metrics


# ---------------------------------------------------------------------------------------------
# Baselines


def baseline(name: str, dataset, run_dir: Path, data_path: Path) -> tuple[str, dict]:
    """The set's baseline, on the same scored trials as neurodyn: (its name, metric -> value)."""
    from neurodyn.evaluate.baselines import gaussian_smooth, smoothing_baseline, smoothing_glm_cosmoothing
    from neurodyn.evaluate.cobps import co_bps
    from neurodyn.evaluate.metrics import map_to_latents, rate_r2
    from neurodyn.evaluate.nlb import velocity_r2

    if name == "mc_maze_small":
        fit, test = dataset.split != "test", dataset.split == "test"
        heldout = dataset.heldout_neurons
        heldin = np.setdiff1d(np.arange(dataset.num_neurons), heldout)
        window = dataset.num_samples - int(dataset.attrs["forward_bins"])
        counts = dataset.data[:, :window]
        glm = smoothing_glm_cosmoothing(counts[fit][..., heldin], counts[fit][..., heldout], counts[test][..., heldin])
        test_rates = np.concatenate([glm.eval_rates_heldin, glm.eval_rates_heldout], axis=2)
        # The decoder's training trials get the same baseline's rates (its fitted GLMs, not a refit).
        fit_rates = np.concatenate([gaussian_smooth(counts[fit][..., heldin], glm.width_bins),
                                    glm.predict_heldout(counts[fit][..., heldin])], axis=2)
        behavior = dataset.behavior[:, :window]
        return "smoothing + Poisson GLM", {
            "co-bps": co_bps(test_rates, counts[test], np.arange(heldin.size, dataset.num_neurons)),
            "vel R^2": velocity_r2(fit_rates, behavior[fit], test_rates, behavior[test])}
    if name == "m1_continuous":
        return "smoothing + Poisson GLM", continuous_baseline(dataset, run_dir)
    fit, test = dataset.split != "test", dataset.split == "test"
    smoothed = smoothing_baseline(dataset.data[fit], dataset.data[test], widths_bins=SMOOTHING_WIDTHS_BINS)
    # Where no observed entry lies within the kernel's reach (sparse sets), a neuron's mean training count.
    mean_count = np.nanmean(dataset.data[fit], axis=(0, 1))
    filled = lambda rates: np.where(np.isnan(rates), mean_count, rates)  # noqa: E731
    scores = {}
    if name != "lorenz_2p":
        scores["rate R^2"] = rate_r2(dataset.truth[test], filled(smoothed.eval_rates))
    if dataset.latents is not None:
        fit_rates = gaussian_smooth(dataset.data[fit], smoothed.width_bins)
        scores["latent R^2"] = map_to_latents(filled(fit_rates), dataset.latents[fit],
                                              filled(smoothed.eval_rates), dataset.latents[test]).r2
    return f"Gaussian smoothing ({smoothed.width_bins:g} bins)", scores


def continuous_baseline(dataset, run_dir: Path) -> dict:
    """Smoothing + Poisson GLM on the training windows, merged like neurodyn's rates and scored on the same bins."""
    from neurodyn.data.continuous import dataset_layout, merge_dataset_windows
    from neurodyn.evaluate.baselines import smoothing_glm_cosmoothing
    from neurodyn.evaluate.cobps import co_bps
    from neurodyn.evaluate.continuous import continuous_velocity_r2
    from neurodyn.runs.continuous_output import merge_run_outputs
    from neurodyn.runs.outputs import read_run_outputs

    outputs = read_run_outputs(run_dir)
    layout = dataset_layout(dataset)
    train = outputs["train"].trial_idx
    heldout = dataset.heldout_neurons
    heldin = np.setdiff1d(np.arange(dataset.num_neurons), heldout)
    glm = smoothing_glm_cosmoothing(dataset.data[train][..., heldin], dataset.data[train][..., heldout],
                                    dataset.data[..., heldin])
    windows = np.empty(dataset.data.shape)
    windows[..., heldin], windows[..., heldout] = glm.eval_rates_heldin, glm.eval_rates_heldout
    rates = merge_dataset_windows(windows, layout)
    counts = merge_dataset_windows(dataset.data, layout)
    valid_only = merge_run_outputs(outputs, layout, "suite").bins_only_in(("valid", "test"))
    return {"co-bps": co_bps(rates[None, valid_only], counts[None, valid_only], heldout),
            "vel R^2": continuous_velocity_r2(rates, merge_dataset_windows(dataset.behavior, layout))["r2"]}


# ---------------------------------------------------------------------------------------------
# The table


def table(scores: list[Score]) -> str:
    """One row per set and metric; the suite's mean gain and mean rank on each set's first metric."""
    lines = [f"{'set':<14} {'trials x bins x neurons':>23} {'metric':<11} {'neurodyn':>8} {'spread':>6} "
             f"{'baseline':>8} {'gain':>7} {'epochs':>6} {'seconds':>7}  baseline"]
    gains, ranks = [], []
    failed = [s for s in scores if not s.metrics]
    for name in dict.fromkeys(score.name for score in scores if score.metrics):
        runs = [s for s in scores if s.name == name and s.metrics]
        reference = next((s for s in runs if s.baseline), runs[0])
        for index, metric in enumerate(runs[0].metrics):
            values = np.array([np.nan if s.metrics[metric] is None else s.metrics[metric] for s in runs])
            mean, spread = float(np.mean(values)), float(np.ptp(values)) if len(values) > 1 else float("nan")
            base = reference.baseline.get(metric)
            gain = mean - base if base is not None else float("nan")
            if index == 0 and base is not None:
                gains.append(gain)
                ranks.append(1.0 if mean > base else 2.0 if mean < base else 1.5)
            shape = " x ".join(str(n) for n in runs[0].shape) if index == 0 else ""
            lines.append(f"{name if index == 0 else '':<14} {shape:>23} {metric:<11} {mean:>8.3f} {spread:>6.3f} "
                         f"{base if base is not None else float('nan'):>8.3f} {gain:>+7.3f} "
                         f"{int(np.mean([s.epochs for s in runs])) if index == 0 else '':>6} "
                         f"{f'{np.mean([s.seconds for s in runs]):.0f}' if index == 0 else '':>7}  "
                         f"{reference.baseline_name if index == 0 else ''}")
    lines += [f"{s.name:<14} seed {s.seed}: failed: {'; '.join(s.notes)}" for s in failed]
    if gains:
        # The median, not the mean: a rate R^2 averaged over neurons can fall far below 0 for a baseline on
        # sparse data, and one such set would decide a mean.
        lines.append(f"suite ({len(gains)} sets, first metric of each): median gain over the baseline "
                     f"{np.median(gains):+.3f}; neurodyn better on {sum(g > 0 for g in gains)} of {len(gains)}; "
                     f"mean rank {np.mean(ranks):.2f} (1 = best of neurodyn and baseline)")
    return "\n".join(lines)


def parse_overrides(items: list[str]) -> dict:
    import yaml

    overrides = {}
    for item in items:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=list(ALL_SETS), choices=ALL_SETS + EXTRA_SETS, metavar="NAME")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="model seeds (default 0 1; --quick: 0)")
    parser.add_argument("--quick", action="store_true", help="one seed, max_epochs 80 (under 30 min on 2 cores)")
    parser.add_argument("--processes", type=int, default=2, help="models trained at once (one core each)")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config keys added to every model (a candidate default)")
    parser.add_argument("--pbt", action="store_true", help="neurodyn run (AutoLFADS, default population) instead")
    parser.add_argument("--json", default=None, help="also write every score to this JSON file")
    args = parser.parse_args()
    seeds = args.seeds or ([0] if args.quick else [0, 1])
    sets = [name for name in args.sets if name != "m1_continuous" or M1_SESSION.is_file()]
    skipped = sorted(set(args.sets) - set(sets))
    overrides = parse_overrides(args.overrides)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.perf_counter()
    commit = commit_line()  # the code the models train with (the checkout may move while the suite runs)
    jobs = [(name, seed) for name in sets for seed in seeds]
    with concurrent.futures.ProcessPoolExecutor(args.processes) as pool:
        futures = [pool.submit(run_set, name, seed, overrides, args.quick, args.pbt, seed == seeds[0])
                   for name, seed in jobs]
        for future in concurrent.futures.as_completed(futures):
            done = future.result()
            print(f"  done: {done.name} seed {done.seed} in {done.seconds:.0f} s of training, "
                  f"{', '.join(f'{k} {v:.3f}' for k, v in done.metrics.items() if v is not None)}"
                  f"{'; '.join(done.notes)} (s: {', '.join(f'{k} {v:.0f}' for k, v in done.timing.items())})",
                  file=sys.stderr, flush=True)
        scores = [future.result() for future in futures]
    command = "python bench/suite.py " + " ".join(sys.argv[1:])
    print(f"# {datetime.date.today()}, commit {commit}; {machine_line()}")
    print(f"# {command}; model seeds {seeds}; config " + (", ".join(f"{k}: {v}" for k, v in
                                                                   {**(QUICK if args.quick else {}), **overrides}.items())
                                                         or "defaults") + (" (neurodyn run)" if args.pbt else ""))
    print(table(scores))
    if skipped:
        print(f"skipped (data not found at {SHARED_DATA}): {', '.join(skipped)}")
    print(f"({time.perf_counter() - started:.0f} s in all)")
    if args.json:
        Path(args.json).write_text(json.dumps([score.__dict__ for score in scores], indent=1, default=str))


if __name__ == "__main__":
    main()
