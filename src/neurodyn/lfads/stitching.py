"""Stitching several sessions into one LFADS model: per-session read-in layers and their
initialisation by principal-components regression (PCR).

A stitched model sees the sessions as one dataset over the union of their neurons
(``neurodyn.data.sessions``): a trial of session ``s`` is observed only on its block of columns.
The read-in maps a trial's (zero-filled) input to ``readin_dim`` shared encoder inputs with
``x @ W.T + b[s]``: as ``x`` is zero outside the session's block, only the session's columns of
``W`` act, so ``W`` holds one read-in matrix per session and ``b`` one bias per session. The
readout (factors -> observation parameters of every neuron) likewise has one block of rows per
session.

PCR initialisation, after Pandarinath et al. (2018), the exact procedure. A session's *held-in*
neurons are those the encoders see: all but its ``heldout_neurons`` (co-bps), which reach the
encoders as zeros, so the read-in is fitted on the held-in columns alone and only the readout
covers the held-out neurons:

1. For each session, the average observed activity of its training trials per condition and bin
   (conditions present in the training trials of every session; the trial average when there
   are none), smoothed in time with a Gaussian of ``PCR_SMOOTH_BINS`` bins, missing cells filled
   with the neuron's mean: ``A_s`` ``(rows, N_s)``, rows = condition x bin, the same rows in
   every session, every neuron (held-out ones included).
2. Centre each neuron (``mu_s`` its mean over rows) and concatenate the sessions' held-in columns:
   ``C = [A_1^in - mu_1^in, ..., A_S^in - mu_S^in]`` ``(rows, sum N_s^in)``.
3. The shared basis: the first ``k = min(readin_dim, rows - 1, sum N_s^in)`` principal-component
   scores of ``C``, each scaled to unit variance: ``Z`` ``(rows, k)``.
4. Per session, the read-in is the ridge regression of ``Z`` on the session's centred held-in
   activity: ``W_s^in = argmin |(A_s^in - mu_s^in) W - Z|^2 + lam |W|^2`` ``(N_s^in, k)``, ``lam`` =
   1e-3 x the mean diagonal of ``(A_s^in - mu_s^in)^T (A_s^in - mu_s^in)``; the held-out neurons'
   rows of ``W_s`` ``(N_s, k)`` are zero and its bias is ``-mu_s^in W_s^in``, so the read-in of the
   session's activity as the encoders see it (held-out neurons zero) gives the shared PC scores of
   its centred held-in activity, centred over the rows. Read-in outputs past ``k`` and the weights
   on the observed-entry indicators (``mask_as_input``) start at zero.
5. Per session, the readout's activity map is the least-squares regression of the centred
   activity of all its neurons (held-out ones included: the readout reconstructs them) on the
   basis, ``B_s = argmin |Z B - (A_s - mu_s)|^2`` ``(k, N_s)``; the observation model turns it
   into readout weights for the first ``min(k, factors_dim)`` factors (Poisson: ``B_s / mu_s``,
   the first-order change of the log rate; models without such a map keep the default
   initialisation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d
from torch import nn

# Width (bins, Gaussian sigma) of the smoothing of the averaged activity before PCR.
PCR_SMOOTH_BINS = 2.0


class SessionReadin(nn.Module):
    """The per-session read-in's weights: ``(B, T, D)`` input over the union of the sessions' columns ->
    ``(B, T, readin_dim)`` (applied by ``StackedLfads._readin``).

    ``D`` = the combined neurons times ``columns_per_neuron`` (2 with ``mask_as_input``: the values,
    then the observed-entry indicators). ``weight`` ``(readin_dim, D)``; ``bias`` ``(sessions, readin_dim)``.
    """

    def __init__(self, input_dim: int, readin_dim: int, num_sessions: int):
        super().__init__()
        template = nn.Linear(input_dim, readin_dim)
        self.weight = nn.Parameter(template.weight.detach().clone())
        self.bias = nn.Parameter(template.bias.detach().clone().repeat(num_sessions, 1))


@dataclass(frozen=True)
class SessionAlignment:
    """The PCR initialisation of one session: read-in ``weight`` ``(N_s, k)`` (zero rows for held-out
    neurons) and ``bias`` ``(k,)``, the readout's activity map ``activity_map`` ``(k, N_s)`` and the
    neurons' mean activity ``mean`` ``(N_s,)`` (both over every neuron)."""

    weight: np.ndarray
    bias: np.ndarray
    activity_map: np.ndarray
    mean: np.ndarray


