"""W LFADS models of one architecture as a single module with a leading worker dimension.

PBT trains many workers that share an architecture and differ only in hyperparameters. Held as
one module, every parameter of ``LFADS`` gets a leading worker axis ``W`` (``(W, *shape)``) and
every activation one too: a batch is ``(W, B, T, N)`` (each worker its own trials and masks). The
mathematics is ``StackedLfads``'s (``lfads.stacked``), the same code one ``LFADS`` model runs: the
recurrent loops advance all workers in one batched matrix product per time step, and nothing loops
over workers in the compute.

The population is derived from its single models and holds the only copy of their weights: stacking
them moves each model's parameters and buffers into the population's stacked tensors and leaves the
model a view of its slice. Training the population trains the models; loading a state into a model
(``load_state_dict`` copies in place) writes its worker; the models' dropout rates and observation
settings are each worker's. A single model trained alone is a population of one. This module adds
what only a population has: the stacking, the per-worker settings as lists, each worker's random
numbers (drawn from each worker's own generator in the single model's order, so that worker k sees
exactly the numbers its single model would) and the per-worker penalties.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from neurodyn.errors import NeurodynError
from neurodyn.lfads.model import LFADS
from neurodyn.lfads.recurrent import MAX_BLOCK_DIAGONAL_UNITS
from neurodyn.lfads.stacked import ARCHITECTURE_SETTINGS, ForwardNoise, LfadsOutput, StackedLfads


class PopulationLFADS(StackedLfads):
    """``len(models)`` LFADS models of one architecture, stacked along a leading worker axis; each model's
    weights become views of its worker's slice (see the module docstring). Build with ``from_models``.
    A change of a model's dtype or device gives it new tensors and ends the sharing: convert first."""

    def __init__(self, models: list[LFADS]):
        super().__init__()
        template = models[0]
        self.models = list(models)  # a plain list: the models' weights are this module's, not registered twice
        for name in ARCHITECTURE_SETTINGS:
            setattr(self, name, getattr(template, name))
        self.parameter_names = [name for name, _ in template.named_parameters()]
        self.weights = nn.ParameterDict()
        for name in self.parameter_names:
            self.weights[_key(name)] = nn.Parameter(torch.stack([m.get_parameter(name).detach() for m in models]))
            for model, view in zip(models, self.weights[_key(name)].detach()):
                _rebind(model, name, nn.Parameter(view))
        for name, _ in template.named_buffers():
            self.register_buffer(_key(name), torch.stack([m.get_buffer(name) for m in models]))
            for model, view in zip(models, getattr(self, _key(name))):
                _rebind(model, name, view)
        # The observation model computes with every worker's own scales (stacked like the other weights).
        self.observation = copy.deepcopy(template.observation)
        for name, _ in template.observation.named_parameters():
            _rebind(self.observation, name, self.weights[_key(f"observation.{name}")])
        self._isolated_workers = torch.zeros(len(models), dtype=torch.bool)

    @classmethod
    def from_models(cls, models: list[LFADS]) -> "PopulationLFADS":
        """Stack ``models`` (same architecture, same observation settings) into one population."""
        if not models:
            raise NeurodynError("a population needs at least one model")
        if len({id(model) for model in models}) < len(models):
            raise NeurodynError("a model may be in a population once (its weights become its worker's slice)")
        reference = models[0].state_dict()
        for k, model in enumerate(models):
            shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
            expected = {key: tuple(value.shape) for key, value in reference.items()}
            if shapes != expected or model.observation.name != models[0].observation.name \
                    or getattr(model.observation, "s_min", None) != getattr(models[0].observation, "s_min", None) \
                    or any(getattr(model, name) != getattr(models[0], name) for name in ARCHITECTURE_SETTINGS):
                raise NeurodynError(f"model {k} of the population has another architecture, prior or observation setting "
                                    "than model 0; every worker of a population must share them")
        return cls(models)

    @property
    def num_workers(self) -> int:
        return len(self.models)

    @property
    def dropout_p(self) -> list[float]:
        """Each worker's dropout rate (its model's)."""
        return [float(model.dropout_p) for model in self.models]

    def _scale_settings(self, attribute: str) -> list[float]:
        """Each worker's observation-scale ``prior`` or ``weight`` (0 for an observation model without scales)."""
        return [getattr(model.observation.gamma_scales, attribute) if getattr(model.observation, "gamma_scales", None)
                else 0.0 for model in self.models]

    @property
    def scale_prior(self) -> list[float]:
        return self._scale_settings("prior")

    @property
    def scale_weight(self) -> list[float]:
        return self._scale_settings("weight")

    def _stacked(self, name: str) -> torch.Tensor:
        key = _key(name)
        return self.weights[key] if key in self.weights else getattr(self, key)

    def worker_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Worker ``k`` as an ``LFADS`` state dict (copies, not views)."""
        return {name: value.detach().clone() for name, value in self.models[k].state_dict().items()}

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

    # -- objective terms ------------------------------------------------------------------------------
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


def _rebind(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """Make ``value`` the parameter or buffer ``name`` (a dotted path) of ``module``."""
    owner, _, attribute = name.rpartition(".")
    target = module.get_submodule(owner)
    if attribute in target._buffers:
        target._buffers[attribute] = value
    else:
        setattr(target, attribute, value)


def _key(name: str) -> str:
    """A parameter name usable as a module attribute (``ic_encoder.gru.weight_ih_l0`` -> ``ic_encoder__gru__...``)."""
    return name.replace(".", "__")
