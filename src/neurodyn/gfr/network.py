"""Recurrent networks of GFR neurons for row-by-row digit classification, and a vanilla RNN baseline.

Each image row is one time step. GFR network: the input current of the H neurons is
``I_t = sigma * (fc1(x_t) + fc2(f_{t-1}))`` (sigma = each neuron's max current, so fitted cells
receive currents on their own pA scale); after the last row one extra zero-input step lets the rates
settle, and ``fc3`` reads the class scores from the final rates.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neurodyn.device import resolve_device
from neurodyn.errors import NeurodynError
from neurodyn.gfr.digits import DigitData
from neurodyn.gfr.model import GFR


class GFRNetwork(nn.Module):
    """fc1/fc2 -> H GFR neurons -> fc3. ``neuron_params``: H ``get_params()`` dicts, else a fresh init."""

    def __init__(self, n_inputs: int, n_nodes: int, n_classes: int = 10, bin_size: int = 10, degree: int = 1,
                 activation_bin_size: int = 20, neuron_params: list[dict] | None = None,
                 freeze_neurons: bool = False, freeze_activations: bool = False, device: str = "cpu"):
        super().__init__()
        if neuron_params is not None:
            if len(neuron_params) != n_nodes:
                raise NeurodynError(f"got parameters for {len(neuron_params)} neurons, expected n_nodes={n_nodes}")
            self.neurons = GFR.from_params(neuron_params)
        else:
            self.neurons = GFR(n_nodes, bin_size, degree, activation_bin_size)
        self.fc1 = nn.Linear(n_inputs, n_nodes)
        self.fc2 = nn.Linear(n_nodes, n_nodes)
        self.fc3 = nn.Linear(n_nodes, n_classes)
        self.neurons.a.requires_grad_(not freeze_neurons)
        self.neurons.b.requires_grad_(not freeze_neurons)
        self.neurons.g.poly_coeff.requires_grad_(not freeze_activations)
        self.neurons.g.threshold.requires_grad_(not freeze_activations)
        self.to(resolve_device(device))

    def update_scales(self) -> dict[nn.Parameter, torch.Tensor]:
        """Per-entry step sizes (relative to the learning rate) for the neuron dynamics.

        Timescale i contributes ``a_i / lambda_i`` per pA and ``1000 b_i / lambda_i`` per spike/ms
        to the steady state of h, so plain Adam steps on slow timescales (and on the 1000-fold
        feedback) change the dynamics orders of magnitude faster than on the fast ones. Scaling the
        steps by ``lambda_i`` (and ``lambda_i / 1000``) moves every timescale's steady-state gain at one rate.
        """
        ds = self.neurons.ds
        return {self.neurons.a: ds.expand_as(self.neurons.a), self.neurons.b: (ds / 1000.0).expand_as(self.neurons.b)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (batch, classes) for images (batch, rows, pixels per row)."""
        neurons = self.neurons
        scale = neurons.g.max_current
        state = neurons.initial_state(x.shape[0])
        f = state[1]
        steps = torch.cat([x, torch.zeros_like(x[:, :1])], dim=1)  # the extra zero-input step
        for t in range(steps.shape[1]):
            current = scale * (self.fc1(steps[:, t]) + self.fc2(f))
            f, state = neurons.step(current.unsqueeze(-1) * neurons.a, state)
        return self.fc3(f)


