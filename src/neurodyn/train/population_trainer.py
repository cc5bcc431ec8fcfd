"""The LFADS training step, for one model and for a PBT population: one batched model, W workers.

``PopulationTrainer`` trains W workers that share an architecture and their data (with its measured
inputs and, for a stitched model, each trial's session). The weights of
all workers are one ``PopulationLFADS`` (a leading worker axis on every tensor) and so are Adam's
moments; one training step is one batched forward and backward pass for every worker. One model's
``LfadsTrainer`` trains through a population of one: the step, the objective, the gradient clipping
and Adam are written once, here. What is per worker is held per worker:

* hyperparameters (learning rate, dropout keep_prob, CD keep_ratio and cd_pass_fraction, KL and L2
  weights, loss_scale, max_grad_norm, Adam epsilon, temporal_shift_std, the observation scales'
  prior and penalty): gathered into ``(W,)`` tensors from each worker's config for every step;
* the gradient-norm clip (the norm of each worker's own slice of all parameters), Adam's step
  count and bias correction, a skipped (non-finite) step;
* the learning rate and its plateau schedule, ramps, smoothed validation NLL, early stopping, best
  weights, history and random stream: kept in one ``LfadsTrainer`` per worker (its *member*). A
  member's model and Adam moments are views of its worker's slice of the stacked tensors (one copy of
  each), so a member's ``state_dict`` is its worker's current state and ``load_state_dict`` writes it.

On a CPU a batch can be split into shards of at least ``MIN_SHARD_TRIALS`` trials, one per thread
(``threads``; one model's ``batch_threads``), each run forward and backward on its own core with torch's
own threads set to one; the shards' losses are normalised by the whole batch, so the summed gradient
is the batch's, and they are summed in shard order, so a seed gives the same run whatever the timing.
Worker k draws its random numbers (batch order, SBTT/CD masks and temporal shifts, one seed per
shard, then each shard's dropout masks and posterior noise from a generator seeded with it) from its
member's generator in a fixed order, so worker k follows the run of a single trainer with the same
seed, hyperparameters and shards (a loop over workers draws the numbers; the compute is batched).
Every worker must use the same ``batch_size``. There is no ``fit``: PBT trains each generation for a
fixed number of epochs (``step_epoch``), and stopping one worker early while the others train on is
left to the engine. A worker's hyperparameters, random stream and state are its member's
(``members[k].set_hyperparameters``, ``reseed``, ``state_dict``, ``load_state_dict``). Validation
batches use worker 0's ``valid_batch_size`` (it only changes how the sum is split, not its value).

A step is split in two: ``_step_inputs`` does everything that reads Python state or draws random
numbers and hands the rest over as tensors; ``_step`` (and ``_validation_sums``) compute from those
tensors alone, writing weights and Adam moments in place. On a GPU that lets ``cuda_graphs``
record them once per batch shape and replay them: one launch per step instead of thousands.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import time
from typing import TYPE_CHECKING

import numpy as np
import torch

from neurodyn.errors import NeurodynError
from neurodyn.lfads.augmentations import inference_masks, reconstruction_loss, training_masks
from neurodyn.lfads.population import ForwardNoise, PopulationLFADS
from neurodyn.observation.base import masked_nll_sum
from neurodyn.train.allocator import keep_freed_memory
from neurodyn.train.cpu_threads import map_in_order, sharing_cpu
from neurodyn.train.cuda_graphs import CapturedStep, cuda_graphs_enabled
from neurodyn.train.schedules import linear_ramp

if TYPE_CHECKING:  # the trainer of one model trains through this module
    from neurodyn.train.trainer import LfadsTrainer

# Adam's moment decay rates: torch.optim.Adam's defaults.
ADAM_BETAS = (0.9, 0.999)
# torch.nn.utils.clip_grad_norm_ divides by (norm + this).
CLIP_NORM_EPS = 1e-6
TERM_NAMES = ("loss", "train_nll", "kl_ic", "kl_co", "l2")
# The per-worker values a training step reads, in the model's dtype (columns of its ``hyper`` input):
# the workers' config values, then the observation scales' prior and penalty weight (model settings).
STEP_CONFIG_VALUES = ("loss_scale", "kl_ic_weight", "kl_co_weight", "l2_gen_scale", "l2_con_scale",
                      "max_grad_norm", "adam_epsilon")
STEP_HYPERPARAMETERS = (*STEP_CONFIG_VALUES, "scale_prior", "scale_weight")
# Fewer trials than this per shard and a thread costs more than it saves.
MIN_SHARD_TRIALS = 16
# The trial axis of each tensor a step reads (the others are per worker and not split into shards);
# the generator states' dropout multipliers are added by ``trial_axes``, their axis depends on the model.
TRIAL_AXIS = {"encoder_input": 1, "target": 1, "observed": 1, "grad_mask": 1, "encoder_visible": 1,
              "ext_input": 1, "session": 1, "noise.input_keep": 1, "noise.ic_final_keep": 1, "noise.ic_noise": 1,
              "noise.gen_init_keep": 1, "noise.ci_keep": 1, "noise.co_noise": 2}


def shard_bounds(batch: int, threads: int) -> list[int]:
    """Where a batch of ``batch`` trials is cut into up to ``threads`` shards of at least ``MIN_SHARD_TRIALS``."""
    shards = max(1, min(threads, batch // MIN_SHARD_TRIALS))
    return np.linspace(0, batch, shards + 1).round().astype(int).tolist()


def trial_axes(co_dim: int) -> dict[str, int]:
    """``TRIAL_AXIS`` with the trial axis of the generator states' dropout multipliers: ``(W, T + 1, B, G)``
    with a controller (the decoder's per-step masks), ``(W, B, T, G)`` without."""
    return {**TRIAL_AXIS, "noise.state_keep": 2 if co_dim > 0 else 1}


class PopulationTrainer:
    """Trains ``members`` (``LfadsTrainer`` objects of one architecture, built on the same data) as one
    batched population. Each member's current state (weights, Adam state, schedule, bookkeeping) is
    taken over; ``dtype`` (e.g. ``torch.float64``) converts the members first."""

    def __init__(self, members: list[LfadsTrainer], dtype: torch.dtype | None = None, threads: int = 1):
        """``threads``: batch threads per step (CPU; see the module docstring)."""
        if not members:
            raise NeurodynError("a population needs at least one worker")
        for member in members:  # (a member's own population of one would keep training stale tensors)
            member._release_engine()
            if dtype is not None:
                member.set_dtype(dtype)
        self.members = members
        first = members[0]
        for k, member in enumerate(members[1:], start=1):
            if not all(_same_data(getattr(member, name), getattr(first, name)) for name in (
                    "train_data", "valid_data", "sample_validation_data", "train_session", "valid_session")):
                raise NeurodynError(f"worker {k} of the population was built on other data than worker 0; "
                                    "every worker of a population trains on the same trials")
        for member in members[1:]:  # one copy of the data, not one per worker
            member.train_data, member.valid_data = first.train_data, first.valid_data
            member.sample_validation_data = first.sample_validation_data
            member.train_ext_input, member.valid_ext_input = first.train_ext_input, first.valid_ext_input
        self.device = first.device
        self.train_data, self.valid_data = first.train_data, first.valid_data
        self.sample_validation_data = first.sample_validation_data
        self.train_ext_input, self.valid_ext_input = first.train_ext_input, first.valid_ext_input
        self.train_session, self.valid_session = first.train_session, first.valid_session
        # The step's large tensors (activations, the compiled kernels' saved gates) would otherwise be
        # page-faulted in afresh at every step: one model's training lost 5-10% to it on 2 cores.
        keep_freed_memory()
        self.threads = threads
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.model = PopulationLFADS.from_models([member.model for member in members])
        self.parameters = [parameter for _, parameter in self.model.stacked_parameters()]
        # Stacked like the weights, and each member's moments become views of its slice.
        self.exp_avg = [torch.stack([m.exp_avg[i] for m in members]) for i in range(len(self.parameters))]
        self.exp_avg_sq = [torch.stack([m.exp_avg_sq[i] for m in members]) for i in range(len(self.parameters))]
        for k, member in enumerate(members):
            member.exp_avg = [moment[k] for moment in self.exp_avg]
            member.exp_avg_sq = [moment[k] for moment in self.exp_avg_sq]
        # On a GPU the steps (training: forward, backward, clipping, Adam; validation: forward) are
        # replayed from CUDA graphs, one per batch shape.
        graphs = self.device.type == "cuda" and cuda_graphs_enabled()
        self.captured_step = CapturedStep(self._step, enabled=graphs, device=self.device)
        self.captured_validation = CapturedStep(self._validation_sums, enabled=graphs, device=self.device)

    @classmethod
    def from_configs(cls, configs: list, train_data, valid_data, device=None, train_ext_input=None,
                     valid_ext_input=None, dtype: torch.dtype | None = None, train_session=None, valid_session=None,
                     train_condition=None, sample_validation_data=None) -> "PopulationTrainer":
        """A new population of ``len(configs)`` workers (each ``LfadsConfig`` its own seed and hyperparameters);
        the data arguments as ``LfadsTrainer``'s."""
        from neurodyn.train.trainer import LfadsTrainer

        members = [LfadsTrainer(config, train_data, valid_data, device=device, train_ext_input=train_ext_input,
                                valid_ext_input=valid_ext_input, train_session=train_session,
                                valid_session=valid_session, train_condition=train_condition,
                                sample_validation_data=sample_validation_data) for config in configs]
        return cls(members, dtype)

    @property
    def num_workers(self) -> int:
        return len(self.members)

    # -- per-worker values ------------------------------------------------------------------------
    def _per_worker(self, values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=self.train_data.dtype, device=self.device)

    def learning_rates(self) -> list[float]:
        """Each worker's current learning rate (its plateau schedule's)."""
        return [member.learning_rate for member in self.members]

    def _batch_size(self) -> int:
        sizes = sorted({member.config.batch_size for member in self.members})
        if len(sizes) > 1:
            raise NeurodynError(f"the population engine needs one batch_size for every worker; got {sizes} "
                                "(leave batch_size out of the search, or use engine: embedded)")
        return sizes[0]

    # -- one epoch ----------------------------------------------------------------------------------
    def train_epoch(self, max_steps: int | None = None) -> list[dict[str, float]]:
        """One pass over the training trials for every worker (each its own shuffled order); returns each
        worker's trial-weighted means of the terms, as ``LfadsTrainer.train_epoch``. ``max_steps``: stop
        after that many steps (part of an epoch, e.g. to measure one step's memory; the means then cover
        the trials seen)."""
        batch_size = self._batch_size()
        num_trials = self.train_data.shape[0]
        ramps = {
            "kl": [linear_ramp(m.epoch, m.config.kl_increase_epochs) for m in self.members],
            "l2": [linear_ramp(m.epoch, m.config.l2_increase_epochs) for m in self.members],
        }
        orders = [torch.randperm(num_trials, device=self.device, generator=m.generator) for m in self.members]
        sums = torch.zeros(self.num_workers, len(TERM_NAMES), dtype=torch.float64)
        starts = list(range(0, num_trials, batch_size))[:max_steps]
        seen = 0
        with sharing_cpu(self.threads) as self._pool:
            try:
                for start in starts:
                    trials = [order[start:start + batch_size] for order in orders]
                    terms = self._train_step(trials, self._per_worker(ramps["kl"]), self._per_worker(ramps["l2"]))
                    sums += terms * len(trials[0])
                    seen += len(trials[0])
            finally:  # (an interrupted epoch must not leave a closed pool for the next one)
                self._pool = None
        results = []
        for k in range(self.num_workers):
            row = {key: float(value) / seen for key, value in zip(TERM_NAMES, sums[k])}
            row.update(kl_ramp=ramps["kl"][k], l2_ramp=ramps["l2"][k])
            results.append(row)
        return results

    def _train_step(self, trials: list[torch.Tensor], kl_ramp: torch.Tensor, l2_ramp: torch.Tensor) -> torch.Tensor:
        """One optimiser step for every worker on its own ``trials``; returns ``(W, 5)`` (loss, nll, kl_ic,
        kl_co, l2) per worker."""
        outputs = self.captured_step(self._step_inputs(trials, kl_ramp, l2_ramp))
        terms = outputs["terms"].to(torch.float64).cpu()
        for k, taken in enumerate(outputs["taken"].cpu().tolist()):
            if taken:
                self.members[k].adam_steps += 1
            else:  # a non-finite step would poison the weights (LfadsTrainer skips it the same way)
                self.members[k].skipped_steps += 1
        return terms

    def _step_inputs(self, trials: list[torch.Tensor], kl_ramp: torch.Tensor, l2_ramp: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
        """Everything ``_step`` reads, as tensors: each worker's batch with its CD/SBTT masks, its random
        numbers (drawn here, from its own stream, in ``LfadsTrainer``'s order), the ramps, and the
        per-worker hyperparameters and Adam step counts of this step."""
        masks, seeds, ext, sessions = [], [], [], []
        bounds = shard_bounds(len(trials[0]), self.threads)
        for k, member in enumerate(self.members):
            c = member.config
            batch = self.train_data[trials[k]]
            masks.append(training_masks(batch, c.keep_ratio, c.cd_pass_fraction, member.generator,
                                        c.temporal_shift_std, self.model.encoder_mask(batch.shape[1])[k],
                                        c.spike_jitter_bins))
            # One seed per shard, drawn after the masks, seeding that shard's forward pass's stream.
            seeds.append(torch.randint(0, 2 ** 62, (len(bounds) - 1,), generator=member.generator, device=self.device))
            if self.train_ext_input is not None:
                ext.append(self.train_ext_input[trials[k]])
            if self.train_session is not None:
                sessions.append(self.train_session[trials[k]])
        inputs = {name: _stack([getattr(m, name) for m in masks])
                  for name in ("encoder_input", "target", "observed", "grad_mask", "encoder_visible")}
        inputs["shard_seeds"] = torch.stack(seeds).T  # (shards, W)
        if len(bounds) == 2 or self.captured_step.enabled:
            # The step then reads tensors only (as a recorded one must): its random numbers are drawn
            # here, each shard's from its own seeds, joined along the trials. (Several shards on CPU
            # threads draw their own, each on its thread.)
            num_steps = inputs["target"].shape[2]
            shard_noise = [self._shard_noise(inputs, shard, bounds[shard + 1] - bounds[shard], num_steps)
                           for shard in range(len(bounds) - 1)]
            axes = trial_axes(self.model.co_dim)
            for field in dataclasses.fields(ForwardNoise):
                parts = [getattr(noise, field.name) for noise in shard_noise]
                if parts[0] is not None:
                    name = f"noise.{field.name}"
                    inputs[name] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=axes[name])
        if ext:
            inputs["ext_input"] = _stack(ext)
        if sessions:
            inputs["session"] = _stack(sessions)
        inputs["kl_ramp"], inputs["l2_ramp"] = kl_ramp, l2_ramp
        inputs["hyper"] = self._per_worker([[float(getattr(member.config, key)) for key in STEP_CONFIG_VALUES]
                                            + [prior, weight] for member, prior, weight
                                            in zip(self.members, self.model.scale_prior, self.model.scale_weight)])
        # Adam's step sizes are computed in float64 (torch computes them in Python floats).
        inputs["learning_rate"] = torch.tensor(self.learning_rates(), dtype=torch.float64, device=self.device)
        inputs["adam_steps"] = torch.tensor([member.adam_steps for member in self.members], dtype=torch.float64,
                                            device=self.device)
        return inputs

    def _step(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The step's arithmetic on ``_step_inputs``'s tensors alone (replayable as a CUDA graph): forward,
        loss and gradients (per shard, see the module docstring), per-worker clipping and Adam, the
        weights and moments written in place. Returns ``terms`` ``(W, 5)`` and ``taken`` ``(W,)`` bool
        (False: the worker's step was not finite and was skipped)."""
        hyper = dict(zip(STEP_HYPERPARAMETERS, inputs["hyper"].unbind(1)))
        batch = inputs["target"].shape[1]
        # The whole batch's normalisers, so that the shards' losses add up to the batch's.
        observed_total = inputs["observed"].sum((1, 2, 3)).clamp_min(1.0)
        axes = trial_axes(self.model.co_dim)
        bounds = shard_bounds(batch, self.threads)

        def shard(index: int) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
            start, size = bounds[index], bounds[index + 1] - bounds[index]
            part = {name: value.narrow(axes[name], start, size) if name in axes else value
                    for name, value in inputs.items()}
            if "noise.ic_noise" in part:  # drawn beforehand (a recorded step)
                noise = ForwardNoise(**{field.name: part.get(f"noise.{field.name}")
                                        for field in dataclasses.fields(ForwardNoise)})
            else:
                noise = self._shard_noise(inputs, index, size, inputs["target"].shape[2])
            terms = self._objective(part, noise, hyper, observed_total, batch, carries_penalties=index == 0)
            return terms.detach(), torch.autograd.grad(terms[:, 0].sum(), self.parameters, allow_unused=True)

        results = map_in_order(self._pool, shard, len(bounds) - 1)
        terms = functools.reduce(torch.add, [shard_terms for shard_terms, _ in results])
        gradients = []
        for i, parameter in enumerate(self.parameters):
            parts = [grads[i] for _, grads in results if grads[i] is not None]
            gradients.append(functools.reduce(torch.add, parts) if parts else torch.zeros_like(parameter))
        norms = self._clip_gradients(gradients, hyper["max_grad_norm"])
        taken = torch.isfinite(norms) & torch.isfinite(terms[:, 0]) & ~self.model.isolated_workers()
        self._adam_step(gradients, taken, inputs["adam_steps"], inputs["learning_rate"], hyper["adam_epsilon"])
        return {"terms": terms, "taken": taken}

    def _shard_noise(self, inputs: dict[str, torch.Tensor], shard: int, trials: int, num_steps: int) -> ForwardNoise:
        """Shard ``shard``'s random numbers (``trials`` trials), each worker's from a generator seeded with
        its seed for that shard (``inputs["shard_seeds"]`` ``(shards, W)``)."""
        rngs = [torch.Generator(device=self.device).manual_seed(seed) for seed in inputs["shard_seeds"][shard].tolist()]
        return self.model.draw_forward_noise(rngs, trials, num_steps, sample=True, like=inputs["target"])

    def _objective(self, inputs: dict[str, torch.Tensor], noise: ForwardNoise, hyper: dict[str, torch.Tensor],
                   observed_total: torch.Tensor, batch: int, carries_penalties: bool) -> torch.Tensor:
        """The LFADS objective on (a shard of) a training batch, per worker ``(W, 5)``: loss, NLL, KL_ic,
        KL_co, L2, where loss = loss_scale * (NLL + l2_ramp * L2 + kl_ramp * (kl_ic_weight * KL_ic +
        kl_co_weight * KL_co)). NLL: the observed entries' sum over the whole batch's ``observed_total``
        (gradient only where ``grad_mask`` lets it, see ``reconstruction_loss``); KL terms summed over
        latent dimensions (and time) over the batch's ``batch`` trials; L2 the recurrent penalty plus the
        observation model's own, carried by one shard only."""
        output = self.model(inputs["encoder_input"], sample_posteriors=True, encoder_visible=inputs["encoder_visible"],
                            noise=noise, ext_input=inputs.get("ext_input"), session=inputs.get("session"))
        elementwise = self.model.observation.elementwise_nll(output.readout, inputs["target"])
        nll = reconstruction_loss(elementwise, inputs["observed"], inputs["grad_mask"], observed_total, dim=(1, 2, 3))
        kl_ic = self.model.kl_ic(output).sum(1) / batch
        kl_co = self.model.kl_co(output).sum(1) / batch
        if carries_penalties:
            l2 = self.model.recurrent_l2(hyper["l2_gen_scale"], hyper["l2_con_scale"]) \
                + self.model.observation_penalty(hyper["scale_prior"], hyper["scale_weight"])
        else:
            l2 = torch.zeros_like(nll)
        kl = hyper["kl_ic_weight"] * kl_ic + hyper["kl_co_weight"] * kl_co
        total = hyper["loss_scale"] * (nll + inputs["l2_ramp"] * l2 + inputs["kl_ramp"] * kl)
        return torch.stack([total, nll, kl_ic, kl_co, l2], dim=1)

    @staticmethod
    def _clip_gradients(gradients: list[torch.Tensor], max_grad_norm: torch.Tensor) -> torch.Tensor:
        """``clip_grad_norm_`` per worker, in place: each worker's gradient (its slice of every parameter)
        scaled by ``min(max_grad_norm / (norm + 1e-6), 1)``. Returns the norms ``(W,)``."""
        per_parameter = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in gradients], dim=1)
        norms = torch.linalg.vector_norm(per_parameter, dim=1)
        coefficient = (max_grad_norm / (norms + CLIP_NORM_EPS)).clamp(max=1.0)
        for gradient in gradients:
            gradient.mul_(coefficient.view(-1, *([1] * (gradient.dim() - 1))))
        return norms

    @torch.no_grad()
    def _adam_step(self, gradients: list[torch.Tensor], taken: torch.Tensor, steps_before: torch.Tensor,
                   learning_rate: torch.Tensor, epsilon: torch.Tensor) -> None:
        """torch's Adam (no weight decay) on the stacked tensors with per-worker learning rate,
        epsilon and step count; a worker whose step is not ``taken`` keeps its weights and moments.
        ``steps_before`` and ``learning_rate`` ``(W,)`` float64: the bias corrections are computed in
        float64 and rounded once to the weights' dtype, as torch's Python-float scalars are."""
        beta1, beta2 = ADAM_BETAS
        steps = (steps_before + taken.to(torch.float64)).clamp_min(1.0)
        dtype = self.parameters[0].dtype
        # A skipped worker's step size is 0 and its gradient is zeroed (it may not be finite): its moments
        # and weights stay as they were. Everything is updated in place (no full-size temporaries but
        # one per parameter), the same arithmetic as torch's Adam.
        step_size = (-(learning_rate / (1 - beta1 ** steps))).to(dtype) * taken
        correction2_sqrt = ((1 - beta2 ** steps) ** 0.5).to(dtype)
        first_decay = (1 - beta1) * taken.to(dtype)
        # (full_like, not a tensor made from a Python number: no host-to-device copy inside a recorded graph)
        second_decay = torch.where(taken, torch.full_like(first_decay, beta2), torch.ones_like(first_decay))
        for parameter, gradient, exp_avg, exp_avg_sq in zip(self.parameters, gradients, self.exp_avg, self.exp_avg_sq):
            shape = (-1, *([1] * (parameter.dim() - 1)))
            gradient.masked_fill_(~taken.view(shape), 0.0)
            exp_avg.lerp_(gradient, first_decay.view(shape))
            exp_avg_sq.mul_(second_decay.view(shape)).addcmul_(gradient, gradient, value=1 - beta2)
            update = exp_avg_sq.sqrt().div_(correction2_sqrt.view(shape)).add_(epsilon.view(shape))
            torch.div(exp_avg, update, out=update)
            parameter.add_(update.mul_(step_size.view(shape)))

    def validation_nll(self, data: torch.Tensor | None = None, ext_input: torch.Tensor | None = None,
                       session: torch.Tensor | None = None) -> list[float]:
        """Each worker's mean NLL over the observed entries (posterior means, no dropout, no CD): every
        observed entry counts, those of held-out neurons and forward-prediction bins included (the
        encoders never see them; the readout predicts them). It is what early stopping, learning-rate
        decay and PBT fitness read. Default: the validation trials, their measured inputs and sessions,
        pooled with the training trials' sample-validation entries when there are any (the model reads
        the training trials, which lack them, and is scored on them); other ``data`` ``(trials, T, N)``
        comes with its own ``ext_input`` and ``session``."""
        parts = [(data, None, ext_input, session)]
        if data is None:
            parts = [(self.valid_data, None, self.valid_ext_input, self.valid_session)]
            if self.sample_validation_data is not None:
                parts.append((self.train_data, self.sample_validation_data, self.train_ext_input, self.train_session))
        totals = torch.zeros(self.num_workers, dtype=torch.float64)
        count = 0.0
        for inputs_data, targets, part_ext_input, part_session in parts:
            part_totals, part_count = self._validation_sum(inputs_data, targets, part_ext_input, part_session)
            totals += part_totals
            count += part_count
        return (totals / max(count, 1.0)).tolist()

    def _validation_sum(self, data: torch.Tensor, targets: torch.Tensor | None, ext_input: torch.Tensor | None,
                        session: torch.Tensor | None) -> tuple[torch.Tensor, float]:
        """Each worker's NLL summed over the scored entries ``(W,)`` and their count: the encoders read
        ``data`` ``(trials, T, N)``; the scored entries are its observed ones, or those of ``targets`` (same
        shape, NaN = not scored) when given."""
        workers = self.num_workers
        totals = torch.zeros(workers, dtype=torch.float64)
        count = 0.0
        size = self.members[0].config.valid_batch_size
        for start in range(0, data.shape[0], size):
            rows = slice(start, start + size)
            masks = inference_masks(data[rows])
            if targets is not None:
                scored = inference_masks(targets[rows])
                masks.target, masks.observed = scored.target, scored.observed

            def every_worker(tensor):
                return tensor.unsqueeze(0).expand(workers, *tensor.shape)

            inputs = {"encoder_input": every_worker(masks.encoder_input),
                      "encoder_visible": every_worker(masks.encoder_visible),
                      "target": every_worker(masks.target), "observed": every_worker(masks.observed)}
            if ext_input is not None:
                inputs["ext_input"] = every_worker(ext_input[rows])
            if session is not None:
                inputs["session"] = every_worker(session[rows])
            totals += self.captured_validation(inputs)["nll_sum"].to(torch.float64).cpu()
            count += float(masks.observed.sum())
        return totals, count

    @torch.no_grad()
    def _validation_sums(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One validation batch's NLL summed over its observed entries, per worker (``nll_sum`` ``(W,)``);
        a function of ``inputs`` alone (replayable as a CUDA graph)."""
        output = self.model(inputs["encoder_input"], sample_posteriors=False, encoder_visible=inputs["encoder_visible"],
                            ext_input=inputs.get("ext_input"), session=inputs.get("session"))
        nll = self.model.observation.elementwise_nll(output.readout, inputs["target"])
        return {"nll_sum": masked_nll_sum(nll, inputs["observed"], dim=(1, 2, 3))}

    def step_epoch(self) -> list[dict[str, float]]:
        """Train every worker one epoch, validate, update each worker's schedules and best weights (as
        ``LfadsTrainer.step_epoch``); returns each worker's log row. A row's ``seconds`` is the
        population's epoch time divided by the number of workers."""
        started = time.perf_counter()
        rows = [{"epoch": member.epoch} for member in self.members]
        for row, terms in zip(rows, self.train_epoch()):
            row.update(terms)
        valid = self.validation_nll()
        seconds = (time.perf_counter() - started) / self.num_workers
        for k, (member, row, valid_nll) in enumerate(zip(self.members, rows, valid)):
            member.end_epoch(row, valid_nll, lambda k=k: self.model.worker_state_dict(k), seconds)
        return rows

    def release_graphs(self) -> None:
        """Drop the CUDA graphs and the GPU memory they keep (the next steps record new ones). The
        graphs refer back to this trainer, so without this their memory waits for Python's cycle
        collector once the trainer is dropped."""
        self.captured_step.reset()
        self.captured_validation.reset()

    def restore_best(self) -> None:
        """Every worker's ``LfadsTrainer.restore_best``: its best weights after the ramps (or the last ones)."""
        for member in self.members:
            member.restore_best()


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack``, without copying a single worker's tensor (a view with the worker axis)."""
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)


def _same_data(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    """Both absent, or equal shapes and values, NaN (unobserved) matching NaN."""
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(torch.equal(torch.isnan(a), torch.isnan(b))) \
        and bool(torch.equal(torch.nan_to_num(a), torch.nan_to_num(b)))
