"""Test-set EVR on simulated adaptive (AdEx) neurons: GFR versus a linear-nonlinear (LN) model.

The LN model is the same filter bank and activation with the rate feedback removed (b = 0), fitted
the same way, so the comparison isolates what the feedback adds.
Run: PYTHONPATH=src python bench/gfr_vs_ln.py [--cells_per_type 2 --epochs 200 --workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict

import numpy as np
import torch

from neurodyn.gfr.fit import FitConfig, fit_cells
from neurodyn.gfr.simulate import CELL_TYPES, simulate_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells_per_type", type=int, default=2)
    parser.add_argument("--bin_size", type=int, default=20, choices=(10, 20, 50, 100))
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    types = list(CELL_TYPES)
    with tempfile.TemporaryDirectory() as data_dir:
        ids = simulate_dataset(args.cells_per_type * len(types), data_dir, types, args.seed)
        scores = defaultdict(lambda: defaultdict(list))
        for name, feedback in (("GFR", True), ("LN", False)):
            config = FitConfig(epochs=args.epochs, workers=args.workers, learn_feedback=feedback)
            results, failures = fit_cells(ids, data_dir, args.bin_size, 20, 1, 0.0, config)
            for r in results:
                scores[r.cre_line][name].append((r.test_evr, r.accepted))
            for cell_id, reason in failures.items():
                print(f"{name}: cell {cell_id} not fitted: {reason}")
    print(f"\nTest-set (Noise 2) EVR on simulated AdEx cells, bin {args.bin_size} ms, {args.epochs} epochs/run")
    print(f"{'cell type':<14} {'cells':>5} {'GFR EVR':>8} {'LN EVR':>7} {'GFR accepted':>12} {'LN accepted':>11}")
    for cell_type in types:
        g, ln = scores[cell_type]["GFR"], scores[cell_type]["LN"]
        print(f"{cell_type:<14} {len(g):>5} {np.mean([e for e, _ in g]):8.3f} {np.mean([e for e, _ in ln]):7.3f} "
              f"{sum(a for _, a in g):>12} {sum(a for _, a in ln):>11}")
    all_g = [e for t in types for e, _ in scores[t]["GFR"]]
    all_ln = [e for t in types for e, _ in scores[t]["LN"]]
    print(f"{'all':<14} {len(all_g):>5} {np.mean(all_g):8.3f} {np.mean(all_ln):7.3f}")


if __name__ == "__main__":
    main()
