"""Training-time masks: SBTT (unobserved entries) and coordinated dropout (CD).

One place decides, for each entry of a batch ``(B, T, N)``, what the encoder sees and which
entries of the reconstruction may pass gradient:

* SBTT: NaN marks an unobserved entry. It is zero-filled at the encoder input and excluded from
  the loss and its gradient.
* CD: each step keeps an entry at the input with probability ``keep_ratio`` (scaled by
  1/keep_ratio); the reconstruction gradient flows only through entries that were dropped, so the
  model cannot learn to copy a count from input to output ("identity overfitting").
* Temporal shift (EMG augmentation against high-magnitude artifacts): each channel of each trial
  is shifted in time by ``round(N(0, temporal_shift_std))`` bins, clamped at the trial's ends
  (edge values repeated), once for the encoder input and independently for the reconstruction
  target. Training only.
* Spike jitter (against fitting exact spike times): each spike of an observed entry moves by an
  offset drawn uniformly from ``-spike_jitter_bins .. spike_jitter_bins`` bins, independently of the
  other spikes; a spike whose new bin lies outside the trial or is unobserved stays where it was, so
  every trial keeps its spike count. The jittered counts are both the encoder's input and the
  target. Training only, spike counts only.
Both masks compose: the gradient mask is observed AND dropped. With a shift, "observed" and CD
positions refer to the shifted arrays.

Held-out neurons (co-bps; 0 in the model's ``encoder_input_mask``) and the forward-prediction bins
(fp-bps; the last ``forward_bins`` of a trial) never reach the encoder, so no count of theirs can be
copied to the output: CD does not apply to them and every observed entry of theirs passes gradient
(the model's ``encoder_mask`` marks both). With a temporal shift, the hidden entries are taken out
of the encoder input before it is shifted, so no shift moves them into view.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neurodyn.observation.base import masked_nll_sum


@dataclass
class BatchMasks:
    """Encoder input and masks for one batch, all ``(B, T, N)``.

    ``target`` is the data with unobserved entries zero-filled; ``observed`` is 1 where the entry
    was sampled; ``grad_mask`` is 1 where the reconstruction may pass gradient; ``encoder_visible``
    is 1 where the encoder sees an observed value (sampled and not dropped by CD), so a model can
    tell an observed zero from a missing entry (``mask_as_input``).
    """

    encoder_input: torch.Tensor
    target: torch.Tensor
    observed: torch.Tensor
    grad_mask: torch.Tensor
    encoder_visible: torch.Tensor

    def observed_count(self) -> torch.Tensor:
        """Number of observed entries (at least 1): what the reconstruction NLL is averaged over."""
        return self.observed.sum().clamp_min(1.0)

    def reconstruction_loss(self, elementwise_nll: torch.Tensor) -> torch.Tensor:
        """``reconstruction_loss`` of ``elementwise_nll`` ``(B, T, N)`` over these masks: the mean over the
        observed entries, gradient only through ``grad_mask``."""
        return reconstruction_loss(elementwise_nll, self.observed, self.grad_mask, self.observed_count())

    def select(self, trials: slice) -> "BatchMasks":
        """The masks of a subset of the batch's trials (views, no copies)."""
        return BatchMasks(self.encoder_input[trials], self.target[trials], self.observed[trials],
                          self.grad_mask[trials], self.encoder_visible[trials])


