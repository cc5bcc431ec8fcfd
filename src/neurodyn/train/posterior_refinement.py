"""Each trial's initial-condition posterior refined on its own evidence lower bound.

LFADS trains an encoder that maps a trial's data to its IC posterior in one pass (amortised
inference), under an objective whose KL weight is far below an ELBO's (the reconstruction is a mean
over entries, the KL a sum over latent dimensions, ``kl_ic_weight`` 1e-4). The encoder's posteriors
are then narrower than the model's own Bayesian posterior and, where a trial says little about its
state (sparse sampling), placed by an encoder trained on few entries per step.

Refinement keeps the trained model fixed and, per trial, moves the encoder's Gaussian posterior
``N(mean, std^2)`` to maximise that trial's evidence lower bound under the model:

    E_q[ log p(observed entries | ic, inferred inputs) ] - KL(q(ic) || p(ic)) - E_q[KL_co]

with every observed entry counted once (a sum, not a mean) and the KL at full weight: the posterior
a Bayesian would compute for this model and this trial alone (no other trial enters it, unlike
empirical Bayes). The expectation is estimated with ``REFINEMENT_SAMPLES`` reparameterised draws per
step; the controller, when there is one, keeps reading the data through its own encoder (read
once per trial: the model does not change).
Held-out neurons and forward-prediction bins are not evidence (they are never encoder input).
Adam on (mean, log variance); every trial's variables are its own, so trials do not interact.

A trial stops once its Adam direction is mostly noise: the bias-corrected first moment over the
square root of the second, averaged over the trial's variables, is about 1 while the gradient keeps
its sign and about 0.18 when it is pure noise (beta1 = 0.9); below ``REFINEMENT_STOP_SNR`` (after at
least ``REFINEMENT_MIN_STEPS`` steps) the trial keeps its values and leaves the batch, so later steps
cost only the trials still moving. Adam is written out here (torch.optim.Adam's update, per trial)
because each trial must stop with its own moments.

The trials are refined in blocks, on a CPU one block per thread at a time (``cpu_threads``): each
block draws its random numbers from a generator of its own, seeded in block order from torch's
global generator, so a seed gives the same result whatever the threads' timing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from neurodyn.lfads.augmentations import inference_masks
from neurodyn.lfads.model import LFADS
from neurodyn.train.cpu_threads import map_seeded
from neurodyn.train.population_trainer import ADAM_BETAS

# Adam step size on the posterior mean and log variance (units of the IC latent, whose prior std is
# sqrt(ic_prior_var) ~ 0.3); draws of the posterior per trial and step. 25 steps of 0.04 matched 50
# of 0.02 (the defaults) on sparse spikes at 0.57x the time, but lost 0.015 latent R^2 on 2-photon
# sub-frame events on both seeds of bench/suite.py's lorenz_2p (0.987 / 0.963 -> 0.973 / 0.947;
# lorenz_sparse 0.588 / 0.588 -> 0.587 / 0.588, inputs_sparse 0.503 / 0.529 -> 0.501 / 0.529), so the
# defaults stay (bench/README_suite.md). 2 draws per step instead of 4 kept the suite's sparse sets
# within the noise of the draws themselves (rate / latent R^2 on 2 seeds each: mean -0.0008 against
# 4 draws with another seed, no set below today's by 0.005) at about 0.6x the refinement's time.
REFINEMENT_LEARNING_RATE = 0.02
REFINEMENT_SAMPLES = 2
# Per-trial stopping (module docstring). Rate or latent R^2 on the suite's sparse sets, same trained model,
# outputs' seconds, 50 steps without stopping -> with it: see bench/README_suite.md.
REFINEMENT_STOP_SNR, REFINEMENT_MIN_STEPS = 0.2, 10
ADAM_EPS = 1e-8  # torch.optim.Adam's default (the training step's is the config's adam_epsilon)


def refine_ic_posteriors(model: LFADS, data: torch.Tensor, steps: int, batch_size: int = 512,
                         ext_input: torch.Tensor | None = None, session: torch.Tensor | None = None,
                         samples: int = REFINEMENT_SAMPLES, learning_rate: float = REFINEMENT_LEARNING_RATE,
                         stop_snr: float = REFINEMENT_STOP_SNR, min_steps: int = REFINEMENT_MIN_STEPS,
                         threads: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The IC posteriors of ``data`` refined per trial on their ELBO (see the module docstring).

    Parameters
    ----------
    model : LFADS
        A trained model; its weights are not changed (it is put in eval mode: no dropout).
    data : Tensor, shape (trials, T, N)
        Observations, NaN = unobserved, on the model's device.
    steps : int
        At most this many Adam steps per trial (0 returns the encoder's posteriors).
    batch_size : int
        Trials x samples evaluated at once.
    ext_input : Tensor, shape (trials, T, ext_input_dim), optional
        The trials' measured inputs (a model with ``ext_input_dim`` > 0).
    session : Tensor of int, shape (trials,), optional
        Each trial's session (a stitched model).
    samples, learning_rate
        Posterior draws per step and Adam's step size.
    stop_snr, min_steps
        A trial stops after ``min_steps`` once the mean of |Adam direction| over its variables falls
        below ``stop_snr`` (``still_moving``); 0 runs every trial for all ``steps``.
    threads : int, optional
        Blocks of trials refined at once, each on its own thread (default: torch's CPU threads on a CPU,
        1 on a GPU).

    Returns
    -------
    (Tensor, Tensor), each shape (trials, ic_dim)
        The refined posterior means and standard deviations (the blocks' seeds are drawn from torch's
        global generator: seed it for a reproducible result).
    """
    model.eval()
    model.check_ext_input(ext_input, data.shape[0], data.shape[1])
    trials_per_pass = max(1, batch_size // samples)
    starts = list(range(0, data.shape[0], trials_per_pass))

    def refine_block(index: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        rows = slice(starts[index], starts[index] + trials_per_pass)
        chunk = _Chunk(model, data[rows], None if ext_input is None else ext_input[rows],
                       None if session is None else session[rows], samples, rng)
        with torch.enable_grad():  # (a thread starts in its own grad mode)
            return chunk.refine(steps, learning_rate, stop_snr, min_steps)

    # cuDNN's RNNs have no backward pass in eval mode (and eval mode is what keeps dropout off):
    # on a GPU the recurrences run through PyTorch's own kernels here, with the same weights.
    with torch.backends.cudnn.flags(enabled=False), _weights_need_no_gradient(model):
        blocks = map_seeded(refine_block, len(starts), data.device, threads)
    return torch.cat([mean for mean, _ in blocks]), torch.cat([std for _, std in blocks])


def adam_direction(first: torch.Tensor, second: torch.Tensor, step: int) -> torch.Tensor:
    """Adam's update direction (the step is minus the learning rate times it) from the running first and
    second moments after ``step`` steps: bias-corrected first moment over (square root of the
    bias-corrected second + ``ADAM_EPS``), as torch.optim.Adam computes it."""
    beta1, beta2 = ADAM_BETAS
    return (first / (1 - beta1 ** step)) / ((second / (1 - beta2 ** step)).sqrt() + ADAM_EPS)


def still_moving(direction: torch.Tensor, stop_snr: float) -> torch.Tensor:
    """``(trials,)`` True for the trials whose Adam ``direction`` ``(trials, variables)`` still has a mean
    magnitude of at least ``stop_snr`` (near 1 for a gradient that keeps its sign, near 0.18 for noise)."""
    return direction.abs().mean(dim=1) >= stop_snr


class _Chunk:
    """One block of trials: their masks, evidence and encoder posteriors; each step repeats the rows of
    the trials still moving once per draw."""

    def __init__(self, model: LFADS, data: torch.Tensor, ext_input: torch.Tensor | None,
                 session: torch.Tensor | None, samples: int, rng: torch.Generator):
        self.model, self.samples, self.rng = model, samples, rng
        masks = inference_masks(data)
        with torch.no_grad():
            # The controller's view of the data does not change while the IC moves: read it once.
            reading = model.encode(masks.encoder_input, masks.encoder_visible, session)
        self.encoder_mean, self.encoder_std = reading.ic_mean, reading.ic_std
        self.controller_inputs = reading.controller_inputs
        self.encoder_input, self.target = masks.encoder_input, masks.target
        self.evidence = model.evidence_mask(masks.observed)
        self.ext_input, self.session = ext_input, session

    def draws(self, rows: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """The per-trial inputs of the trials ``rows``, each repeated once per draw (draw-major, as the model
        batches them); made again only when a trial stops, not at every step."""
        def repeated(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor[rows].repeat(self.samples, *([1] * (tensor.dim() - 1)))

        return {"encoder_input": repeated(self.encoder_input), "ext_input": repeated(self.ext_input),
                "session": repeated(self.session), "controller_inputs": repeated(self.controller_inputs),
                "target": repeated(self.target), "evidence": repeated(self.evidence)}

    def negative_elbo(self, draws: dict[str, torch.Tensor | None], mean: torch.Tensor,
                      std: torch.Tensor) -> torch.Tensor:
        """Sum over the trials of ``draws`` (``draws(rows)``; posteriors ``mean``, ``std`` ``(len(rows), ic_dim)``)
        of each trial's negative ELBO (``samples``-draw estimate), less the terms that depend on the data
        alone (the optimiser reads only its gradient)."""
        model = self.model
        output = model(draws["encoder_input"], sample_posteriors=True, ext_input=draws["ext_input"],
                       session=draws["session"], rng=self.rng,
                       ic_posterior_override=(mean.repeat(self.samples, 1), std.repeat(self.samples, 1)),
                       controller_inputs_override=draws["controller_inputs"])
        nll = (model.observation.elementwise_nll_up_to_constant(output.readout, draws["target"])
               * draws["evidence"]).sum()
        kl_co = model.kl_co(output).sum()
        return (nll + kl_co) / self.samples + model.ic_kl(mean, std).sum()

    def refine(self, steps: int, learning_rate: float, stop_snr: float,
               min_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        ic_dim = self.encoder_mean.shape[1]
        # Optimised in the encoder's parametrisation (log variance above the model's floor).
        variables = torch.cat([self.encoder_mean.detach(), model.ic_log_var_of(self.encoder_std.detach())], dim=1)
        first, second = torch.zeros_like(variables), torch.zeros_like(variables)
        beta1, beta2 = ADAM_BETAS
        moving = torch.arange(variables.shape[0], device=variables.device)
        draws = self.draws(moving)
        # Every trial still moving has taken the same number of steps (trials only ever leave).
        for step in range(1, steps + 1):
            current = variables[moving].requires_grad_(True)
            mean, log_var = current.split(ic_dim, dim=1)
            loss = self.negative_elbo(draws, mean, model.ic_std_of(log_var))
            # Gradients of the posterior variables only: the model's weights stay as trained.
            (gradient,) = torch.autograd.grad(loss, [current])
            moved_first = beta1 * first[moving] + (1 - beta1) * gradient
            moved_second = beta2 * second[moving] + (1 - beta2) * gradient.square()
            direction = adam_direction(moved_first, moved_second, step)
            first[moving], second[moving] = moved_first, moved_second
            variables[moving] = current.detach() - learning_rate * direction
            if stop_snr > 0 and step >= min_steps:
                keep = still_moving(direction, stop_snr)
                if not keep.all():
                    moving = moving[keep]
                    if not moving.numel():
                        break
                    draws = self.draws(moving)
        mean, log_var = variables.split(ic_dim, dim=1)
        return mean, model.ic_std_of(log_var)


@contextlib.contextmanager
def _weights_need_no_gradient(model: LFADS) -> Iterator[None]:
    """The model's parameters marked as needing no gradient while the posteriors move, so that the
    backward passes skip the weight gradients (a large share of their products), then restored (also
    on an error). The flags are the model's own: nothing may train the same model meanwhile (the
    refinement runs after training, at export and in ``infer``)."""
    flags = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
