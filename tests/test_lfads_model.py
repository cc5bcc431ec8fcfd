"""The LFADS modules: shapes, the exact fast path of the autonomous generator, clipping, lag, L2."""

import pytest
import torch
import torch.nn.functional as F

from neurodyn.config import LfadsConfig
from neurodyn.lfads.model import LFADS
from neurodyn.lfads.recurrent import keep_multipliers
from neurodyn.lfads.stacked import ForwardNoise, lag_controller_inputs
from neurodyn.observation.poisson import Poisson

SMALL = dict(ic_enc_dim=8, ci_enc_dim=6, con_dim=7, ic_dim=5, gen_dim=9, factors_dim=4)


def _model(co_dim=0, **overrides):
    torch.manual_seed(0)
    config = LfadsConfig(**{**SMALL, "co_dim": co_dim, **overrides})
    return LFADS(config, num_neurons=3, observation=Poisson(3))


@pytest.mark.usefixtures("recurrent_loops")
@pytest.mark.parametrize("clip", [5.0, 0.5])
def test_autonomous_generator_equals_stepwise_clipped_gru(clip):
    model = _model(co_dim=0, gen_dim=6, factors_dim=3, cell_clip_value=clip)
    gen_init = torch.randn(1, 4, 6) * 10  # far outside the clip range, so step 1 must clip
    factors, states = model._autonomous(gen_init, 7, ForwardNoise(), None)
    gen = model.decoder.generator
    h, expected = gen_init[0], []
    for _ in range(7):
        h = torch.gru_cell(torch.zeros(4, 1), h, gen.weight_ih_l0, gen.weight_hh_l0, gen.bias_ih_l0, gen.bias_hh_l0)
        h = torch.clamp(h, -clip, clip)
        expected.append(h)
    expected = torch.stack(expected, 1)
    torch.testing.assert_close(states[0], expected)
    torch.testing.assert_close(factors[0], expected @ F.normalize(model.decoder.factors.weight, dim=1).T)
    assert h.abs().max() <= clip