def coordinated_dropout_mask(shape: torch.Size | tuple[int, ...], keep_ratio: float, device=None,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """Boolean mask, True where an entry is KEPT at the encoder input (probability ``keep_ratio``)."""
    return torch.rand(shape, device=device, generator=generator) < keep_ratio


def random_temporal_shifts(batch: int, channels: int, std: float, device=None,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """Integer shifts ``(batch, channels)`` in bins, each ``round(N(0, std))``; positive = later in time."""
    return torch.round(torch.randn((batch, channels), device=device, generator=generator) * std).long()


def shift_channels(data: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Shift each channel of each trial of ``data`` ``(B, T, N)`` by ``shifts`` ``(B, N)`` bins.

    ``out[b, t, n] = data[b, clamp(t - shifts[b, n], 0, T - 1), n]``: content moves later for a
    positive shift and the edge values are repeated; NaN (unobserved) entries move with the data.
    """
    num_steps = data.shape[1]
    time = torch.arange(num_steps, device=data.device).view(1, num_steps, 1)
    source = (time - shifts.unsqueeze(1)).clamp(0, num_steps - 1)
    return torch.gather(data, 1, source)


def jitter_spikes(counts: torch.Tensor, max_bins: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``counts`` ``(B, T, N)`` (NaN = unobserved) with each spike moved by a uniform offset in
    ``-max_bins .. max_bins`` bins, independently; a spike whose new bin is outside the trial or
    unobserved stays put. Unobserved entries stay NaN; every trial and neuron keeps its count.

    Each entry's ``c`` spikes are split over the ``2 max_bins + 1`` offsets as a uniform multinomial,
    drawn as a chain of binomials (offset k takes Binomial(left, 1 / offsets left)).
    """
    if max_bins <= 0:
        return counts
    observed = ~torch.isnan(counts)
    left = torch.where(observed, counts, torch.zeros_like(counts))
    num_steps = counts.shape[1]
    jittered = torch.zeros_like(left)
    offsets = list(range(-max_bins, max_bins + 1))
    for index, offset in enumerate(offsets):
        share = 1.0 / (len(offsets) - index)
        moving = left if share >= 1.0 else torch.binomial(left, torch.full_like(left, share), generator=generator)
        left = left - moving
        if offset == 0 or abs(offset) >= num_steps:  # no bin lies that far: these spikes stay
            jittered = jittered + moving
            continue
        # Spikes of bin t go to t + offset where that bin exists and is observed, else stay at t.
        destination_ok = torch.zeros_like(observed)
        if offset > 0:
            destination_ok[:, :num_steps - offset] = observed[:, offset:]
        else:
            destination_ok[:, -offset:] = observed[:, :num_steps + offset]
        moved = torch.where(destination_ok, moving, torch.zeros_like(moving))
        jittered = jittered + (moving - moved) + torch.roll(moved, offset, dims=1)
    return torch.where(observed, jittered, counts)


def training_masks(data: torch.Tensor, keep_ratio: float, cd_pass_fraction: float = 0.0,
                   generator: torch.Generator | None = None, temporal_shift_std: float = 0.0,
                   encoder_input_mask: torch.Tensor | None = None, spike_jitter_bins: int = 0) -> BatchMasks:
    """Masks for a training step on ``data`` ``(B, T, N)`` (NaN = unobserved).

    ``spike_jitter_bins`` > 0 first jitters the spikes (``jitter_spikes``); ``temporal_shift_std`` > 0
    shifts the encoder input's and the target's channels independently
    (see the module docstring) before SBTT and CD are applied to the shifted arrays.
    ``encoder_input_mask`` ``(N,)`` or ``(T, N)``: 0 where the encoder never sees the data (the model's
    ``encoder_mask(T)``: held-out neurons, forward-prediction bins), whose observed entries all pass
    gradient whatever CD drew (None: every entry is encoder input).
    """
    if spike_jitter_bins > 0:
        data = jitter_spikes(data, spike_jitter_bins, generator)
    input_data = target_data = data
    if temporal_shift_std > 0:
        batch, _, channels = data.shape
        input_shifts = random_temporal_shifts(batch, channels, temporal_shift_std, data.device, generator)
        target_shifts = random_temporal_shifts(batch, channels, temporal_shift_std, data.device, generator)
        hidden = data if encoder_input_mask is None else data.masked_fill(encoder_input_mask == 0, float("nan"))
        input_data = shift_channels(hidden, input_shifts)
        target_data = shift_channels(data, target_shifts)
    observed = ~torch.isnan(target_data)
    target = torch.where(observed, target_data, torch.zeros_like(target_data))
    input_observed = observed if input_data is target_data else ~torch.isnan(input_data)
    if input_data is target_data:
        encoder_input = target
    else:
        encoder_input = torch.where(input_observed, input_data, torch.zeros_like(input_data))
    if keep_ratio >= 1.0:
        return BatchMasks(encoder_input, target, observed.to(data.dtype), observed.to(data.dtype),
                          input_observed.to(data.dtype))
    kept = coordinated_dropout_mask(data.shape, keep_ratio, data.device, generator)
    passes = ~kept
    if cd_pass_fraction > 0.0:
        passes = passes | (kept & coordinated_dropout_mask(data.shape, cd_pass_fraction, data.device, generator))
    if encoder_input_mask is not None:
        passes = passes | (encoder_input_mask == 0)
    encoder_input = encoder_input * kept / keep_ratio
    return BatchMasks(encoder_input, target, observed.to(data.dtype), (observed & passes).to(data.dtype),
                      (input_observed & kept).to(data.dtype))


def inference_masks(data: torch.Tensor) -> BatchMasks:
    """Masks for validation and inference: no CD; every observed entry is scored."""
    return training_masks(data, keep_ratio=1.0)


def reconstruction_loss(elementwise_nll: torch.Tensor, observed: torch.Tensor, grad_mask: torch.Tensor,
                        normaliser: torch.Tensor | float, dim: tuple[int, ...] | None = None) -> torch.Tensor:
    """The NLL summed over the ``observed`` entries and divided by ``normaliser`` (e.g. their count, or a
    whole batch's count for a shard of it), with gradient only through ``grad_mask`` (CD, SBTT).

    The value covers every observed entry (so it is comparable with the validation NLL); the
    detached entries contribute to the value but not to the gradient. ``dim``: the axes summed
    (default all; ``(1, 2, 3)`` keeps a leading worker axis).
    """
    nll = torch.where(grad_mask > 0, elementwise_nll, elementwise_nll.detach())
    return masked_nll_sum(nll, observed, dim) / normaliser
