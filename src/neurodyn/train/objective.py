"""The LFADS training objective, assembled from the model's terms.

loss = loss_scale * ( NLL + l2_ramp * L2 + kl_ramp * (kl_ic_weight * KL_ic + kl_co_weight * KL_co) )

NLL is the mean over observed entries (see ``lfads.augmentations.reconstruction_loss``); the KL
terms are summed over latent dimensions (and time) and averaged over trials; L2 is the recurrent
penalty plus the observation model's own penalty.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neurodyn.lfads.augmentations import BatchMasks, reconstruction_loss
from neurodyn.lfads.model import LFADS, LfadsOutput


@dataclass
class LossTerms:
    total: torch.Tensor
    nll: torch.Tensor
    kl_ic: torch.Tensor
    kl_co: torch.Tensor
    l2: torch.Tensor


@dataclass
class RegularisationWeights:
    """The searchable weights of the objective (a view of the config)."""

    kl_ic_weight: float
    kl_co_weight: float
    l2_gen_scale: float
    l2_con_scale: float
    loss_scale: float


@dataclass
class BatchShare:
    """Which part of a training batch a shard is: the whole batch's observed-entry count and number
    of trials (the loss normalisers) and whether this shard carries the weight penalties (exactly one
    shard does). The shards' losses then add up to the loss of the whole batch, value and gradient."""

    observed: torch.Tensor | float
    trials: int
    carries_penalties: bool = True

    @classmethod
    def whole(cls, masks: BatchMasks) -> "BatchShare":
        return cls(masks.observed_count(), masks.observed.shape[0])


def lfads_loss(model: LFADS, output: LfadsOutput, masks: BatchMasks, weights: RegularisationWeights,
               kl_ramp: float, l2_ramp: float, share: BatchShare | None = None) -> LossTerms:
    """All terms of the objective for one batch, or a shard's contribution to them (``share``)."""
    share = BatchShare.whole(masks) if share is None else share
    nll = reconstruction_loss(model.observation.elementwise_nll(output.readout, masks.target), masks, share.observed)
    kl_ic = model.kl_ic(output).sum() / share.trials
    kl_co = model.kl_co(output).sum() / share.trials
    if share.carries_penalties:
        l2 = model.recurrent_l2(weights.l2_gen_scale, weights.l2_con_scale) + model.observation.penalty()
    else:
        l2 = nll.new_zeros(())
    kl = weights.kl_ic_weight * kl_ic + weights.kl_co_weight * kl_co
    total = weights.loss_scale * (nll + l2_ramp * l2 + kl_ramp * kl)
    return LossTerms(total, nll, kl_ic, kl_co, l2)
