"""``neurodyn gfr ...``: simulate, preprocess, fit and network sub-commands (argument parsing only)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# The same values as neurodyn.gfr.model.ALLOWED_BIN_SIZES / ALLOWED_ACTIVATION_BIN_SIZES, spelled out
# here so that building the parser does not import torch (tests/gfr/test_gfr_cli.py keeps them equal).
BIN_SIZES_MS = (10, 20, 50, 100)
ACTIVATION_BIN_SIZES_MS = (20, 100)


def _flag(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
    """Add ``--kebab-name`` and, hidden from --help, the published pipeline's ``--snake_name`` spelling."""
    dest = name.replace("-", "_")
    if dest == name:
        parser.add_argument(f"--{name}", **kwargs)
        return
    # A required flag and its alias form a required group: either spelling satisfies it.
    target = parser.add_mutually_exclusive_group(required=True) if kwargs.pop("required", False) else parser
    target.add_argument(f"--{name}", dest=dest, **kwargs)
    alias = {key: value for key, value in kwargs.items() if key not in ("help", "default", "metavar")}
    target.add_argument(f"--{dest}", dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **alias)


def register(subparsers) -> None:
    gfr = subparsers.add_parser(
        "gfr", help="generalised firing-rate (GFR) single-neuron models",
        description="Generalised firing-rate single-neuron models: simulate or preprocess cells, fit GFR neurons "
        "to them, and train recurrent networks of GFR neurons. Flags are kebab-case; the published pipeline's "
        "spellings (--bin_size, --config_path, ...) are accepted too.",
    )
    commands = gfr.add_subparsers(dest="gfr_command", required=True, metavar="GFR_COMMAND")

    sim = commands.add_parser("simulate", help="simulate adaptive spiking cells into the processed format")
    _flag(sim, "n-cells", type=int, default=8, metavar="N", help="number of cells to simulate (default: 8)")
    _flag(sim, "cell-types", default=None, metavar="T1,T2",
          help="comma-separated: tonic, adapting, initial_burst, bursting (default: all)")
    _flag(sim, "data-dir", default="data", metavar="DIR",
          help="writes DIR/processed_data/*.h5 and DIR/cell_ids.csv (default: data)")
    _flag(sim, "seed", type=int, default=0, help="random seed (default: 0)")
    sim.set_defaults(func=_simulate)

    pre = commands.add_parser("preprocess", help="bin Allen Cell Types NWB files into the processed format")
    _flag(pre, "nwb-dir", required=True, metavar="DIR",
          help="folder of {cell_id}.nwb or specimen_{cell_id}/ephys.nwb files")
    _flag(pre, "cell-ids", default=None, metavar="CSV", help="CSV of cell ids (default: every NWB file in --nwb-dir)")
    _flag(pre, "data-dir", default="data", metavar="DIR", help="writes DIR/processed_data/*.h5 (default: data)")
    pre.set_defaults(func=_preprocess)

    fit = commands.add_parser("fit", help="fit GFR neurons to processed cells")
    fit.add_argument("cell_ids", metavar="CELL_IDS.csv", help="CSV of cell ids (e.g. DATA_DIR/cell_ids.csv)")
    _flag(fit, "bin-size", type=int, default=20, choices=BIN_SIZES_MS, help="model time step in ms (default: 20)")
    _flag(fit, "activation-bin-size", type=int, default=20, choices=ACTIVATION_BIN_SIZES_MS,
          help="bin of the activation pre-fit in ms; degree 1 suits 20, degree 3 suits 100 (default: 20)")
    _flag(fit, "degree", type=int, default=1, help="degree of the activation polynomial (default: 1)")
    fit.add_argument("--C", type=float, default=0.0, help="L1 penalty weight on a and b (default: 0)")
    _flag(fit, "save-path", default="model/params/", metavar="DIR",
          help="writes gfr_dataset.json and fit_summary_{bin}_{actv}.csv here (default: model/params/)")
    _flag(fit, "config-path", default=None, metavar="CONFIG.json",
          help="training settings JSON (default: built-in defaults; keys in the config reference)")
    _flag(fit, "data-dir", default="data", metavar="DIR", help="folder holding processed_data/ (default: data)")
    _flag(fit, "workers", type=int, default=None, help="parallel processes (overrides the config's workers)")
    fit.set_defaults(func=_fit)

    net = commands.add_parser("network", help="train a recurrent GFR network on row-by-row digits")
    _flag(net, "lr", type=float, default=1e-2, help="Adam learning rate (default: 0.01)")
    _flag(net, "epochs", type=int, default=10, help="training epochs (default: 10)")
    _flag(net, "batch-size", type=int, default=32, help="images per training step (default: 32)")
    _flag(net, "n-nodes", type=int, default=65, metavar="H", help="GFR neurons in the network (default: 65)")
    _flag(net, "freeze-neurons", action="store_true",
          help="train only the input, recurrent and readout weights, not the neurons' dynamics")
    _flag(net, "freeze-activations", action="store_true", help="keep the neurons' activation functions fixed")
    _flag(net, "mnist", default=None, metavar="DIR",
          help="folder with mnist.npz or the four IDX files (default: scikit-learn's 8x8 digits)")
    _flag(net, "dataset", default=None, metavar="GFR_DATASET.json",
          help="gfr_dataset.json whose fitted cells initialise the neurons (default: fresh neurons)")
    _flag(net, "bin-size", type=int, default=10, choices=BIN_SIZES_MS,
          help="time step of the neurons in ms, and which cells --dataset draws (default: 10)")
    _flag(net, "activation-bin-size", type=int, default=20, choices=ACTIVATION_BIN_SIZES_MS,
          help="activation bin in ms of the cells --dataset draws (default: 20)")
    _flag(net, "degree", type=int, default=1, help="degree of the activation polynomial (default: 1)")
    _flag(net, "no-baseline", action="store_true", help="skip the parameter-matched vanilla RNN")
    _flag(net, "save-path", default=None, metavar="DIR", help="write network_results.json here")
    _flag(net, "seed", type=int, default=0, help="random seed (default: 0)")
    _flag(net, "device", default="auto", choices=["auto", "cpu", "cuda"],
          help="auto uses a CUDA GPU when present (default: auto)")
    net.set_defaults(func=_network)