def averaged_activity(data: np.ndarray, condition: np.ndarray | None, labels: np.ndarray | None) -> np.ndarray:
    """Step 1 of the module's procedure for one session.

    Parameters
    ----------
    data : ndarray, shape (trials, T, N_s)
        The session's training trials (NaN = unobserved).
    condition : ndarray, shape (trials,), optional
        Their condition labels.
    labels : ndarray, optional
        The conditions to average over, in order (None = the trial average).

    Returns
    -------
    ndarray, shape (len(labels) * T, N_s) or (T, N_s)
        The averaged, smoothed activity with missing cells filled by the neuron's mean.
    """
    if labels is None:
        groups = [np.ones(data.shape[0], dtype=bool)]
    else:
        groups = [condition == label for label in labels]
    blocks = []
    for members in groups:
        observed = ~np.isnan(data[members])
        total = np.where(observed, data[members], 0.0).sum(0)
        count = observed.sum(0)
        blocks.append(np.where(count > 0, total / np.maximum(count, 1), np.nan))
    averages = np.concatenate(blocks, axis=0)
    neuron_mean = np.nanmean(averages, axis=0) if np.isfinite(averages).any() else np.zeros(averages.shape[1])
    neuron_mean = np.where(np.isfinite(neuron_mean), neuron_mean, 0.0)
    averages = np.where(np.isnan(averages), neuron_mean, averages)
    smoothed = [gaussian_filter1d(block, PCR_SMOOTH_BINS, axis=0, mode="nearest")
                for block in np.split(averages, len(groups), axis=0)]
    return np.concatenate(smoothed, axis=0)


def _ridge(inputs: np.ndarray, targets: np.ndarray, relative_penalty: float = 1e-3) -> np.ndarray:
    """argmin_W |inputs W - targets|^2 + lam |W|^2 with lam = relative_penalty x the mean diagonal of inputs^T inputs."""
    gram = inputs.T @ inputs
    lam = relative_penalty * max(float(np.mean(np.diag(gram))), 1e-12)
    return np.linalg.solve(gram + lam * np.eye(gram.shape[0]), inputs.T @ targets)


def pcr_alignment(averages: list[np.ndarray], readin_dim: int,
                  heldin: list[np.ndarray] | None = None) -> list[SessionAlignment]:
    """Steps 2-5 of the module's procedure.

    Parameters
    ----------
    averages : list of ndarray, each (rows, N_s)
        Every session's averaged activity (``averaged_activity``), the same rows in each.
    readin_dim : int
        Shared encoder inputs (the basis has at most this many components).
    heldin : list of ndarray, each (N_s,) bool, optional
        True for the neurons the encoders see (False: held-out neurons, which get zero read-in
        weight and leave the basis and the read-in bias alone). Default: every neuron.

    Returns
    -------
    list of SessionAlignment
        One per session; ``k`` = min(readin_dim, rows - 1, sum N_s^in) components.
    """
    if heldin is None:
        heldin = [np.ones(block.shape[1], dtype=bool) for block in averages]
    heldin = [np.asarray(seen, dtype=bool) for seen in heldin]
    means = [block.mean(0) for block in averages]
    centred = [block - mean for block, mean in zip(averages, means)]
    combined = np.concatenate([block[:, seen] for block, seen in zip(centred, heldin)], axis=1)
    rows = combined.shape[0]
    k = max(1, min(readin_dim, rows - 1, combined.shape[1]))
    if combined.shape[1]:
        left, singular, _ = np.linalg.svd(combined, full_matrices=False)
        scores = left[:, :k] * singular[:k]
        scale = scores.std(0)
        basis = scores / np.where(scale > 0, scale, 1.0)
    else:  # no neuron the encoders see: nothing to align
        basis = np.zeros((rows, k))
    alignments = []
    for block, mean, seen in zip(centred, means, heldin):
        weight = np.zeros((block.shape[1], k))
        if seen.any():
            weight[seen] = _ridge(block[:, seen], basis)
        bias = -mean[seen] @ weight[seen]
        activity_map = np.linalg.lstsq(basis, block, rcond=None)[0]
        alignments.append(SessionAlignment(weight, bias, activity_map, mean))
    return alignments