@pytest.mark.usefixtures("recurrent_loops")
@pytest.mark.parametrize("sample", [False, True])
def test_controlled_decoder_equals_a_reference_loop_of_torch_gru_cells(sample):
    """The controller/generator loop (every backend) against a plain loop of ``torch.gru_cell`` calls:
    controller on [ci_t, factors_{t-1}], inferred input = mean + std * noise, clipping after every
    step, factors from the unit-norm map."""
    clip = 0.8
    model = _model(co_dim=2, gen_dim=6, factors_dim=3, con_dim=5, ci_enc_dim=2, cell_clip_value=clip)
    gen_init, ci = torch.randn(1, 3, 6), torch.randn(1, 3, 7, 4)
    noise = torch.randn(1, 7, 3, 2, generator=torch.Generator().manual_seed(5))
    result = dict(zip(("factors", "co_mean", "co_std", "co_sample", "states"),
                      model._controlled(gen_init, ci, sample, ForwardNoise(co_noise=noise), None)))
    decoder = model.decoder
    con, gen = decoder.controller, decoder.generator
    factor_weight = F.normalize(decoder.factors.weight, dim=1)
    gen_h, con_h = gen_init[0], decoder.controller_initial_state.expand(3, -1)
    factor = gen_h @ factor_weight.T
    for t in range(7):
        con_in = torch.cat([ci[0, :, t], factor], dim=-1)
        con_h = torch.gru_cell(con_in, con_h, con.weight_ih_l0, con.weight_hh_l0, con.bias_ih_l0, con.bias_hh_l0)
        con_h = con_h.clamp(-clip, clip)
        mean, logvar = decoder.controller_output(con_h).chunk(2, dim=-1)
        co = mean + torch.exp(0.5 * logvar) * noise[0, t] if sample else mean
        gen_h = torch.gru_cell(co, gen_h, gen.weight_ih_l0, gen.weight_hh_l0, gen.bias_ih_l0, gen.bias_hh_l0)
        gen_h = gen_h.clamp(-clip, clip)
        factor = gen_h @ factor_weight.T
        torch.testing.assert_close(result["co_sample"][0, :, t], co, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(result["factors"][0, :, t], factor, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(result["states"][0, :, t], gen_h, rtol=1e-5, atol=1e-6)


def test_dropout_scales_kept_entries_and_follows_its_generator():
    def draw(seed):
        return keep_multipliers((200, 50), 0.25, torch.float32, torch.device("cpu"), torch.Generator().manual_seed(seed))

    first = draw(1)
    values = first.unique()
    assert values.numel() == 2 and values[0] == 0 and values[1].item() == pytest.approx(1.0 / 0.75)
    assert abs(float((first == 0).float().mean()) - 0.25) < 0.02
    assert torch.equal(first, draw(1))
    assert not torch.equal(first, draw(2))


def test_dropout_acts_in_training_mode_only():
    model = _model(co_dim=2, keep_prob=0.5)
    x = torch.rand(2, 11, 3)

    def readout(seed):
        return model(x, sample_posteriors=False, rng=torch.Generator().manual_seed(seed)).readout

    assert not torch.equal(readout(1), readout(2))
    torch.testing.assert_close(readout(1), readout(1))
    model.eval()
    torch.testing.assert_close(readout(1), readout(2))


def test_factors_use_unit_norm_weight_rows():
    model = _model()
    with torch.no_grad():
        model.decoder.factors.weight.mul_(7.0)
    torch.testing.assert_close(model.normalised_factor_weight()[0].pow(2).sum(1), torch.ones(SMALL["factors_dim"]))


def test_controller_inputs_are_lagged_forward_and_backward():
    outputs = torch.arange(1, 6, dtype=torch.float32).view(1, 5, 1).repeat(1, 1, 2)  # fwd | bwd halves
    lagged = lag_controller_inputs(outputs, lag=1)
    assert lagged[0, :, 0].tolist() == [0, 1, 2, 3, 4]
    assert lagged[0, :, 1].tolist() == [2, 3, 4, 5, 0]


def test_forward_shapes_with_and_without_controller():
    x = torch.rand(2, 11, 3)
    for co_dim in (0, 2):
        model = _model(co_dim)
        out = model(x, sample_posteriors=True)
        assert out.readout.shape == (2, 11, 3, 1) and out.factors.shape == (2, 11, 4)
        assert out.ic_mean.shape == (2, 5)
        if co_dim:
            assert out.co_sample.shape == (2, 11, 2)
            assert model.kl_co(out).shape == (2,)
        else:
            assert out.co_sample is None and not hasattr(model, "ci_encoder")
            assert (model.kl_co(out) == 0).all()


def test_controller_receives_gradient_from_the_reconstruction():
    model = _model(co_dim=2)
    out = model(torch.rand(2, 6, 3), sample_posteriors=True)
    out.readout.sum().backward()
    assert model.decoder.controller.weight_hh_l0.grad.abs().sum() > 0
    assert model.ci_encoder.gru.weight_ih_l0.grad.abs().sum() > 0


def test_posterior_mean_pass_is_deterministic_and_sampling_is_not():
    model = _model(co_dim=2).eval()
    x = torch.rand(2, 6, 3)
    a, b = model(x, False).readout, model(x, False).readout
    torch.testing.assert_close(a, b)
    assert not torch.allclose(model(x, True).readout, model(x, True).readout)


def test_ic_posterior_std_has_a_floor():
    model = _model(ic_post_var_min=1e-2)
    with torch.no_grad():
        model.ic_posterior.bias[5:] = -50.0  # logvar -> very negative
        model.ic_posterior.weight.zero_()
    out = model(torch.rand(1, 4, 3), sample_posteriors=False)
    torch.testing.assert_close(out.ic_std, torch.full_like(out.ic_std, 0.1))


def test_recurrent_l2_is_the_scaled_mean_square_of_recurrent_kernels():
    model = _model(co_dim=2)
    gen, con = model.decoder.generator.weight_hh_l0, model.decoder.controller.weight_hh_l0
    expected = (0.3 * 0.5 * gen.pow(2).sum() + 0.7 * 0.5 * con.pow(2).sum()) / (gen.numel() + con.numel())
    torch.testing.assert_close(model.recurrent_l2(0.3, 0.7), expected.reshape(1))  # a worker axis of one
    assert model.recurrent_l2(0.0, 0.0).item() == 0.0


def test_set_keep_prob_changes_dropout():
    model = _model()
    model.set_keep_prob(0.6)
    assert model.dropout_p == pytest.approx(0.4)


def test_mask_as_input_lets_the_encoder_tell_observed_zeros_from_missing_entries():
    model = _model(mask_as_input=True).eval()
    zeros = torch.zeros(2, 6, 3)
    seen, unseen = torch.ones(2, 6, 3), torch.zeros(2, 6, 3)
    assert model.ic_encoder.gru.input_size == 6  # data and visibility channels
    assert not torch.allclose(model(zeros, False, seen).readout, model(zeros, False, unseen).readout)
    plain = _model().eval()
    assert plain.ic_encoder.gru.input_size == 3
    torch.testing.assert_close(plain(zeros, False, seen).readout, plain(zeros, False, unseen).readout)


# --- measured inputs (ext_input) ------------------------------------------------------------------


@pytest.mark.parametrize("co_dim", [0, 2])
def test_ext_input_changes_the_output_only_through_the_generator(co_dim):
    model = _model(co_dim, ext_input_dim=2).eval()
    x = torch.rand(2, 6, 3)
    ext = torch.randn(2, 6, 2)
    base = model(x, False, ext_input=ext)
    changed = model(x, False, ext_input=ext + 1.0)
    assert not torch.allclose(base.readout, changed.readout)
    # The encoders never see it: the initial-condition posterior is unchanged.
    torch.testing.assert_close(base.ic_mean, changed.ic_mean)
    torch.testing.assert_close(base.ic_std, changed.ic_std)
    # It enters through the generator's last input columns only: with those zeroed it does nothing.
    with torch.no_grad():
        model.decoder.generator.weight_ih_l0[:, co_dim:] = 0.0
    torch.testing.assert_close(model(x, False, ext_input=ext).readout, model(x, False, ext_input=ext + 1.0).readout)


def test_ext_input_shape_is_checked_against_the_model():
    from neurodyn.errors import NeurodynError

    x = torch.rand(2, 6, 3)
    with pytest.raises(NeurodynError, match="ext_input .* is missing"):
        _model(2, ext_input_dim=2)(x, False)
    with pytest.raises(NeurodynError, match=r"expected \(2, 6, 2\)"):
        _model(2, ext_input_dim=2)(x, False, ext_input=torch.zeros(2, 5, 2))
    with pytest.raises(NeurodynError, match="ext_input_dim 0"):
        _model(2)(x, False, ext_input=torch.zeros(2, 6, 2))


def test_forward_returns_generator_states():
    out = _model(2)(torch.rand(2, 6, 3), sample_posteriors=False)
    assert out.gen_states.shape == (2, 6, 9)
    # The factors are the normalised projection of the states (dropout off in eval mode).
    model = _model(0).eval()
    out = model(torch.rand(2, 6, 3), sample_posteriors=False)
    torch.testing.assert_close(out.factors, out.gen_states @ model.normalised_factor_weight()[0].T)
