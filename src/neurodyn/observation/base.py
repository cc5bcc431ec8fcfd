"""The one small interface every observation model implements.

The LFADS readout produces ``params_per_neuron`` unconstrained numbers per neuron and time
bin, laid out as ``(..., num_neurons, params_per_neuron)``. An observation model turns them
into a per-entry negative log-likelihood, an expected value (the inferred rate), named
parameters for the output files, and an optional penalty on its own trainable parameters.
"""

from __future__ import annotations

import torch
from torch import nn


class ObservationModel(nn.Module):
    """Base class; subclasses set ``name`` and ``params_per_neuron`` and implement the methods."""

    name: str = ""
    params_per_neuron: int = 1
    # What the expected value (the outputs' ``rates``) measures, for the files that name units (NWB).
    value_unit: str = "expected count per bin"

    def __init__(self, num_neurons: int):
        super().__init__()
        self.num_neurons = num_neurons

    @classmethod
    def options_from_config(cls, config, train_data) -> dict:
        """Constructor keyword options resolved from the config and the training data
        ``(trials, T, N)`` NumPy, NaN = unobserved (e.g. ZIG's ``s_min: auto``). Stored in the
        checkpoint so a reloaded model is built identically."""
        return {}

    def set_hyperparameters(self, config) -> None:
        """Take changed searchable settings (e.g. ``gamma_prior``) from ``config`` mid-training."""

    def elementwise_nll(self, readout: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of each entry.

        readout: ``(..., N, P)`` unconstrained readout; target: ``(..., N)`` with no NaN
        (unobserved entries must be zero-filled and masked by the caller). Returns ``(..., N)``.
        """
        raise NotImplementedError

    def elementwise_nll_up_to_constant(self, readout: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``elementwise_nll`` less any term that depends on the target alone: the same gradient with
        respect to the readout, for optimisations that never read the loss's value (the per-trial
        posterior refinement). Shapes as in ``elementwise_nll``; by default the full NLL."""
        return self.elementwise_nll(readout, target)

    def pairwise_log_likelihood(self, readout: torch.Tensor, target: torch.Tensor, observed: torch.Tensor,
                                max_entries: int = 2 ** 24) -> torch.Tensor:
        """Log-likelihood of every trial's observed entries under every candidate readout.

        readout ``(M, T, N, P)``; target and observed ``(B, T, N)``. Returns ``(B, M)``: entry (b, m)
        is the summed log-likelihood of trial b's observed entries given readout m. This default
        evaluates ``elementwise_nll`` on blocks of pairs (at most ``max_entries`` entries each);
        models whose likelihood is linear in statistics of the data override it with matrix products.
        """
        candidates = readout.shape[0]
        per_block = max(1, max_entries // max(1, candidates * target[0].numel()))
        blocks = []
        for first in range(0, target.shape[0], per_block):
            block_target = target[first:first + per_block].unsqueeze(1).expand(-1, candidates, -1, -1)
            nll = self.elementwise_nll(readout.unsqueeze(0).expand(block_target.shape[0], *readout.shape),
                                       block_target)
            blocks.append(-masked_nll_sum(nll, observed[first:first + per_block].unsqueeze(1), dim=(-2, -1)))
        return torch.cat(blocks)

    def mean(self, readout: torch.Tensor) -> torch.Tensor:
        """Expected value of each entry ``(..., N)``: the inferred rate (counts or event size per bin)."""
        raise NotImplementedError

    def named_params(self, readout: torch.Tensor) -> dict[str, torch.Tensor]:
        """Constrained distribution parameters, each ``(..., N)``, written to the output files."""
        return {}

    def penalty(self) -> torch.Tensor:
        """Regulariser on the model's own trainable parameters, added to the L2 cost."""
        return torch.zeros(())

    def initial_readout_bias(self, mean_observed: torch.Tensor) -> torch.Tensor | None:
        """Readout bias ``(N, P)`` that makes each neuron's expected value its observed mean ``(N,)``; None = keep."""
        return None

    def readout_weight_for_activity(self, activity_map, mean):
        """Readout weights ``(N, P, k)`` (NumPy) that move each neuron's expected value by ``activity_map``
        ``(k, N)`` per unit of the first k factors, around its mean activity ``mean`` ``(N,)``, to first
        order; None = keep the default initialisation (used to initialise stitched models)."""
        return None

    def validate_targets(self, data, source: str) -> None:
        """Raise a NeurodynError if observed entries of ``data`` (NumPy, NaN = unobserved) are invalid."""


def masked_nll_sum(elementwise_nll: torch.Tensor, loss_mask: torch.Tensor,
                   dim: tuple[int, ...] | None = None) -> torch.Tensor:
    """Sum of the NLL over the entries where ``loss_mask`` is 1 (over ``dim`` only, when given).

    ``torch.where`` (not multiplication) keeps a non-finite NLL value at a masked entry out of
    the sum: NaN * 0 is NaN, so multiplying by the mask would not.
    """
    masked = torch.where(loss_mask > 0, elementwise_nll * loss_mask, torch.zeros_like(elementwise_nll))
    return masked.sum() if dim is None else masked.sum(dim)