class VanillaRNN(nn.Module):
    """tanh RNN with the same row-by-row input, extra zero-input step and linear readout."""

    def __init__(self, n_inputs: int, n_hidden: int, n_classes: int = 10, device: str = "cpu"):
        super().__init__()
        self.rnn = nn.RNN(n_inputs, n_hidden, batch_first=True)
        self.readout = nn.Linear(n_hidden, n_classes)
        self.to(resolve_device(device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = torch.cat([x, torch.zeros_like(x[:, :1])], dim=1)
        hidden, _ = self.rnn(steps)
        return self.readout(hidden[:, -1])


def count_trainable(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def matched_rnn_hidden(n_inputs: int, n_classes: int, target_params: int) -> int:
    """Hidden size whose vanilla RNN has the trainable-parameter count closest to ``target_params``.

    A vanilla RNN has ``H (n_inputs + H + 2) + (H + 1) n_classes`` parameters (two bias vectors).
    """
    sizes = np.arange(1, 4096)
    counts = sizes * (n_inputs + sizes + 2) + (sizes + 1) * n_classes
    return int(sizes[np.argmin(np.abs(counts - target_params))])


def sample_neuron_params(records: list[dict], n_nodes: int, bin_size: int, activation_bin_size: int,
                         seed: int = 0) -> list[dict]:
    """Parameters of ``n_nodes`` fitted cells of one bin-size pair (drawn with replacement if too few)."""
    pool = [r["params"] for r in records
            if int(r["bin_size"]) == bin_size and int(r["actv_bin_size"]) == activation_bin_size]
    if not pool:
        raise NeurodynError(f"the GFR dataset has no cells for bin size {bin_size} ms and activation bin size "
                            f"{activation_bin_size} ms")
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(pool), n_nodes, replace=len(pool) < n_nodes)
    return [pool[i] for i in picks]


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    """Fraction of correctly classified images."""
    device = next(model.parameters()).device
    model.eval()
    correct = 0
    for start in range(0, len(x), batch_size):
        xb = torch.as_tensor(x[start:start + batch_size], device=device)
        correct += int((model(xb).argmax(-1).cpu().numpy() == y[start:start + batch_size]).sum())
    return correct / len(x)


def train_classifier(model: nn.Module, data: DigitData, lr: float, epochs: int, batch_size: int,
                     seed: int = 0, clip: float = 5.0, progress: bool = True, desc: str = "training") -> list[dict]:
    """Adam on cross-entropy with gradient-norm clipping; returns per-epoch train loss and test accuracy."""
    from tqdm import tqdm

    if lr <= 0 or epochs < 1 or batch_size < 1:
        raise NeurodynError(f"need lr > 0, epochs >= 1 and batch_size >= 1, got {lr}, {epochs}, {batch_size}")
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(data.x_train)
    y = torch.as_tensor(data.y_train)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    scales = {p: s for p, s in getattr(model, "update_scales", dict)().items() if p.requires_grad}
    history = []
    for epoch in tqdm(range(1, epochs + 1), desc=desc, disable=not progress):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip)
            before = {p: p.detach().clone() for p in scales}
            optimizer.step()
            with torch.no_grad():  # Adam's step does not depend on the value, so this rescales the step only
                for p, scale in scales.items():
                    p.copy_(before[p] + scale * (p - before[p]))
            total += float(loss.detach()) * len(idx)
        history.append({"epoch": epoch, "train_loss": total / len(x),
                        "test_accuracy": accuracy(model, data.x_test, data.y_test)})
    return history


def run_digits_experiment(lr: float, epochs: int, batch_size: int, n_nodes: int, freeze_neurons: bool = False,
                          freeze_activations: bool = False, mnist_dir=None, dataset_path=None, bin_size: int = 10,
                          activation_bin_size: int = 20, degree: int = 1, baseline: bool = True, seed: int = 0,
                          device: str = "cpu", progress: bool = True) -> dict:
    """Train a GFR network (and optionally a parameter-matched vanilla RNN) on row-by-row digits.

    ``dataset_path``: a ``gfr_dataset.json`` whose cells initialise the neurons. Returns a summary
    with per-epoch histories, final test accuracies and trainable-parameter counts.
    """
    from neurodyn.gfr.dataset import read_dataset_json
    from neurodyn.gfr.digits import load_digit_data

    torch.manual_seed(seed)
    data = load_digit_data(mnist_dir, seed)
    n_inputs = data.x_train.shape[2]
    n_classes = int(max(data.y_train.max(), data.y_test.max())) + 1
    params = None
    if dataset_path is not None:
        params = sample_neuron_params(read_dataset_json(dataset_path), n_nodes, bin_size, activation_bin_size, seed)
    gfr_net = GFRNetwork(n_inputs, n_nodes, n_classes, bin_size, degree, activation_bin_size, params,
                         freeze_neurons, freeze_activations, device)
    summary = {"data": data.source, "rows": data.x_train.shape[1], "n_train": len(data.x_train),
               "n_test": len(data.x_test), "models": {}}
    runs = [("GFR-RNN", gfr_net)]
    if baseline:
        hidden = matched_rnn_hidden(n_inputs, n_classes, count_trainable(gfr_net))
        runs.append(("vanilla RNN", VanillaRNN(n_inputs, hidden, n_classes, device)))
    for name, model in runs:
        history = train_classifier(model, data, lr, epochs, batch_size, seed, progress=progress, desc=name)
        hidden = model.fc3.in_features if isinstance(model, GFRNetwork) else model.rnn.hidden_size
        summary["models"][name] = {"hidden": hidden, "trainable_parameters": count_trainable(model),
                                   "test_accuracy": history[-1]["test_accuracy"], "history": history}
    return summary
