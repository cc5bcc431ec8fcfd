"""Training-time masks: SBTT (unobserved entries) and coordinated dropout (CD).

One place decides, for each entry of a batch ``(B, T, N)``, what the encoder sees and which
entries of the reconstruction may pass gradient:

* SBTT: NaN marks an unobserved entry. It is zero-filled at the encoder input and excluded from
  the loss and its gradient.
* CD: each step keeps an entry at the input with probability ``keep_ratio`` (scaled by
  1/keep_ratio); the reconstruction gradient flows only through entries that were dropped, so the
  model cannot learn to copy a count from input to output ("identity overfitting").
Both compose: the gradient mask is observed AND dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neurodyn.observation.base import masked_nll_sum


@dataclass
class BatchMasks:
    """Encoder input and masks for one batch, all ``(B, T, N)``.

    ``target`` is the data with unobserved entries zero-filled; ``observed`` is 1 where the entry
    was sampled; ``grad_mask`` is 1 where the reconstruction may pass gradient.
    """

    encoder_input: torch.Tensor
    target: torch.Tensor
    observed: torch.Tensor
    grad_mask: torch.Tensor


def coordinated_dropout_mask(shape: torch.Size | tuple[int, ...], keep_ratio: float, device=None,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """Boolean mask, True where an entry is KEPT at the encoder input (probability ``keep_ratio``)."""
    return torch.rand(shape, device=device, generator=generator) < keep_ratio


def training_masks(data: torch.Tensor, keep_ratio: float, cd_pass_fraction: float = 0.0,
                   generator: torch.Generator | None = None, temporal_shift_std: float = 0.0) -> BatchMasks:
    """Masks for a training step on ``data`` ``(B, T, N)`` (NaN = unobserved).

    ``temporal_shift_std`` > 0 (EMG augmentation) is not implemented yet and raises.
    """
    if temporal_shift_std > 0:
        raise NotImplementedError("temporal shift augmentation is not implemented yet")
    observed = ~torch.isnan(data)
    target = torch.where(observed, data, torch.zeros_like(data))
    if keep_ratio >= 1.0:
        return BatchMasks(target, target, observed.to(data.dtype), observed.to(data.dtype))
    kept = coordinated_dropout_mask(data.shape, keep_ratio, data.device, generator)
    passes = ~kept
    if cd_pass_fraction > 0.0:
        passes = passes | (kept & coordinated_dropout_mask(data.shape, cd_pass_fraction, data.device, generator))
    encoder_input = target * kept / keep_ratio
    return BatchMasks(encoder_input, target, observed.to(data.dtype), (observed & passes).to(data.dtype))


def inference_masks(data: torch.Tensor) -> BatchMasks:
    """Masks for validation and inference: no CD; every observed entry is scored."""
    return training_masks(data, keep_ratio=1.0)


def reconstruction_loss(elementwise_nll: torch.Tensor, masks: BatchMasks) -> torch.Tensor:
    """Mean NLL over the observed entries, with gradient only through ``masks.grad_mask``.

    The value covers every observed entry (so it is comparable with the validation NLL); the
    detached entries contribute to the value but not to the gradient.
    """
    nll = torch.where(masks.grad_mask > 0, elementwise_nll, elementwise_nll.detach())
    return masked_nll_sum(nll, masks.observed) / masks.observed.sum().clamp_min(1.0)
