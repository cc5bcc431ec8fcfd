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


# ---------------------------------------------------------------------------------------------
# Spike jitter


def _jitter_destinations(counts, max_bins, draws=4000, seed=0):
    """``draws`` jitters of ``counts`` ``(1, T, 1)``: the jittered series ``(draws, T)``."""
    from neurodyn.lfads.augmentations import jitter_spikes

    batch = torch.tensor(np.repeat(np.asarray(counts, dtype=np.float64)[None, :, None], draws, axis=0))
    return jitter_spikes(batch, max_bins, torch.Generator().manual_seed(seed))[..., 0].numpy()


def test_a_spike_moves_uniformly_over_the_offsets():
    from scipy import stats

    counts = np.zeros(11)
    counts[5] = 1
    moved = _jitter_destinations(counts, 2)
    assert np.all(moved.sum(axis=1) == 1)
    observed_bins = moved[:, 3:8].sum(axis=0)
    assert moved[:, :3].sum() == 0 and moved[:, 8:].sum() == 0
    assert stats.chisquare(observed_bins).pvalue > 1e-3  # uniform over bins 3..7


def test_several_spikes_of_one_bin_split_as_a_uniform_multinomial():
    counts = np.zeros(11)
    counts[5] = 4
    moved = _jitter_destinations(counts, 2)
    # Each destination's count is Binomial(4, 1/5): mean 0.8, variance 0.64; any two have covariance -0.16.
    np.testing.assert_allclose(moved[:, 3:8].mean(axis=0), 0.8, atol=0.05)
    np.testing.assert_allclose(moved[:, 3:8].var(axis=0), 0.64, atol=0.06)
    assert abs(np.cov(moved[:, 3], moved[:, 7])[0, 1] + 0.16) < 0.04


def test_a_spike_stays_where_its_new_bin_is_outside_the_trial_or_unobserved():
    counts = np.zeros(6)
    counts[0] = 1
    moved = _jitter_destinations(counts, 2)
    # Offsets -2 and -1 leave the trial: the spike stays in bin 0 with probability 3/5.
    np.testing.assert_allclose(moved[:, :3].mean(axis=0), [0.6, 0.2, 0.2], atol=0.03)
    counts = np.array([0, np.nan, 0, 1, 0, 0, 0])
    moved = _jitter_destinations(counts, 2)
    assert np.isnan(moved[:, 1]).all()
    # Bin 1 is unobserved: offset -2 keeps the spike in bin 3, which then gets 2/5 of the draws.
    np.testing.assert_allclose(moved[:, [0, 2, 3, 4, 5]].mean(axis=0), [0, 0.2, 0.4, 0.2, 0.2], atol=0.03)


def test_jitter_keeps_every_trial_and_neurons_count_and_feeds_input_and_target():
    from neurodyn.lfads.augmentations import jitter_spikes

    data = _data_with_gaps(seed=3, shape=(8, 30, 4), missing=0.2)
    jittered = jitter_spikes(data, 3, torch.Generator().manual_seed(1))
    assert torch.equal(torch.isnan(jittered), torch.isnan(data))
    torch.testing.assert_close(torch.nansum(jittered, dim=1), torch.nansum(data, dim=1))
    assert not torch.equal(torch.nan_to_num(jittered), torch.nan_to_num(data))
    masks = training_masks(data, 1.0, generator=torch.Generator().manual_seed(1), spike_jitter_bins=3)
    torch.testing.assert_close(masks.target, torch.nan_to_num(jittered))
    torch.testing.assert_close(masks.encoder_input, masks.target)
    assert jitter_spikes(data, 0) is data  # off: the batch itself
