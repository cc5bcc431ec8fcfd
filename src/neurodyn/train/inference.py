"""Inference with a trained model: posterior sample-and-average (of the encoder's posteriors, or of
posteriors refined per trial by ``train.posterior_refinement``), the posterior-mean pass, and
empirical-Bayes averaging against the training trials' posteriors."""

from __future__ import annotations

import numpy as np
import torch

from neurodyn.errors import NeurodynError
from neurodyn.lfads.augmentations import inference_masks
from neurodyn.lfads.model import LFADS, EncoderReading, LfadsOutput
from neurodyn.train.cpu_threads import map_seeded
from neurodyn.train.posterior_refinement import refine_ic_posteriors


# A draw whose likelihood is below e^-60 of the best draw's gets weight 0 (see ``relative_weights``).
NEGLIGIBLE_LOG_WEIGHT = -60.0
# Outputs of ``infer`` with one value per trial, not per time step: ``(trials, ic_dim)``.
PER_TRIAL_OUTPUTS = ("ic_mean", "ic_std")
# Outputs of ``infer`` without a neuron axis (every other output is ``(trials, T, N)``).
LATENT_OUTPUTS = PER_TRIAL_OUTPUTS + ("factors", "inferred_inputs", "inferred_inputs_std", "generator_states")


def select_neurons(inferred: dict[str, np.ndarray], neurons: slice) -> dict[str, np.ndarray]:
    """``inferred`` (from ``infer``) with every per-neuron output ``(trials, T, N)`` cut to ``neurons``
    (e.g. one session's block of a stitched model); the latent outputs (``LATENT_OUTPUTS``) are kept whole."""
    return {name: value if name in LATENT_OUTPUTS else value[..., neurons] for name, value in inferred.items()}


def drop_leading_bins(inferred: dict[str, np.ndarray], bins: int) -> dict[str, np.ndarray]:
    """``inferred`` (from ``infer``) without the first ``bins`` time steps of each per-step output
    ``(trials, T, ...)``; the per-trial outputs (``PER_TRIAL_OUTPUTS``) are kept whole."""
    return {name: value if name in PER_TRIAL_OUTPUTS else value[:, bins:] for name, value in inferred.items()}


def ext_input_tensor(model: LFADS, ext_input: np.ndarray | None, data: torch.Tensor,
                      name: str = "ext_input") -> torch.Tensor | None:
    """``ext_input`` ``(trials, T, ext_input_dim)`` as a tensor beside ``data``, checked against the model."""
    ext = None if ext_input is None else torch.as_tensor(np.asarray(ext_input, dtype=np.float32), device=data.device)
    try:
        model.check_ext_input(ext, data.shape[0], data.shape[1])
    except NeurodynError as error:
        raise NeurodynError(f"{name}: {error}") from None
    return ext


def _session_ids(model: LFADS, session: int | None, count: int, device: torch.device) -> torch.Tensor | None:
    """``count`` copies of the session index for a stitched model (None for a model of one session)."""
    if not model.is_stitched:
        return None
    if session is None or not 0 <= int(session) < len(model.session_neurons):
        raise NeurodynError(f"the model stitches {len(model.session_neurons)} sessions: name the session of the "
                            f"trials (0 to {len(model.session_neurons) - 1}); got {session}")
    return torch.full((count,), int(session), dtype=torch.int64, device=device)


def _sampled_pieces(model: LFADS, output: LfadsOutput, generator_states: bool) -> dict[str, torch.Tensor]:
    """The per-sample outputs that are averaged over posterior samples, trials-first."""
    pieces = {"rates": model.observation.mean(output.readout), "factors": output.factors}
    pieces.update(model.observation.named_params(output.readout))
    if output.co_mean is not None:
        pieces["inferred_inputs"] = output.co_mean
        pieces["inferred_inputs_std"] = output.co_std
    if generator_states:
        pieces["generator_states"] = output.gen_states
    return pieces


