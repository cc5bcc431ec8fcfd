"""Row-by-row digit classification: a GFR network versus a parameter-matched vanilla RNN.

Offline data: scikit-learn's 8x8 digits (8 steps of 8 pixels); pass --mnist DIR for MNIST
(published MNIST test accuracy at about 7.3k parameters: GFR-RNN 97.9%, vanilla RNN 96.9%).
Run: PYTHONPATH=src python bench/gfr_network_digits.py [--epochs 30 --n_nodes 32 --seeds 0 1]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from neurodyn.gfr.network import run_digits_experiment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--n_nodes", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--mnist", default=None)
    parser.add_argument("--dataset", default=None, help="gfr_dataset.json to initialise the neurons")
    parser.add_argument("--freeze_neurons", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    accuracies: dict[str, list[float]] = {}
    sizes = {}
    for seed in args.seeds:
        summary = run_digits_experiment(args.lr, args.epochs, args.batch_size, args.n_nodes, args.freeze_neurons,
                                        mnist_dir=args.mnist, dataset_path=args.dataset, seed=seed, progress=False)
        for name, m in summary["models"].items():
            accuracies.setdefault(name, []).append(m["test_accuracy"])
            sizes[name] = (m["hidden"], m["trainable_parameters"])
    print(f"\n{summary['data']}: {summary['n_train']} train / {summary['n_test']} test, {args.epochs} epochs, "
          f"lr {args.lr}, seeds {args.seeds}")
    print(f"{'model':<12} {'hidden':>6} {'params':>7} {'test acc (mean)':>15} {'per seed':>20}")
    for name, accs in accuracies.items():
        print(f"{name:<12} {sizes[name][0]:>6} {sizes[name][1]:>7} {np.mean(accs):15.3f} "
              f"{' '.join(f'{a:.3f}' for a in accs):>20}")


if __name__ == "__main__":
    main()