def shared_condition_labels(conditions: list[np.ndarray | None]) -> np.ndarray | None:
    """The condition labels present in the training trials of every session (sorted), or None when a
    session has no labels or the sessions share none (PCR then uses the trial average)."""
    if any(c is None for c in conditions):
        return None
    shared = set(np.unique(conditions[0]).tolist())
    for labels in conditions[1:]:
        shared &= set(np.unique(labels).tolist())
    return np.array(sorted(shared)) if shared else None


@torch.no_grad()
def initialise_stitched_model(model, train_data: np.ndarray, train_session: np.ndarray,
                              train_condition: np.ndarray | None = None) -> list[SessionAlignment]:
    """Set a stitched model's read-in and readout weights by PCR (the module's procedure).

    Parameters
    ----------
    model : LFADS
        A stitched model (``model.readin`` set); its readout bias is left as it is.
    train_data : ndarray, shape (trials, T, sum N_s)
        The training trials over the union of the sessions' neurons (NaN = unobserved).
    train_session : ndarray, shape (trials,)
        Each trial's session.
    train_condition : ndarray, shape (trials,), optional
        Condition labels (comparable across sessions); without them the trial averages are used.

    Returns
    -------
    list of SessionAlignment
        What was set, one per session (read-in fitted on each session's held-in neurons, the
        readout's activity map on all of them).
    """
    offsets = np.concatenate([[0], np.cumsum(model.session_neurons)]).astype(int)
    blocks = [slice(offsets[s], offsets[s + 1]) for s in range(len(model.session_neurons))]
    members = [np.asarray(train_session) == s for s in range(len(blocks))]
    labels = None
    if train_condition is not None:
        labels = shared_condition_labels([np.asarray(train_condition)[m] for m in members])
    averages = [averaged_activity(train_data[m][..., block], None if labels is None else train_condition[m], labels)
                for m, block in zip(members, blocks)]
    # The encoders see every neuron but the held-out ones (the model's encoder_input_mask).
    seen = model.encoder_input_mask.detach().cpu().numpy() > 0
    alignments = pcr_alignment(averages, model.readin.weight.shape[0], [seen[block] for block in blocks])
    readin, readout = model.readin, model.readout
    like = readin.weight
    readin.weight.zero_()
    readin.bias.zero_()
    params = model.observation.params_per_neuron
    factors_dim = readout.weight.shape[1]
    readout_weight = readout.weight.view(-1, params, factors_dim)  # (sum N_s, P, F)
    for s, (alignment, block) in enumerate(zip(alignments, blocks)):
        k = alignment.weight.shape[1]
        readin.weight[:k, block] = torch.as_tensor(alignment.weight.T, dtype=like.dtype, device=like.device)
        readin.bias[s, :k] = torch.as_tensor(alignment.bias, dtype=like.dtype, device=like.device)
        used = min(k, factors_dim)
        rows = model.observation.readout_weight_for_activity(alignment.activity_map[:used], alignment.mean)
        if rows is not None:
            readout_weight[block] = 0.0
            readout_weight[block, :, :used] = torch.as_tensor(rows, dtype=like.dtype, device=like.device)
    return alignments
