"""``neurodyn gfr ...``: simulate, preprocess, fit and network sub-commands (argument parsing only)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from neurodyn.gfr.model import ALLOWED_ACTIVATION_BIN_SIZES, ALLOWED_BIN_SIZES


def register(subparsers) -> None:
    gfr = subparsers.add_parser("gfr", help="generalised firing-rate (GFR) single-neuron models")
    commands = gfr.add_subparsers(dest="gfr_command", required=True, metavar="GFR_COMMAND")

    sim = commands.add_parser("simulate", help="simulate adaptive spiking cells into the processed format")
    sim.add_argument("--n_cells", type=int, default=8)
    sim.add_argument("--cell_types", default=None,
                     help="comma-separated: tonic, adapting, initial_burst, bursting (default: all)")
    sim.add_argument("--data_dir", default="data", help="writes DATA_DIR/processed_data/*.h5 and DATA_DIR/cell_ids.csv")
    sim.add_argument("--seed", type=int, default=0)
    sim.set_defaults(func=_simulate)

    pre = commands.add_parser("preprocess", help="bin Allen Cell Types NWB files into the processed format")
    pre.add_argument("--nwb_dir", required=True, help="folder of {cell_id}.nwb or specimen_{cell_id}/ephys.nwb files")
    pre.add_argument("--cell_ids", default=None, help="CSV of cell ids (default: every NWB file in --nwb_dir)")
    pre.add_argument("--data_dir", default="data")
    pre.set_defaults(func=_preprocess)

    fit = commands.add_parser("fit", help="fit GFR neurons to processed cells")
    fit.add_argument("cell_ids", help="CSV of cell ids")
    fit.add_argument("--bin_size", type=int, default=20, choices=ALLOWED_BIN_SIZES)
    fit.add_argument("--activation_bin_size", type=int, default=20, choices=ALLOWED_ACTIVATION_BIN_SIZES)
    fit.add_argument("--degree", type=int, default=1)
    fit.add_argument("--C", type=float, default=0.0, help="L1 penalty weight on a and b")
    fit.add_argument("--save_path", default="model/params/")
    fit.add_argument("--config_path", default=None, help="training settings JSON (default: built-in defaults)")
    fit.add_argument("--data_dir", default="data", help="folder holding processed_data/")
    fit.add_argument("--workers", type=int, default=None, help="parallel processes (overrides the config)")
    fit.set_defaults(func=_fit)

    net = commands.add_parser("network", help="train a recurrent GFR network on row-by-row digits")
    net.add_argument("--lr", type=float, default=1e-2)
    net.add_argument("--epochs", type=int, default=10)
    net.add_argument("--batch_size", type=int, default=32)
    net.add_argument("--n_nodes", type=int, default=65)
    net.add_argument("--freeze_neurons", action="store_true", help="train only the input, recurrent and readout weights")
    net.add_argument("--freeze_activations", action="store_true")
    net.add_argument("--mnist", default=None, help="folder with mnist.npz or the IDX files (default: 8x8 digits)")
    net.add_argument("--dataset", default=None, help="gfr_dataset.json whose cells initialise the neurons")
    net.add_argument("--bin_size", type=int, default=10, choices=ALLOWED_BIN_SIZES)
    net.add_argument("--activation_bin_size", type=int, default=20, choices=ALLOWED_ACTIVATION_BIN_SIZES)
    net.add_argument("--degree", type=int, default=1)
    net.add_argument("--no_baseline", action="store_true", help="skip the parameter-matched vanilla RNN")
    net.add_argument("--save_path", default=None, help="write network_results.json here")
    net.add_argument("--seed", type=int, default=0)
    net.add_argument("--device", default="auto")
    net.set_defaults(func=_network)


def _simulate(args: argparse.Namespace) -> int:
    from neurodyn.gfr.simulate import simulate_dataset

    types = [t.strip() for t in args.cell_types.split(",")] if args.cell_types else None
    ids = simulate_dataset(args.n_cells, args.data_dir, types, args.seed)
    print(f"simulated {len(ids)} cells into {Path(args.data_dir) / 'processed_data'}; ids in "
          f"{Path(args.data_dir) / 'cell_ids.csv'}")
    return 0


def _preprocess(args: argparse.Namespace) -> int:
    from neurodyn.gfr.allen_nwb import preprocess_nwb_cells
    from neurodyn.gfr.preprocess import read_cell_ids

    ids, cre = read_cell_ids(args.cell_ids) if args.cell_ids else (None, {})
    done = preprocess_nwb_cells(args.nwb_dir, args.data_dir, ids, cre)
    print(f"preprocessed {len(done)} cells into {Path(args.data_dir) / 'processed_data'}")
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
    print(f"{accepted} of {len(ids)} cells accepted -> {paths['dataset']}; summary {paths['summary']}")
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
