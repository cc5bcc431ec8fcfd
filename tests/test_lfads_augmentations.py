"""Coordinated dropout and SBTT: what the encoder sees and where gradient may flow."""

import numpy as np
import torch

from neurodyn.lfads.augmentations import coordinated_dropout_mask, inference_masks, training_masks
from neurodyn.observation.poisson import poisson_nll


def _data_with_gaps(seed=0, shape=(6, 10, 5), missing=0.4):
    rng = np.random.default_rng(seed)
    data = rng.poisson(1.0, shape).astype(np.float32)
    data[rng.random(shape) < missing] = np.nan
    return torch.tensor(data)


def _readout_gradient(data, masks):
    log_rate = torch.zeros(data.shape, requires_grad=True)
    loss = masks.reconstruction_loss(poisson_nll(log_rate, masks.target))
    loss.backward()
    return loss, log_rate.grad


def test_cd_mask_keeps_the_requested_fraction():
    kept = coordinated_dropout_mask((200, 50, 30), 0.7, generator=torch.Generator().manual_seed(0))
    assert abs(kept.float().mean().item() - 0.7) < 0.01


def test_cd_and_sbtt_pass_gradient_only_through_dropped_observed_entries():
    data = _data_with_gaps()
    masks = training_masks(data, keep_ratio=0.6, generator=torch.Generator().manual_seed(3))
    _, grad = _readout_gradient(data, masks)
    observed = ~torch.isnan(data)
    kept = masks.encoder_input != 0  # kept entries with a non-zero count are visible at the input
    dropped_observed = observed & (masks.grad_mask > 0)
    assert (grad[~observed] == 0).all(), "SBTT: unobserved entries must pass no gradient"
    assert (grad[observed & kept] == 0).all(), "CD: entries seen by the encoder must pass no gradient"
    # Where gradient flows it equals d/dlogr of the Poisson NLL (exp(0) - n) / number observed.
    expected = (1.0 - masks.target[dropped_observed]) / observed.sum()
    torch.testing.assert_close(grad[dropped_observed], expected)
    assert dropped_observed.any() and (grad[dropped_observed] != 0).any()


def test_cd_input_is_zero_where_dropped_and_scaled_where_kept():
    data = _data_with_gaps(missing=0.0)
    masks = training_masks(data, keep_ratio=0.5, generator=torch.Generator().manual_seed(1))
    dropped = masks.grad_mask > 0
    assert (masks.encoder_input[dropped] == 0).all()
    torch.testing.assert_close(masks.encoder_input[~dropped], data[~dropped] / 0.5)


def test_loss_value_covers_all_observed_entries():
    data = _data_with_gaps()
    masks = training_masks(data, keep_ratio=0.6, generator=torch.Generator().manual_seed(3))
    loss, _ = _readout_gradient(data, masks)
    observed = ~torch.isnan(data)
    expected = poisson_nll(torch.zeros(int(observed.sum())), data[observed]).mean()
    torch.testing.assert_close(loss, expected)


def test_without_cd_sbtt_still_masks_unobserved_and_input_is_zero_filled():
    data = _data_with_gaps()
    masks = inference_masks(data)
    _, grad = _readout_gradient(data, masks)
    observed = ~torch.isnan(data)
    assert (grad[~observed] == 0).all() and (grad[observed] != 0).any()
    assert not torch.isnan(masks.encoder_input).any()
    assert (masks.encoder_input[~observed] == 0).all()


def test_encoder_visible_marks_observed_entries_the_encoder_sees():
    data = _data_with_gaps()
    observed = ~torch.isnan(data)
    masks = training_masks(data, keep_ratio=0.6, generator=torch.Generator().manual_seed(4))
    dropped = masks.grad_mask > 0
    expected = observed & ~dropped  # pure CD: every observed entry is either seen or dropped
    assert torch.equal(masks.encoder_visible > 0, expected)
    assert torch.equal(inference_masks(data).encoder_visible > 0, observed)
