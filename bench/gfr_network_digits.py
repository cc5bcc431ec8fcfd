"""Row-by-row digit classification: a GFR network versus a parameter-matched vanilla RNN.

Fair comparison: all models get the same data splits, epochs, batch size, optimiser (Adam, gradient
norm clipped at 5, learning rate decayed to ~0 on a cosine over the run) and seeds; the learning rate
of EACH model is chosen from the same grid by the mean validation accuracy (a stratified 20 % of the
training images, held out) over the seeds. The test set is only evaluated, never used for a choice.
Each RNN's hidden size gives the trainable-parameter count closest to the GFR network's.

Two baselines: the usual tanh RNN (``nn.RNN``), and the relu(tanh) RNN of the published L-MNIST
comparison (its "vanilla RNN" applies relu(tanh(.)), the GFR activation's shape, to the hidden state).

Offline data: scikit-learn's 8x8 digits (8 steps of 8 pixels); pass --mnist DIR for MNIST
(published MNIST test accuracy at about 7.3k parameters: GFR-RNN H=65 97.9%, relu(tanh) RNN H=68 96.9%).
Run: PYTHONPATH=src python bench/gfr_network_digits.py [--epochs 30 --n_nodes 32 --seeds 0 ... 9]  (~8 min)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from neurodyn.gfr.digits import load_digit_data, validation_split
from neurodyn.gfr.network import (GFRNetwork, VanillaRNN, accuracy, count_trainable, matched_rnn_hidden,
                                  sample_neuron_params, train_classifier)

PUBLISHED = "published (MNIST 28x28, ~7.3k params): GFR-RNN H=65 97.9%, relu(tanh) RNN H=68 96.9%"
MODELS = {"GFR-RNN": None, "tanh RNN": "tanh", "relu(tanh) RNN": "relu_tanh"}  # name: RNN activation


def ms(values) -> str:
    """'mean ± sd' of accuracies."""
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--n_nodes", type=int, default=32)
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2, 3e-2],
                        help="learning-rate grid searched for each model on the validation split")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)),
                        help="10 by default: a 5-seed mean of the 360-image test accuracy still moves by ~0.5 %%")
    parser.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                        help="learning-rate schedule (constant: the earlier setting, a noisy final snapshot)")
    parser.add_argument("--bin_size", type=int, default=10)
    parser.add_argument("--mnist", default=None)
    parser.add_argument("--dataset", default=None, help="gfr_dataset.json to initialise the neurons")
    parser.add_argument("--activation_bin_size", type=int, default=20)
    parser.add_argument("--freeze_neurons", action="store_true")
    parser.add_argument("--freeze_activations", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.time()

    records = None
    if args.dataset:
        from neurodyn.gfr.dataset import read_dataset_json
        records = read_dataset_json(args.dataset)

    def make(name: str, seed: int, n_inputs: int, n_steps: int, n_classes: int):
        """A fresh model; an RNN's size is matched to a GFR network built with its own RNG state,
        so every model of a seed starts from the same torch seed."""
        params = None
        if records is not None:
            params = sample_neuron_params(records, args.n_nodes, args.bin_size, args.activation_bin_size, seed)
        state = torch.random.get_rng_state()
        gfr = GFRNetwork(n_inputs, args.n_nodes, n_classes, args.bin_size, 1, args.activation_bin_size, params,
                         args.freeze_neurons, args.freeze_activations, horizon=n_steps)
        if MODELS[name] is None:
            return gfr
        torch.random.set_rng_state(state)
        return VanillaRNN(n_inputs, matched_rnn_hidden(n_inputs, n_classes, count_trainable(gfr)), n_classes,
                          activation=MODELS[name])

    names = tuple(MODELS)
    results = {name: {lr: [] for lr in args.lrs} for name in names}  # (val, test, train) per seed
    sizes = {}
    source = ""
    for seed in args.seeds:
        data = load_digit_data(args.mnist, seed)
        split = validation_split(data, 0.2, seed)
        source = f"{data.source}: {len(split.x_train)} train / {len(split.x_test)} validation / {len(data.x_test)} test"
        n_inputs, n_steps = data.x_train.shape[2], data.x_train.shape[1] + 1
        n_classes = int(max(data.y_train.max(), data.y_test.max())) + 1
        for name in names:
            for lr in args.lrs:
                torch.manual_seed(seed)
                model = make(name, seed, n_inputs, n_steps, n_classes)
                history = train_classifier(model, split, lr, args.epochs, args.batch_size, seed, progress=False,
                                           schedule=args.schedule)
                results[name][lr].append((history[-1]["test_accuracy"], accuracy(model, data.x_test, data.y_test),
                                          accuracy(model, split.x_train, split.y_train)))
                hidden = model.n_nodes if isinstance(model, GFRNetwork) else model.rnn.hidden_size
                sizes[name] = (hidden, count_trainable(model))
                print(f"seed {seed} {name:<12} lr {lr:<7g} val {results[name][lr][-1][0]:.3f}", flush=True)

    print(f"\n{source}; {args.epochs} epochs, batch {args.batch_size}, Adam + clip 5, {args.schedule} lr, "
          f"seeds {args.seeds}, lr grid {args.lrs} chosen per model by mean validation accuracy "
          f"({time.time() - start:.0f} s); mean ± sd over seeds")
    print(f"{'model':<15} {'hidden':>6} {'params':>7} {'lr':>7} {'train acc':>13} {'val acc':>13} {'test acc':>13}")
    for name in names:
        best = max(args.lrs, key=lambda lr: np.mean([r[0] for r in results[name][lr]]))
        val, test, train = np.array(results[name][best]).T
        print(f"{name:<15} {sizes[name][0]:>6} {sizes[name][1]:>7} {best:>7g} {ms(train):>13} {ms(val):>13} "
              f"{ms(test):>13}")
        print(f"{'':<15} test per seed: {' '.join(f'{t:.3f}' for t in test)}")
    print("validation accuracy per lr (mean over seeds): " + "; ".join(
        f"{name}: " + ", ".join(f"{lr:g}={np.mean([r[0] for r in results[name][lr]]):.3f}" for lr in args.lrs)
        for name in names))
    print(PUBLISHED)


if __name__ == "__main__":
    main()