def _simulate(args: argparse.Namespace) -> int:
    from neurodyn.gfr.simulate import simulate_dataset

    types = [t.strip() for t in args.cell_types.split(",")] if args.cell_types else None
    ids = simulate_dataset(args.n_cells, args.data_dir, types, args.seed)
    print(f"simulated {len(ids)} cell{'s' if len(ids) != 1 else ''} into {Path(args.data_dir) / 'processed_data'}; ids in "
          f"{Path(args.data_dir) / 'cell_ids.csv'}")
    return 0


def _preprocess(args: argparse.Namespace) -> int:
    from neurodyn.gfr.allen_nwb import preprocess_nwb_cells
    from neurodyn.gfr.preprocess import read_cell_ids

    ids, cre = read_cell_ids(args.cell_ids) if args.cell_ids else (None, {})
    done = preprocess_nwb_cells(args.nwb_dir, args.data_dir, ids, cre)
    print(f"preprocessed {len(done)} cell{'s' if len(done) != 1 else ''} into {Path(args.data_dir) / 'processed_data'}")
    return 0


def _fit(args: argparse.Namespace) -> int:
    from neurodyn.gfr.fit import fit_cells, load_fit_config, save_fit_results
    from neurodyn.gfr.preprocess import read_cell_ids

    config = load_fit_config(args.config_path)
    if args.workers is not None:
        config = config.model_copy(update={"workers": max(1, args.workers)})
    ids, cre = read_cell_ids(args.cell_ids)
    results, failures = fit_cells(ids, args.data_dir, args.bin_size, args.activation_bin_size, args.degree, args.C,
                                  config, cre)
    paths = save_fit_results(args.save_path, results, failures, args.bin_size, args.activation_bin_size)
    print(f"{'cell':>12} {'val EVR':>8} {'test EVR':>8} {'train NLL':>9} {'test NLL':>8}  accepted")
    for r in results:
        print(f"{r.cell_id:>12} {r.val_evr:8.3f} {r.test_evr:8.3f} {r.train_loss:9.3f} {r.test_loss:8.3f}  "
              f"{'yes' if r.accepted else 'no: ' + r.reason}")
    for cell_id, reason in failures.items():
        print(f"{cell_id:>12} not fitted: {reason}")
    accepted = sum(r.accepted for r in results)
    print(f"{accepted} of {len(ids)} cell{'s' if len(ids) != 1 else ''} accepted -> {paths['dataset']}; summary {paths['summary']}")
    return 0


def _network(args: argparse.Namespace) -> int:
    from neurodyn.data.atomic import write_text_atomic
    from neurodyn.gfr.network import run_digits_experiment

    summary = run_digits_experiment(args.lr, args.epochs, args.batch_size, args.n_nodes, args.freeze_neurons,
                                    args.freeze_activations, args.mnist, args.dataset, args.bin_size,
                                    args.activation_bin_size, args.degree, not args.no_baseline, args.seed,
                                    args.device)
    print(f"{summary['data']}: {summary['n_train']} training / {summary['n_test']} test images, "
          f"{summary['rows']} rows each")
    print(f"{'model':<12} {'hidden':>6} {'params':>7} {'test acc':>8}")
    for name, m in summary["models"].items():
        print(f"{name:<12} {m['hidden']:>6} {m['trainable_parameters']:>7} {m['test_accuracy']:8.3f}")
    if args.save_path:
        path = Path(args.save_path) / "network_results.json"
        write_text_atomic(path, json.dumps(summary, indent=1) + "\n")
        print(f"results -> {path}")
    return 0