@torch.no_grad()
def infer(model: LFADS, data: np.ndarray, num_samples: int = 50, batch_size: int = 512,
          seed: int = 0, ext_input: np.ndarray | None = None,
          write_generator_states: bool = False, session: int | None = None,
          refinement_steps: int = 0, threads: int | None = None) -> dict[str, np.ndarray]:
    """Rates, factors, observation parameters and latent posteriors of ``data`` ``(trials, T, N)`` (NaN = unobserved).

    The posteriors (IC and inferred inputs) are sampled ``num_samples`` times with dropout off and the
    results averaged ("posterior sample and average"). With ``refinement_steps`` > 0 each trial's IC
    posterior is first refined on its own evidence lower bound (``train.posterior_refinement``).

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
    ext_input : ndarray, shape (trials, T, ext_input_dim), optional
        The trials' measured inputs (required exactly when the model has ``ext_input_dim`` > 0).
    write_generator_states : bool, default False
        Also return the generator states.
    session : int, optional
        The session every trial of ``data`` belongs to (a stitched model; ``data`` then spans the
        union of the sessions' neurons, see ``neurodyn.data.sessions``).
    refinement_steps : int, default 0
        Adam steps of the per-trial IC posterior refinement; 0 = the encoder's posteriors as they are.
    threads : int, optional
        Passes (and refinement blocks) run at once, each on its own thread (default: torch's CPU
        threads on a CPU, 1 on a GPU); each pass draws from its own stream, seeded in order from
        ``seed``, so the result does not depend on the threads.

    Returns
    -------
    dict of ndarray
        Trials-first arrays:

        * ``rates`` ``(trials, T, N)`` (expected value per bin), ``factors`` ``(trials, T, F)`` and each
          named observation parameter ``(trials, T, N)`` (e.g. ZIG ``q``, ``alpha``, ``beta``), averaged
          over the samples;
        * ``rates_posterior_mean`` ``(trials, T, N)`` from one pass at the posterior means;
        * ``ic_mean``, ``ic_std`` ``(trials, ic_dim)``: the initial-condition posterior (the encoder's,
          or the refined one with ``refinement_steps``; the same for every sample);
        * with a controller only (``co_dim`` > 0; absent for an autonomous model): ``inferred_inputs``
          ``(trials, T, co_dim)``, the controller outputs' posterior means, and ``inferred_inputs_std``
          (same shape), their posterior standard deviations, each averaged over the samples like the
          rates (each sample's controller follows its own initial-condition draw);
        * with ``write_generator_states``: ``generator_states`` ``(trials, T, gen_dim)`` averaged over
          the samples.
    """
    model.eval()
    device = next(model.parameters()).device
    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        data_t = torch.as_tensor(np.asarray(data, dtype=np.float32), device=device)
        ext_t = ext_input_tensor(model, ext_input, data_t)
        refined = None
        if refinement_steps > 0:
            refined = refine_ic_posteriors(model, data_t, refinement_steps, batch_size, ext_t,
                                           _session_ids(model, session, data_t.shape[0], device), threads=threads)
        trials_per_pass = max(1, batch_size // num_samples)
        starts = list(range(0, data_t.shape[0], trials_per_pass))

        @torch.no_grad()  # (a thread starts in its own grad mode)
        def infer_pass(index: int, rng: torch.Generator) -> dict[str, np.ndarray]:
            rows = slice(starts[index], starts[index] + trials_per_pass)
            masks = inference_masks(data_t[rows])
            ext = None if ext_t is None else ext_t[rows]
            n = masks.encoder_input.shape[0]
            # The encoders are deterministic at inference (no dropout): each trial is read once, and its
            # posterior and controller inputs are handed to the sampled pass for all its samples.
            reading = model.encode(masks.encoder_input, masks.encoder_visible, _session_ids(model, session, n, device))
            if refined is not None:
                reading = EncoderReading(refined[0][rows], refined[1][rows], reading.controller_inputs)
            mean_output = _generate(model, reading, masks.encoder_input, ext, session, sample_posteriors=False)
            output = _generate(model, reading.repeat(num_samples), masks.encoder_input.repeat(num_samples, 1, 1),
                               None if ext is None else ext.repeat(num_samples, 1, 1), session, sample_posteriors=True,
                               rng=rng)
            pieces = {name: value.reshape(num_samples, n, *value.shape[1:]).mean(0).cpu().numpy()
                      for name, value in _sampled_pieces(model, output, write_generator_states).items()}
            pieces["rates_posterior_mean"] = model.observation.mean(mean_output.readout).cpu().numpy()
            pieces["ic_mean"], pieces["ic_std"] = mean_output.ic_mean.cpu().numpy(), mean_output.ic_std.cpu().numpy()
            return pieces

        passes = map_seeded(infer_pass, len(starts), device, threads)
    return {name: np.concatenate([part[name] for part in passes], axis=0) for name in (passes[0] if passes else ())}


@torch.no_grad()
def infer_empirical_bayes(model: LFADS, data: np.ndarray, reference_data: np.ndarray, samples_per_trial: int = 5,
                          seed: int = 0, data_ids: np.ndarray | None = None,
                          reference_ids: np.ndarray | None = None, batch_size: int = 512,
                          max_pair_entries: int = 2 ** 24, ext_input: np.ndarray | None = None,
                          reference_ext_input: np.ndarray | None = None,
                          write_generator_states: bool = False, session: int | None = None) -> dict[str, np.ndarray]:
    """Posterior averaging with the training trials' posteriors as the prior ("empirical Bayes").

    With very sparse data a single trial says little about its latent state, but trials of an
    experiment usually repeat: the aggregate posterior of the ``reference_data`` trials (the training
    trials; ``samples_per_trial`` posterior draws each) is a far better prior than the model's fixed
    one. Under it, the posterior of a trial of ``data`` is a weighted set of those draws, each weighted
    by the likelihood of the trial's observed entries under the draw's readout (self-normalised
    importance weights), and its outputs are the weighted averages of the draws' outputs. Held-out
    neurons (``heldout_neurons``) and the forward-prediction bins (``forward_bins``) do not count as
    evidence.

    ``data_ids`` / ``reference_ids`` name the trials (e.g. indices into one file): a trial is never
    weighted against its own draws, so training trials get a leave-one-out prior. Returns the keys of
    ``infer`` except ``rates_posterior_mean``, trials-first: the draws' rates, factors, observation
    parameters, inferred inputs (with a controller) and generator states (``write_generator_states``)
    weighted-averaged; ``ic_mean``/``ic_std`` are the trial's own encoder posterior, as in ``infer``.
    ``max_pair_entries`` caps the size of one block of (trial, draw) likelihoods where an observation
    model evaluates them entry by entry.

    With measured inputs (``ext_input_dim`` > 0), ``reference_ext_input`` and ``ext_input``
    ``(trials, T, ext_input_dim)`` are those of the reference trials and of ``data``. A draw is
    generated with its reference trial's inputs, so the weighting pools trials whose inputs are alike
    (e.g. repeats of one condition); ``ext_input`` is checked as in ``infer`` (the encoders, which give
    the trials' own posteriors, do not read it).

    A stitched model weighs the trials of one ``session`` against reference trials of the same session.
    """
    model.eval()
    device = next(model.parameters()).device
    data_t = torch.as_tensor(np.asarray(data, dtype=np.float32), device=device)
    reference_t = torch.as_tensor(np.asarray(reference_data, dtype=np.float32), device=device)
    if data_t.shape[1:] != reference_t.shape[1:]:
        raise NeurodynError(f"empirical Bayes: trials of shape {tuple(data_t.shape[1:])} cannot be weighted against "
                            f"reference trials of shape {tuple(reference_t.shape[1:])}")
    ext_input_tensor(model, ext_input, data_t)  # checked like infer's; the encoders do not read it
    reference_ext_t = ext_input_tensor(model, reference_ext_input, reference_t, "reference_ext_input")
    num_trials = data_t.shape[0]
    data_ids = torch.as_tensor(np.arange(num_trials) if data_ids is None else np.asarray(data_ids), device=device)
    reference_ids = torch.as_tensor(np.full(reference_t.shape[0], -1) if reference_ids is None
                                    else np.asarray(reference_ids), device=device)
    masks = inference_masks(data_t)
    evidence = model.evidence_mask(masks.observed)
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
            rows = slice(start, start + references_per_pass)
            reference_masks = inference_masks(reference_t[rows])
            reading = model.encode(reference_masks.encoder_input, reference_masks.encoder_visible,
                                   _session_ids(model, session, reference_masks.encoder_input.shape[0], device))
            output = _generate(model, reading.repeat(samples_per_trial),
                               reference_masks.encoder_input.repeat(samples_per_trial, 1, 1),
                               None if reference_ext_t is None else reference_ext_t[rows].repeat(samples_per_trial, 1, 1),
                               session, sample_posteriors=True)
            draws = _sampled_pieces(model, output, write_generator_states)
            draw_ids = reference_ids[start:start + references_per_pass].repeat(samples_per_trial)
            for first in range(0, num_trials, trials_per_block):
                block = slice(first, first + trials_per_block)
                log_lik = model.observation.pairwise_log_likelihood(
                    output.readout, masks.target[block], evidence[block], max_pair_entries)
                log_lik = log_lik.masked_fill(data_ids[block, None] == draw_ids[None, :], -torch.inf)
                new_best = torch.maximum(best[block], log_lik.max(1).values)
                # Rows whose draws were all excluded so far stay at -inf; guard exp(-inf - -inf).
                safe_best = torch.where(torch.isfinite(new_best), new_best, torch.zeros_like(new_best))
                rescale = relative_weights(best[block] - safe_best)
                weights = relative_weights(log_lik - safe_best[:, None])
                weight_sum[block] = weight_sum[block] * rescale + weights.sum(1)
                for name, value in draws.items():
                    if name not in sums:
                        sums[name] = value.new_zeros(num_trials, *value.shape[1:])
                    weighted = torch.tensordot(weights, value, dims=1)
                    sums[name][block] = sums[name][block] * rescale.view(-1, *[1] * (value.dim() - 1)) + weighted
                best[block] = new_best
    if not torch.all(weight_sum > 0):
        raise NeurodynError("empirical Bayes: some trials have no reference draw to be weighted against")
    result = {name: (value / weight_sum.view(-1, *[1] * (value.dim() - 1))).cpu().numpy()
              for name, value in sums.items()}
    result.update(_encoder_posteriors(model, data_t, batch_size, session))
    return result


def relative_weights(log_weights: torch.Tensor) -> torch.Tensor:
    """``exp(log_weights)`` for log-weights relative to the largest one (all <= 0), with those below
    ``NEGLIGIBLE_LOG_WEIGHT`` set to exactly 0.

    Against the best draw's weight of 1 they add nothing a float32 average can hold, and left as they
    are they underflow to subnormal numbers (about e^-87 to e^-104), on which a CPU's products run
    tens of times slower: an empirical-Bayes pass over a thousand reference trials took 45 s instead
    of 1 s."""
    return torch.exp(log_weights).masked_fill(log_weights < NEGLIGIBLE_LOG_WEIGHT, 0.0)


def _generate(model: LFADS, reading: EncoderReading, encoder_input: torch.Tensor, ext_input: torch.Tensor | None,
              session: int | None, sample_posteriors: bool, rng: torch.Generator | None = None) -> LfadsOutput:
    """One pass of the generator (and controller) from what ``encode`` read of these trials."""
    # Without the reading's controller inputs, forward would read the trials again, and without
    # their visibility mask: never let it.
    assert (reading.controller_inputs is not None) == (model.co_dim > 0)
    return model(encoder_input, sample_posteriors=sample_posteriors, ext_input=ext_input, rng=rng,
                 session=_session_ids(model, session, encoder_input.shape[0], encoder_input.device),
                 ic_posterior_override=(reading.ic_mean, reading.ic_std),
                 controller_inputs_override=reading.controller_inputs)


def _encoder_posteriors(model: LFADS, data: torch.Tensor, batch_size: int,
                        session: int | None = None) -> dict[str, np.ndarray]:
    """``ic_mean`` and ``ic_std`` ``(trials, ic_dim)``: each trial's initial-condition posterior."""
    means, stds = [], []
    for start in range(0, data.shape[0], batch_size):
        masks = inference_masks(data[start:start + batch_size])
        reading = model.encode(masks.encoder_input, masks.encoder_visible,
                               _session_ids(model, session, masks.encoder_input.shape[0], data.device))
        means.append(reading.ic_mean.cpu().numpy())
        stds.append(reading.ic_std.cpu().numpy())
    return {"ic_mean": np.concatenate(means), "ic_std": np.concatenate(stds)}
