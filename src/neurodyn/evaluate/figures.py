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


# ------------------------------------------------------------------------------------------------
# The summary a scientist wants on real data (no ground truth): PSTHs, factor PCs, training curve.


def condition_averages(values: np.ndarray, condition: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Average ``values`` ``(trials, samples, dims)`` over the trials of each condition, ignoring NaN.

    Returns ``(labels, averages)``: ``labels`` ``(C,)`` the distinct conditions in sorted order and
    ``averages`` ``(C, samples, dims)``. Without ``condition`` every trial is one condition (label 0),
    so the result is the trial average. An entry unobserved on every trial of a condition stays NaN.
    """
    values = np.asarray(values, dtype=np.float64)
    if condition is None:
        condition = np.zeros(values.shape[0], dtype=np.int64)
    condition = np.asarray(condition)
    labels = np.unique(condition)
    averages = np.full((labels.size, *values.shape[1:]), np.nan)
    for index, label in enumerate(labels):
        members = values[condition == label]
        observed = ~np.isnan(members)
        counts = observed.sum(axis=0)
        totals = np.where(observed, members, 0.0).sum(axis=0)
        averages[index] = np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)
    return labels, averages


def leading_components(factors: np.ndarray, num_components: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Principal components of the factors ``(trials, samples, factors)`` over every (trial, bin).

    Returns ``(projected, explained)``: the factors projected on their ``k = min(num_components,
    factors)`` leading components ``(trials, samples, k)`` (centred, each component's sign chosen so
    that its largest loading is positive) and the fraction of the factors' variance each explains ``(k,)``.
    """
    factors = np.asarray(factors, dtype=np.float64)
    rows = factors.reshape(-1, factors.shape[-1])
    centred = rows - rows.mean(axis=0)
    _, singular_values, components = np.linalg.svd(centred, full_matrices=False)
    k = min(num_components, components.shape[0])
    components = components[:k]
    signs = np.sign(components[np.arange(k), np.abs(components).argmax(axis=1)])
    components = components * signs[:, None]
    total = float((singular_values ** 2).sum())
    explained = (singular_values[:k] ** 2) / total if total > 0 else np.zeros(k)
    return (centred @ components.T).reshape(*factors.shape[:2], k), explained


def _plot_training_curve(ax, train_log: dict[str, np.ndarray] | None, pbt_log: dict[str, np.ndarray] | None) -> None:
    if train_log is not None and "epoch" in train_log:
        for column, style in (("train_nll", "-"), ("valid_nll", "-"), ("valid_nll_smoothed", "--")):
            if column in train_log:
                ax.plot(train_log["epoch"], train_log[column], style, lw=1.3, label=column)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("NLL per observed entry", fontsize=8)
        ax.set_title("training curve (train_log.csv)", fontsize=9)
        ax.legend(fontsize=7, frameon=False)
    elif pbt_log is not None and {"generation", "metric"} <= set(pbt_log):
        generation, metric = pbt_log["generation"], pbt_log["metric"]
        ax.plot(generation, metric, "o", ms=2.5, color=COUNT_COLOR, alpha=0.6, label="workers")
        finite = np.isfinite(metric)
        steps = np.unique(generation[finite])
        best = [np.min(metric[finite & (generation == g)]) for g in steps]
        ax.plot(steps, np.minimum.accumulate(best), lw=1.6, color=INFERRED_COLOR, label="best so far")
        ax.set_xlabel("generation", fontsize=8)
        ax.set_ylabel("smoothed validation NLL", fontsize=8)
        ax.set_title("population training (pbt_log.csv)", fontsize=9)
        ax.legend(fontsize=7, frameon=False)
    else:
        ax.axis("off")
        ax.text(0.0, 0.5, "no train_log.csv or pbt_log.csv\nbeside the outputs", fontsize=8)


def plot_data_summary(
    rates: np.ndarray,
    data: np.ndarray,
    factors: np.ndarray,
    condition: np.ndarray | None = None,
    bin_ms: float | None = None,
    train_log: dict[str, np.ndarray] | None = None,
    pbt_log: dict[str, np.ndarray] | None = None,
    num_neurons: int = 4,
    num_conditions: int = 6,
    num_components: int = 3,
    title: str = "",
) -> Figure:
    """Summary of a run on data without ground truth.

    Row 1: for ``num_neurons`` example neurons (those whose averaged model rates vary most), the
    condition-averaged data (dots and thin line; trial-averaged when ``condition`` is None) and
    the model's condition-averaged rates (thick line), one colour per condition (at most
    ``num_conditions`` shown). Row 2: the leading principal components of the factors averaged per
    condition, against time, and the first two against each other. Row 3: the training curve from
    ``train_log`` (the columns of ``train_log.csv``: ``train_nll``, ``valid_nll``,
    ``valid_nll_smoothed`` per epoch), else the population's progress from ``pbt_log`` (every
    worker's metric per generation and the best so far), else a note.

    Parameters
    ----------
    rates, data : ndarray, shape (trials, samples, neurons)
        The model's rates and the observations, in the same unit (e.g. expected count per bin);
        NaN in ``data`` = unobserved.
    factors : ndarray, shape (trials, samples, factors)
    condition : ndarray, shape (trials,), optional
        Integer condition label per trial.
    bin_ms : float, optional
        Bin width in ms; the time axis is in ms when given, in bins otherwise.
    train_log, pbt_log : dict of ndarray, optional
        Columns of ``train_log.csv`` / ``pbt_log.csv``, as returned by
        ``neurodyn.runs.tables.read_csv_columns`` or ``find_training_logs``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    rates, data = np.asarray(rates, dtype=np.float64), np.asarray(data, dtype=np.float64)
    labels, data_avg = condition_averages(data, condition)
    _, rate_avg = condition_averages(rates, condition)
    shown = np.arange(min(labels.size, num_conditions))
    # Chosen by the model's averages: with a few trials per condition the data averages are mostly noise.
    neurons = pick_example_neurons(rate_avg, min(num_neurons, data.shape[-1]))
    projected, explained = leading_components(factors, num_components)
    _, pc_avg = condition_averages(projected, condition)
    time = np.arange(rates.shape[1]) * (bin_ms if bin_ms else 1.0)
    time_label = "time (ms)" if bin_ms else "time bin"
    colors = plt.get_cmap("tab10")

    columns = max(len(neurons), projected.shape[-1] + 1, 2)
    fig, axes = plt.subplots(3, columns, figsize=(3.1 * columns, 8.4), squeeze=False)
    for col, neuron in enumerate(neurons):
        ax = axes[0, col]
        for k in shown:
            ax.plot(time, data_avg[k, :, neuron], "o-", ms=2.2, lw=0.6, alpha=0.55, color=colors(k % 10))
            ax.plot(time, rate_avg[k, :, neuron], lw=1.8, color=colors(k % 10))
        ax.set_title(f"neuron {neuron}", fontsize=9)
        ax.set_xlabel(time_label, fontsize=8)
        if col == 0:
            ax.set_ylabel("mean per bin\n(dots: data, line: model)", fontsize=8)
    for col in range(len(neurons), columns):
        axes[0, col].axis("off")

    for pc in range(projected.shape[-1]):
        ax = axes[1, pc]
        for k in shown:
            ax.plot(time, pc_avg[k, :, pc], lw=1.5, color=colors(k % 10),
                    label=f"condition {labels[k]}" if condition is not None else "all trials")
        ax.set_title(f"factor PC {pc + 1} ({explained[pc]:.0%} of variance)", fontsize=9)
        ax.set_xlabel(time_label, fontsize=8)
    plane = axes[1, projected.shape[-1]]
    if projected.shape[-1] >= 2:
        for k in shown:
            plane.plot(pc_avg[k, :, 0], pc_avg[k, :, 1], lw=1.3, color=colors(k % 10))
            plane.plot(pc_avg[k, 0, 0], pc_avg[k, 0, 1], "o", ms=4, color=colors(k % 10))
        plane.set_xlabel("PC 1", fontsize=8)
        plane.set_ylabel("PC 2", fontsize=8)
        plane.set_title("PC 1 vs PC 2 (dot: start)", fontsize=9)
    else:
        plane.axis("off")
    for col in range(projected.shape[-1] + 1, columns):
        axes[1, col].axis("off")
    axes[1, 0].legend(fontsize=7, frameon=False)

    _plot_training_curve(axes[2, 0], train_log, pbt_log)
    for col in range(1, columns):
        axes[2, col].axis("off")
    for ax in axes.ravel():
        ax.tick_params(labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
