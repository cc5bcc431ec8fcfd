"""What writing the outputs costs beside training, with the defaults; prints a table.

Each row trains one model with the defaults (``neurodyn.train.run.train_model``, as ``neurodyn
train`` does) and reports the seconds of the training epochs, the seconds of writing the outputs
(the checkpoint and every split's ``*_output.h5``: the inference the defaults choose), and their ratio
(the target of the budget issue: at most 0.25). The ``pbt`` row runs ``neurodyn run`` (3 workers, 5
epochs per generation, 4 generations, the default engine) and compares the export of
``pbt_best_model/`` with the generations' time.

Sets (Lorenz spikes, 35 neurons, 50 bins of 20 ms, data seed 11):
  sparse_small    3 neurons observed per bin, 20 conditions x 20 trials (400 trials)
  sparse_medium   3 observed per bin, 65 x 24 (1560 trials; the issue's sparse-spikes set)
  sparse_large    3 observed per bin, 65 x 48 (3120 trials)
  dense_medium    every neuron observed, 65 x 24 (standard inference)
  pbt             the sparse_medium set through ``neurodyn run``

With 3 of 35 neurons observed (91% of the entries unobserved), ``inference: auto`` refines each
trial's posterior (``train.posterior_refinement``); dense data keep the encoder's posteriors.

    python bench/inference_cost.py [--sets sparse_small sparse_medium ...] [--json results.json]

Run it on an otherwise idle machine: both columns are wall-clock seconds. OpenMP's idle threads sleep
(``OMP_WAIT_POLICY=PASSIVE`` unless set), as under the ``neurodyn`` command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import commit_line, machine_line  # noqa: E402

SETS = {
    "sparse_small": {"keep": 3, "num_conditions": 20, "trials_per_condition": 20},
    "sparse_medium": {"keep": 3, "num_conditions": 65, "trials_per_condition": 24},
    "sparse_large": {"keep": 3, "num_conditions": 65, "trials_per_condition": 48},
    "dense_medium": {"keep": None, "num_conditions": 65, "trials_per_condition": 24},
    "pbt": {"keep": 3, "num_conditions": 65, "trials_per_condition": 24},
}
PBT_RUN = {"run_name": "cost", "num_workers": 3, "epochs_per_generation": 5, "max_generations": 4,
           "num_no_best_to_stop": 4}
TARGET_RATIO = 0.25


def run_set(name: str, folder: Path) -> dict:
    """Train (or run the population on) set ``name`` in ``folder``; its seconds and inference."""
    from neurodyn.config import LfadsConfig, validate_run_config
    from neurodyn.data.seed_format import write_dataset
    from neurodyn.pbt.run import run_pbt
    from neurodyn.synth.lorenz_spikes import make_lorenz_spikes
    from neurodyn.train.run import train_model

    settings = SETS[name]
    dataset = make_lorenz_spikes(num_neurons=35, seed=11, **settings)
    data_path = folder / f"{name}_data.h5"
    write_dataset(data_path, dataset)
    row = {"set": name, "trials": dataset.num_trials}
    if name == "pbt":
        result = run_pbt(validate_run_config(PBT_RUN, source="bench"), data_path, folder / "results",
                         progress=False, echo=lambda line: None)
        row.update(epochs=f"{result.generations} gen", training=result.training_seconds,
                   outputs=result.output_seconds)
        config_path = folder / "results" / "pbt_best_model" / "config.yaml"
    else:
        result = train_model(LfadsConfig(run_name=name), data_path, folder / name, progress=False,
                             echo=lambda line: None)
        row.update(epochs=result.trainer.epoch, training=result.training_seconds, outputs=result.output_seconds)
        config_path = folder / name / "config.yaml"
    import yaml

    row["inference"] = yaml.safe_load(config_path.read_text())["inference"]
    row["ratio"] = row["outputs"] / row["training"]
    return row


def format_table(rows: list[dict]) -> str:
    lines = [f"{'set':15s} {'trials':>6s} {'epochs':>7s} {'inference':>15s} {'training s':>10s} {'outputs s':>9s} "
             f"{'ratio':>6s} {'<= ' + format(TARGET_RATIO, 'g'):>7s}"]
    for row in rows:
        if "error" in row:
            lines.append(f"{row['set']:15s} failed: {row['error']}")
            continue
        lines.append(f"{row['set']:15s} {row['trials']:6d} {str(row['epochs']):>7s} {row['inference']:>15s} "
                     f"{row['training']:10.0f} {row['outputs']:9.0f} {row['ratio']:6.2f} "
                     f"{'yes' if row['ratio'] <= TARGET_RATIO else 'no':>7s}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    from neurodyn.cli.main import prefer_sleeping_threads

    prefer_sleeping_threads()  # as the neurodyn command does, before torch is imported
    started = time.perf_counter()
    rows = []
    for name in args.sets:
        with tempfile.TemporaryDirectory() as folder:
            try:
                rows.append(run_set(name, Path(folder)))
            except Exception as error:  # noqa: BLE001 - a benchmark reports every failure and goes on
                rows.append({"set": name, "error": f"{type(error).__name__}: {error}"})
        print(f"  done: {name}", flush=True)
    print(f"# {datetime.date.today()}, commit {commit_line()}; {machine_line()}")
    print(f"# python bench/inference_cost.py --sets {' '.join(args.sets)}")
    print(format_table(rows))
    print(f"({time.perf_counter() - started:.0f} s in all)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
