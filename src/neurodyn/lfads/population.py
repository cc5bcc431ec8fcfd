"""W LFADS models of one architecture as a single module with a leading worker dimension.

PBT trains many workers that share an architecture and differ only in hyperparameters. Held as
one module, every parameter of ``LFADS`` gets a leading worker axis ``W`` (``(W, *shape)``) and
every activation one too: a batch is ``(W, B, T, N)`` (each worker its own trials and masks). The
mathematics is ``StackedLfads``'s (``lfads.stacked``), the same code one ``LFADS`` model runs: the
recurrent loops advance all workers in one batched matrix product per time step, and nothing loops
over workers in the compute. This module adds what only a population has: stacking models into it
and reading them back, each worker's dropout rate and observation-scale settings, its random
numbers (drawn per worker from each worker's own generator, in the single model's order, so that
worker k sees exactly the numbers its single model would) and the per-worker penalties.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from neurodyn.errors import NeurodynError
from neurodyn.lfads.model import LFADS
from neurodyn.lfads.recurrent import MAX_BLOCK_DIAGONAL_UNITS
from neurodyn.lfads.stacked import (ARCHITECTURE_SETTINGS, ForwardNoise, LfadsOutput, StackedLfads,
                                    hide_from_encoders)


class PopulationLFADS(StackedLfads):
    """``len(models)`` LFADS models of one architecture, stacked along a leading worker axis.

    Build with ``from_models``; read one worker back with ``worker_state_dict(k)`` (a state
    ``LFADS.load_state_dict`` accepts) and write one with ``load_worker_state(k, state)``.
    Per-worker settings that are not weights (dropout rate, the observation scales' prior and
    penalty weight) are set with ``set_worker_settings``.
    """

    def __init__(self, template: LFADS, num_workers: int, share_weights: bool = False):
        super().__init__()
        if share_weights and num_workers != 1:
            raise NeurodynError("only a population of one can share its model's weights")
        self.num_workers = num_workers
        for name in ARCHITECTURE_SETTINGS:
            setattr(self, name, getattr(template, name))
        self.state_keys = list(template.state_dict().keys())
        self.parameter_names = [name for name, _ in template.named_parameters()]
        # Shared: worker 0's weights are views of the template's (an update of either is an update of both).
        self.weights = nn.ParameterDict({
            _key(name): nn.Parameter(value.detach().unsqueeze(0) if share_weights
                                     else value.detach().unsqueeze(0).repeat(num_workers, *([1] * value.dim())))
            for name, value in template.named_parameters()})
        for name, value in template.named_buffers():
            self.register_buffer(_key(name), value.detach().unsqueeze(0).repeat(num_workers, *([1] * value.dim())))
        # The observation model computes with every worker's own scales (stacked like the other weights).
        self.observation = copy.deepcopy(template.observation)
        for name, _ in template.observation.named_parameters():
            owner, attribute = self.observation.get_submodule(name.rpartition(".")[0]), name.rpartition(".")[2]
            setattr(owner, attribute, self.weights[_key(f"observation.{name}")])
        self.dropout_p = [float(template.dropout_p)] * num_workers
        self._isolated_workers = torch.zeros(num_workers, dtype=torch.bool)
        scales = getattr(template.observation, "gamma_scales", None)
        self.scale_prior = [scales.prior if scales else 0.0] * num_workers
        self.scale_weight = [scales.weight if scales else 0.0] * num_workers

    # -- building and reading workers --------------------------------------------------------------
    @classmethod
    def from_models(cls, models: list[LFADS]) -> "PopulationLFADS":
        """Stack ``models`` (same architecture, same observation settings) into one population."""
        if not models:
            raise NeurodynError("a population needs at least one model")
        population = cls(models[0], len(models)).to(next(models[0].parameters()).device)
        reference = models[0].state_dict()
        for k, model in enumerate(models):
            state = model.state_dict()
            shapes = {key: tuple(value.shape) for key, value in state.items()}
            expected = {key: tuple(value.shape) for key, value in reference.items()}
            if shapes != expected or model.observation.name != population.observation.name \
                    or getattr(model.observation, "s_min", None) != getattr(population.observation, "s_min", None) \
                    or any(getattr(model, name) != getattr(population, name) for name in ARCHITECTURE_SETTINGS):
                raise NeurodynError(f"model {k} of the population has another architecture, prior or observation setting "
                                    "than model 0; every worker of a population must share them")
            population.load_worker_state(k, state)
            population.set_worker_settings(k, model)
        return population

    @classmethod
    def sharing(cls, model: LFADS) -> "PopulationLFADS":
        """A population of one whose weights are ``model``'s own (views, not copies): training it trains
        ``model``. A change of the model's dtype or device gives it new tensors and ends the sharing."""
        population = cls(model, 1, share_weights=True)
        population.set_worker_settings(0, model)
        return population

    def set_worker_settings(self, k: int, model_or_settings) -> None:
        """Take worker ``k``'s dropout rate and observation-scale prior/weight from an ``LFADS`` model."""
        self.dropout_p[k] = float(model_or_settings.dropout_p)
        scales = getattr(model_or_settings.observation, "gamma_scales", None)
        if scales is not None:
            self.scale_prior[k], self.scale_weight[k] = scales.prior, scales.weight

    def _stacked(self, name: str) -> torch.Tensor:
        key = _key(name)
        return self.weights[key] if key in self.weights else getattr(self, key)

    @torch.no_grad()
    def worker_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Worker ``k`` as an ``LFADS`` state dict (copies, not views)."""
        return {name: self._stacked(name)[k].detach().clone() for name in self.state_keys}

    @torch.no_grad()
    def load_worker_state(self, k: int, state: dict[str, torch.Tensor]) -> None:
        """Write an ``LFADS`` state dict into worker ``k``'s slice."""
        missing = sorted(set(self.state_keys) - set(state))
        if missing:
            raise NeurodynError(f"the state for worker {k} lacks {missing[:3]}; expected an LFADS state dict "
                                "of the population's architecture")
        for name in self.state_keys:
            target = self._stacked(name)
            if tuple(state[name].shape) != tuple(target.shape[1:]):
                raise NeurodynError(f"the state for worker {k} has '{name}' of shape {tuple(state[name].shape)}; "
                                    f"expected {tuple(target.shape[1:])}")
            target[k].copy_(state[name])

    @torch.no_grad()
    def copy_worker(self, copier: int, source: int) -> None:
        """Worker ``copier`` takes worker ``source``'s weights and settings."""
        for name in self.state_keys:
            target = self._stacked(name)
            target[copier].copy_(target[source])
        self.dropout_p[copier] = self.dropout_p[source]
        self.scale_prior[copier], self.scale_weight[copier] = self.scale_prior[source], self.scale_weight[source]

    def stacked_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """``(LFADS parameter name, stacked parameter)`` in ``LFADS.parameters()`` order."""
        return [(name, self.weights[_key(name)]) for name in self.parameter_names]

    # -- random numbers ---------------------------------------------------------------------------
    def draw_forward_noise(self, rngs: list[torch.Generator], batch: int, num_steps: int, sample: bool,
                           like: torch.Tensor) -> ForwardNoise:
        """Each worker's random numbers for one training pass (``StackedLfads.draw_noise`` with each
        worker's dropout rate), drawn from ``rngs[k]`` in the order ``LFADS.forward`` draws them."""
        return self.draw_noise(rngs, self.dropout_p, batch, num_steps, sample, like)

    def forward(self, encoder_input: torch.Tensor, sample_posteriors: bool, encoder_visible: torch.Tensor | None = None,
                noise: ForwardNoise | None = None, ext_input: torch.Tensor | None = None,
                session: torch.Tensor | None = None) -> LfadsOutput:
        """All workers' forward passes (``StackedLfads.stacked_forward``). encoder_input ``(W, B, T, N)``
        zero-filled; encoder_visible likewise (for ``mask_as_input``); ``noise`` from ``draw_forward_noise``
        for a training pass (None: no dropout; then ``sample_posteriors`` must be False); ext_input ``(W, B,
        T, E)``; session ``(W, B)`` int, each trial's session (a stitched population only). Returns an
        ``LfadsOutput`` whose tensors have the worker axis first (readout ``(W, B, T, N, P)``)."""
        if encoder_input.shape[0] != self.num_workers:
            raise NeurodynError(f"encoder_input has {encoder_input.shape[0]} workers; the population has "
                                f"{self.num_workers}")
        return self.stacked_forward(encoder_input, sample_posteriors, encoder_visible, noise, ext_input,
                                    session if self.is_stitched else None)

    def block_diagonal_bytes_per_worker(self) -> int:
        """Bytes per worker that the GPU backend's block-diagonal encoder weights take beyond what one
        worker alone shows: a group of g workers builds ``3 g H x g (D + H)`` numbers per direction,
        held about three times (the matrix, cuDNN's packed copy, its gradient), so ``g`` times one
        worker's share; g is the largest group (``MAX_BLOCK_DIAGONAL_UNITS // H``)."""
        total = 0
        for prefix in ("ic_encoder", "ci_encoder") if self.co_dim > 0 else ("ic_encoder",):
            _, gate_rows, inputs = self._stacked(f"{prefix}.gru.weight_ih_l0").shape
            hidden = gate_rows // 3
            group = max(1, MAX_BLOCK_DIAGONAL_UNITS // hidden)
            total += 2 * 3 * gate_rows * (inputs + hidden) * (group - 1)
        return total * self._stacked("readout.weight").element_size()

    def isolated_workers(self) -> torch.Tensor:
        """``(W,)`` bool: the workers whose non-finite numbers were held back from the others in the last
        forward pass run in Python and its backward pass (see ``bidirectional_gru_block_diagonal``; only
        the library backend joins workers in one product). Their gradients are not to be used. A step
        replayed from a CUDA graph updates the tensor of the pass it recorded: read it inside the step."""
        return self._isolated_workers

    def encoder_mask(self, num_steps: int) -> torch.Tensor:
        """``(W, num_steps, N)``: each worker's ``LFADS.encoder_mask``."""
        return hide_from_encoders(self.encoder_input_mask, num_steps, self.forward_bins)

    # -- objective terms ------------------------------------------------------------------------------
    def kl_co(self, output: LfadsOutput) -> torch.Tensor:
        """One-sample KL of the inferred inputs to each worker's AR(1) prior, per trial ``(W, B)``."""
        return self.stacked_kl_co(output)

    def recurrent_l2(self, l2_gen_scale: torch.Tensor, l2_con_scale: torch.Tensor) -> torch.Tensor:
        """``LFADS.recurrent_l2`` per worker ``(W,)`` for per-worker scales ``(W,)``."""
        return self.stacked_recurrent_l2(l2_gen_scale, l2_con_scale)

    def elementwise_nll(self, readout: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Each worker's observation NLL per entry: readout ``(W, B, T, N, P)``, target ``(W, B, T, N)``."""
        return self.observation.elementwise_nll(readout, target)

    def observation_penalty(self, prior: torch.Tensor | None = None, weight: torch.Tensor | None = None
                            ) -> torch.Tensor:
        """The observation model's penalty per worker ``(W,)`` (zeros for Poisson). ``prior`` and
        ``weight`` ``(W,)``: the scales' prior and penalty weight, by default each worker's settings
        (a caller replaying a recorded step hands them in as tensors)."""
        scales = getattr(self.observation, "gamma_scales", None)
        if scales is None:
            return self._stacked("readout.bias").new_zeros(self.num_workers)
        prior = scales.scales.new_tensor(self.scale_prior) if prior is None else prior
        weight = scales.scales.new_tensor(self.scale_weight) if weight is None else weight
        return scales.penalty(prior, weight)


def _key(name: str) -> str:
    """A parameter name usable as a module attribute (``ic_encoder.gru.weight_ih_l0`` -> ``ic_encoder__gru__...``)."""
    return name.replace(".", "__")
