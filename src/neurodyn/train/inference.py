"""Inference with a trained model: posterior sample-and-average, the posterior-mean pass, and
empirical-Bayes averaging against the training trials' posteriors."""

from __future__ import annotations

import numpy as np
import torch

from neurodyn.errors import NeurodynError
from neurodyn.lfads.augmentations import inference_masks
from neurodyn.lfads.model import LFADS


@torch.no_grad()
def infer(model: LFADS, data: np.ndarray, num_samples: int = 50, batch_size: int = 512,
          seed: int = 0) -> dict[str, np.ndarray]:
    """Rates, factors and observation parameters of ``data`` ``(trials, T, N)`` (NaN = unobserved).

    The posteriors (IC and inferred inputs) are sampled ``num_samples`` times with dropout off and the
    results averaged ("posterior sample and average").

    Parameters
    ----------
    model : LFADS
        A trained model, e.g. from ``neurodyn.train.run.load_trained_model``.
    data : ndarray, shape (trials, T, N)
        Observations in the unit the model was trained on; NaN = not observed.
    num_samples : int, default 50
        Posterior samples averaged per trial.
    batch_size : int, default 512
        Trials x samples evaluated at once (lower it when memory is short).
    seed : int, default 0
        Seed of the posterior samples (the result is reproducible).

    Returns
    -------
    dict of ndarray
        Trials-first arrays: ``rates`` ``(trials, T, N)`` (expected value per bin), ``factors``
        ``(trials, T, F)``, each named observation parameter ``(trials, T, N)`` (e.g. ZIG ``q``,
        ``alpha``, ``beta``), and ``rates_posterior_mean`` from one pass at the posterior means.
    """
    model.eval()
    device = next(model.parameters()).device
    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        data_t = torch.as_tensor(np.asarray(data, dtype=np.float32), device=device)
        trials_per_pass = max(1, batch_size // num_samples)
        sums: dict[str, list[np.ndarray]] = {}
        for start in range(0, data_t.shape[0], trials_per_pass):
            masks = inference_masks(data_t[start:start + trials_per_pass])
            n = masks.encoder_input.shape[0]
            repeated = masks.encoder_input.repeat(num_samples, 1, 1)
            visible = masks.encoder_visible.repeat(num_samples, 1, 1)
            output = model(repeated, sample_posteriors=True, encoder_visible=visible)
            pieces = {"rates": model.observation.mean(output.readout), "factors": output.factors}
            pieces.update(model.observation.named_params(output.readout))
            for name, value in pieces.items():
                averaged = value.reshape(num_samples, n, *value.shape[1:]).mean(0)
                sums.setdefault(name, []).append(averaged.cpu().numpy())
            mean_output = model(masks.encoder_input, sample_posteriors=False, encoder_visible=masks.encoder_visible)
            sums.setdefault("rates_posterior_mean", []).append(
                model.observation.mean(mean_output.readout).cpu().numpy())
    return {name: np.concatenate(parts, axis=0) for name, parts in sums.items()}


@torch.no_grad()
def infer_empirical_bayes(model: LFADS, data: np.ndarray, reference_data: np.ndarray, samples_per_trial: int = 5,
                          seed: int = 0, data_ids: np.ndarray | None = None,
                          reference_ids: np.ndarray | None = None, batch_size: int = 512,
                          max_pair_entries: int = 2 ** 24) -> dict[str, np.ndarray]:
    """Posterior averaging with the training trials' posteriors as the prior ("empirical Bayes").

    With very sparse data a single trial says little about its latent state, but trials of an
    experiment usually repeat: the aggregate posterior of the ``reference_data`` trials (the training
    trials; ``samples_per_trial`` posterior draws each) is a far better prior than the model's fixed
    one. Under it, the posterior of a trial of ``data`` is a weighted set of those draws, each weighted
    by the likelihood of the trial's observed entries under the draw's readout (self-normalised
    importance weights), and its outputs are the weighted averages of the draws' outputs. Held-out
    neurons (``heldout_neurons``) do not count as evidence.

    ``data_ids`` / ``reference_ids`` name the trials (e.g. indices into one file): a trial is never
    weighted against its own draws, so training trials get a leave-one-out prior. Returns the keys of
    ``infer`` except ``rates_posterior_mean``, trials-first. ``max_pair_entries`` caps the size of one
    block of (trial, draw) likelihoods where an observation model evaluates them entry by entry.
    """
    model.eval()
    device = next(model.parameters()).device
    data_t = torch.as_tensor(np.asarray(data, dtype=np.float32), device=device)
    reference_t = torch.as_tensor(np.asarray(reference_data, dtype=np.float32), device=device)
    if data_t.shape[1:] != reference_t.shape[1:]:
        raise NeurodynError(f"empirical Bayes: trials of shape {tuple(data_t.shape[1:])} cannot be weighted against "
                            f"reference trials of shape {tuple(reference_t.shape[1:])}")
    num_trials = data_t.shape[0]
    data_ids = torch.as_tensor(np.arange(num_trials) if data_ids is None else np.asarray(data_ids), device=device)
    reference_ids = torch.as_tensor(np.full(reference_t.shape[0], -1) if reference_ids is None
                                    else np.asarray(reference_ids), device=device)
    masks = inference_masks(data_t)
    # Held-out neurons (co-bps) are never evidence, as they are never encoder input.
    evidence = masks.observed * model.encoder_input_mask
    references_per_pass = max(1, batch_size // samples_per_trial)
    # Trials per block of the running softmax: its (trials, draws) weights times the largest output.
    trials_per_block = 256

    # Running softmax over the draws, per trial: largest log-likelihood so far, the sum of weights
    # relative to it, and the weighted sums of the outputs.
    best = torch.full((num_trials,), -torch.inf, device=device)
    weight_sum = torch.zeros(num_trials, device=device)
    sums: dict[str, torch.Tensor] = {}
    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        for start in range(0, reference_t.shape[0], references_per_pass):
            reference_masks = inference_masks(reference_t[start:start + references_per_pass])
            output = model(reference_masks.encoder_input.repeat(samples_per_trial, 1, 1), sample_posteriors=True,
                           encoder_visible=reference_masks.encoder_visible.repeat(samples_per_trial, 1, 1))
            draws = {"rates": model.observation.mean(output.readout), "factors": output.factors,
                     **model.observation.named_params(output.readout)}
            draw_ids = reference_ids[start:start + references_per_pass].repeat(samples_per_trial)
            for first in range(0, num_trials, trials_per_block):
                block = slice(first, first + trials_per_block)
                log_lik = model.observation.pairwise_log_likelihood(
                    output.readout, masks.target[block], evidence[block], max_pair_entries)
                log_lik = log_lik.masked_fill(data_ids[block, None] == draw_ids[None, :], -torch.inf)
                new_best = torch.maximum(best[block], log_lik.max(1).values)
                # Rows whose draws were all excluded so far stay at -inf; guard exp(-inf - -inf).
                safe_best = torch.where(torch.isfinite(new_best), new_best, torch.zeros_like(new_best))
                rescale = torch.exp(best[block] - safe_best)
                weights = torch.exp(log_lik - safe_best[:, None])
                weight_sum[block] = weight_sum[block] * rescale + weights.sum(1)
                for name, value in draws.items():
                    if name not in sums:
                        sums[name] = value.new_zeros(num_trials, *value.shape[1:])
                    weighted = torch.tensordot(weights, value, dims=1)
                    sums[name][block] = sums[name][block] * rescale.view(-1, *[1] * (value.dim() - 1)) + weighted
                best[block] = new_best
    if not torch.all(weight_sum > 0):
        raise NeurodynError("empirical Bayes: some trials have no reference draw to be weighted against")
    return {name: (value / weight_sum.view(-1, *[1] * (value.dim() - 1))).cpu().numpy()
            for name, value in sums.items()}
