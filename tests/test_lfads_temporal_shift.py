"""Temporal-shift augmentation: integer per-channel shifts, repeated edges, independent input and
target shifts, NaN masks that follow the shifted data, no shift at std 0, training only."""

import math

import numpy as np
import torch

from neurodyn.config import LfadsConfig
from neurodyn.lfads.augmentations import inference_masks, shift_channels, training_masks
from neurodyn.train.trainer import LfadsTrainer


def _time_index_data(batch, steps, channels):
    """data[b, t, n] = t + 1: after a shift, each value names the time step it came from."""
    return torch.arange(1, steps + 1, dtype=torch.float64).view(1, steps, 1).repeat(batch, 1, channels)


def _source_steps(shifted_index_data):
    return shifted_index_data.long() - 1


def test_shift_channels_hand_made_example():
    data = torch.tensor([[[10.0, 20.0], [11.0, 21.0], [12.0, 22.0], [13.0, 23.0], [14.0, 24.0]]])  # (1, 5, 2)
    shifted = shift_channels(data, torch.tensor([[2, -1]]))
    expected = torch.tensor([[[10.0, 21.0], [10.0, 22.0], [10.0, 23.0], [11.0, 24.0], [12.0, 24.0]]])
    assert torch.equal(shifted, expected)
    assert torch.equal(shift_channels(data, torch.tensor([[9, -9]]))[0, :, 0], torch.full((5,), 10.0))
    assert torch.equal(shift_channels(data, torch.tensor([[9, -9]]))[0, :, 1], torch.full((5,), 24.0))


def _recovered_shifts(source):
    """Per (trial, channel), the integer shift s with source[t] = clamp(t - s), checked at every t."""
    batch, steps, channels = source.shape
    middle = steps // 2
    shifts = middle - source[:, middle, :]  # exact while |shift| < steps / 2
    time = torch.arange(steps).view(1, steps, 1)
    assert torch.equal(source, (time - shifts.unsqueeze(1)).clamp(0, steps - 1))  # a clamped shift, edges repeated
    return shifts


def test_input_and_target_get_independent_integer_shifts_with_repeated_edges():
    generator = torch.Generator().manual_seed(0)
    data = _time_index_data(64, 41, 8)
    masks = training_masks(data, keep_ratio=1.0, generator=generator, temporal_shift_std=3.0)
    input_shifts = _recovered_shifts(_source_steps(masks.encoder_input))
    target_shifts = _recovered_shifts(_source_steps(masks.target))
    assert (input_shifts != 0).float().mean() > 0.5 and (target_shifts != 0).float().mean() > 0.5
    assert (input_shifts != target_shifts).float().mean() > 0.5  # independent draws
    for shifts in (input_shifts, target_shifts):
        # round(N(0, 3)): mean near 0, std near 3 over 512 channels
        assert abs(shifts.double().mean().item()) < 0.5
        assert 2.6 < shifts.double().std().item() < 3.4
    assert torch.equal(masks.observed, torch.ones_like(masks.observed))


def test_no_shift_at_std_zero_and_at_inference():
    data = _time_index_data(4, 10, 3)
    for masks in (training_masks(data, keep_ratio=1.0, temporal_shift_std=0.0), inference_masks(data)):
        assert torch.equal(masks.encoder_input, data) and torch.equal(masks.target, data)


def test_nan_masks_follow_the_shifted_arrays():
    batch, steps, channels = 16, 30, 5
    rng = np.random.default_rng(1)
    with_nan = torch.tensor(rng.poisson(2.0, (batch, steps, channels)), dtype=torch.float64)
    with_nan[torch.tensor(rng.random((batch, steps, channels)) < 0.4)] = float("nan")
    for keep_ratio in (1.0, 0.6):
        # Same generator seed and shape -> the same random draws for both calls.
        index_masks = training_masks(_time_index_data(batch, steps, channels), keep_ratio,
                                     generator=torch.Generator().manual_seed(7), temporal_shift_std=2.0)
        masks = training_masks(with_nan, keep_ratio, generator=torch.Generator().manual_seed(7), temporal_shift_std=2.0)
        target_source = _source_steps(index_masks.target)
        shifted_target = torch.gather(with_nan, 1, target_source)
        assert torch.equal(masks.observed.bool(), ~torch.isnan(shifted_target))
        assert torch.equal(masks.target, torch.nan_to_num(shifted_target, nan=0.0))
        assert torch.all(masks.grad_mask <= masks.observed)
        input_source = _source_steps((index_masks.encoder_input * keep_ratio).round()).clamp_min(0)  # CD zeros: dropped
        kept = index_masks.encoder_input > 0
        shifted_input = torch.nan_to_num(torch.gather(with_nan, 1, input_source), nan=0.0) * kept / keep_ratio
        assert not torch.isnan(masks.encoder_input).any()
        torch.testing.assert_close(masks.encoder_input, shifted_input)
        if keep_ratio < 1.0:  # CD still passes gradient only through dropped, observed entries
            assert torch.equal(masks.grad_mask.bool(), masks.observed.bool() & ~kept)


def test_training_with_temporal_shift_runs_and_stays_finite():
    rng = np.random.default_rng(2)
    data = rng.poisson(1.0, (20, 12, 4)).astype(np.float32)
    config = LfadsConfig(ic_enc_dim=6, ci_enc_dim=4, con_dim=4, ic_dim=3, gen_dim=8, factors_dim=3, batch_size=8,
                         device="cpu", kl_increase_epochs=1, l2_increase_epochs=1, temporal_shift_std=1.5)
    trainer = LfadsTrainer(config, data[:16], data[16:])
    for _ in range(2):
        row = trainer.step_epoch()
        assert math.isfinite(row["loss"]) and math.isfinite(row["valid_nll"])
