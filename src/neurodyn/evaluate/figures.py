"""Figure of example held-out trials: inferred vs true rates and predicted vs true latents."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # files only: never needs (or tries to open) a display

import matplotlib.pyplot as plt  # noqa: E402  (must follow the backend choice)
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from neurodyn.data.atomic import atomic_path  # noqa: E402

INFERRED_COLOR = "tab:blue"
TRUE_COLOR = "black"
COUNT_COLOR = "tab:gray"
LATENT_COLORS = ("tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink")


def pick_example_trials(num_trials: int, num_examples: int, condition: np.ndarray | None = None) -> np.ndarray:
    """Indices of up to ``num_examples`` trials; with ``condition`` ``(trials,)``, one per distinct
    condition first (examples of different conditions show more of the dynamics)."""
    if condition is None:
        return np.arange(min(num_trials, num_examples))
    _, first_of_condition = np.unique(np.asarray(condition), return_index=True)
    order = np.concatenate([np.sort(first_of_condition), np.setdiff1d(np.arange(num_trials), first_of_condition)])
    return order[:num_examples]


def pick_example_neurons(rates: np.ndarray, num_examples: int) -> np.ndarray:
    """Indices of the ``num_examples`` neurons whose rates ``(trials, samples, neurons)`` vary most
    (flat neurons make uninformative panels), in ascending index order."""
    variance = rates.reshape(-1, rates.shape[-1]).var(axis=0)
    return np.sort(np.argsort(variance)[::-1][:num_examples])


def plot_inferred_vs_true(
    inferred_rates: np.ndarray,
    counts: np.ndarray,
    true_rates: np.ndarray | None = None,
    predicted_latents: np.ndarray | None = None,
    true_latents: np.ndarray | None = None,
    condition: np.ndarray | None = None,
    trial_ids: np.ndarray | None = None,
    num_trials: int = 3,
    num_neurons: int = 3,
    title: str = "",
) -> Figure:
    """Grid with one column per example trial.

    Rows 1..num_neurons: inferred rate (blue), true rate (black, if given) and observed counts
    (grey dots; unobserved entries are left out) of one neuron. Then one row per latent dimension:
    true latent (black) vs the ridge prediction from inferred log-rates (colour). Inputs are
    trials-first: rates/counts ``(trials, samples, neurons)`` in counts per bin, NaN = unobserved;
    latents ``(trials, samples, latents)``; ``condition`` and ``trial_ids`` (the trials' rows in
    the data file, used in the panel titles) ``(trials,)``.
    """
    inferred_rates = np.asarray(inferred_rates, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    show_latents = predicted_latents is not None and true_latents is not None
    trials = pick_example_trials(inferred_rates.shape[0], num_trials, condition)
    neurons = pick_example_neurons(true_rates if true_rates is not None else inferred_rates, num_neurons)
    num_latent_rows = np.asarray(true_latents).shape[-1] if show_latents else 0
    num_rows = len(neurons) + num_latent_rows
    time = np.arange(inferred_rates.shape[1])

    fig, axes = plt.subplots(
        num_rows, len(trials), figsize=(3.6 * len(trials) + 1.0, 1.7 * num_rows + 1.0),
        sharex=True, squeeze=False,
    )
    for col, trial in enumerate(trials):
        trial_id = trial_ids[trial] if trial_ids is not None else trial
        label = f"trial {trial_id}" + (f" (condition {condition[trial]})" if condition is not None else "")
        axes[0, col].set_title(label, fontsize=10)
        for row, neuron in enumerate(neurons):
            ax = axes[row, col]
            observed = ~np.isnan(counts[trial, :, neuron])
            ax.plot(time[observed], counts[trial, observed, neuron], "o", ms=2.5, color=COUNT_COLOR,
                    alpha=0.6, label="observed counts")
            if true_rates is not None:
                ax.plot(time, true_rates[trial, :, neuron], color=TRUE_COLOR, lw=1.5, label="true rate")
            ax.plot(time, inferred_rates[trial, :, neuron], color=INFERRED_COLOR, lw=1.5, label="inferred rate")
            if col == 0:
                ax.set_ylabel(f"neuron {neuron}\ncounts/bin", fontsize=9)
        for dim in range(num_latent_rows):
            ax = axes[len(neurons) + dim, col]
            color = LATENT_COLORS[dim % len(LATENT_COLORS)]
            ax.plot(time, true_latents[trial, :, dim], color=TRUE_COLOR, lw=1.5, label="true latent")
            ax.plot(time, predicted_latents[trial, :, dim], color=color, lw=1.5, ls="--",
                    label="predicted (ridge)")
            if col == 0:
                ax.set_ylabel(f"latent {dim + 1}", fontsize=9)
    for ax in axes.ravel():
        ax.tick_params(labelsize=8)
        ax.spines[["top", "right"]].set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("time bin", fontsize=9)

    # One legend per kind of row, at the right of the first column-group, keeps the panels clear.
    axes[0, -1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    if num_latent_rows:
        axes[len(neurons), -1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | os.PathLike) -> None:
    """Save ``fig`` as PNG at ``path`` atomically and release its memory."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


def plot_latent_predictions(
    predicted: np.ndarray,
    true: np.ndarray,
    condition: np.ndarray | None = None,
    trial_ids: np.ndarray | None = None,
    num_conditions: int = 4,
    title: str = "",
) -> Figure:
    """Predicted vs true latents ``(trials, samples, latents)`` for example trials of distinct conditions.

    One column per example condition and one row per latent dimension; the last row shows the
    first dimension against the last (for the Lorenz system, the x-z plane: the butterfly). With several test trials of a
    condition, every one of them is drawn faintly behind the example.
    """
    examples = pick_example_trials(true.shape[0], num_conditions, condition)
    num_latents = true.shape[2]
    fig, axes = plt.subplots(num_latents + (num_latents >= 2), len(examples),
                             figsize=(3.2 * len(examples), 1.9 * (num_latents + 1)), squeeze=False)
    for column, trial in enumerate(examples):
        siblings = np.flatnonzero(condition == condition[trial]) if condition is not None else [trial]
        label = f"trial {trial_ids[trial] if trial_ids is not None else trial}"
        if condition is not None:
            label += f", condition {condition[trial]}"
        for dim in range(num_latents):
            ax = axes[dim, column]
            for sibling in siblings:
                if sibling != trial:
                    ax.plot(predicted[sibling, :, dim], color=LATENT_COLORS[dim % len(LATENT_COLORS)], alpha=0.2, lw=0.8)
            ax.plot(true[trial, :, dim], color=TRUE_COLOR, lw=1.6, label="true")
            ax.plot(predicted[trial, :, dim], color=LATENT_COLORS[dim % len(LATENT_COLORS)], lw=1.3, ls="--",
                    label="predicted")
            if column == 0:
                ax.set_ylabel(f"latent {dim + 1}", fontsize=9)
            if dim == 0:
                ax.set_title(label, fontsize=9)
        if num_latents >= 2:
            ax = axes[num_latents, column]
            last = num_latents - 1
            ax.plot(true[trial, :, 0], true[trial, :, last], color=TRUE_COLOR, lw=1.4)
            ax.plot(predicted[trial, :, 0], predicted[trial, :, last], color=INFERRED_COLOR, lw=1.1, ls="--")
            ax.set_xlabel("latent 1", fontsize=8)
            if column == 0:
                ax.set_ylabel(f"latent {last + 1}", fontsize=9)
    for ax in axes[:num_latents].ravel():
        ax.tick_params(labelsize=7)
    axes[0, -1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
