"""Zero-inflated gamma: likelihood vs SciPy, parameter mapping, gradients, s_min: auto, residues, errors."""

import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from neurodyn.config import LfadsConfig
from neurodyn.errors import NeurodynError
from neurodyn.observation.registry import make_observation_model
from neurodyn.observation.zig import ZeroInflatedGamma, zig_nll


def _scipy_zig_nll(q, alpha, beta, x, s_min):
    """Independent ZIG NLL: SciPy's gamma with its support shifted by loc = s_min. Above s_min the
    mixture's density q * gamma.pdf; at or below it the mixture's probability of "x <= s_min",
    (1 - q) + q * gamma.cdf(s_min)."""
    event = -np.log(q) - stats.gamma.logpdf(x, a=alpha, loc=s_min, scale=1.0 / beta)
    censored = -np.log((1 - q) + q * stats.gamma.cdf(s_min, a=alpha, loc=s_min, scale=1.0 / beta))
    return np.where(x > s_min, event, censored)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_zig_nll_matches_scipy_on_both_branches():
    rng = np.random.default_rng(0)
    n = 300
    q, alpha, beta = rng.uniform(0.05, 0.95, n), rng.uniform(0.5, 15, n), rng.uniform(0.5, 19, n)
    s_min = 0.07
    x = np.where(rng.random(n) < 0.5, 0.0, s_min + rng.gamma(2.0, 0.3, n))
    x[:20] = np.linspace(2e-6, s_min, 20)  # small values between the zero tolerance and s_min, s_min itself
    ours = zig_nll(*(torch.tensor(v) for v in (q, alpha, beta, x)), s_min).numpy()
    np.testing.assert_allclose(ours, _scipy_zig_nll(q, alpha, beta, x, s_min), rtol=1e-10)
    assert (x == 0).sum() > 50 and (x > s_min).sum() > 50


def test_model_maps_readout_to_q_alpha_beta_and_mean():
    model = ZeroInflatedGamma(4, s_min=0.2, gamma_prior=20.0).double()
    with torch.no_grad():  # scales away from the prior, different per neuron and parameter
        model.gamma_scales.scales.copy_(torch.tensor([[10.0, 20.0, 30.0, 5.0], [8.0, 12.0, 25.0, 40.0]]))
    rng = np.random.default_rng(1)
    raw = rng.normal(0, 2, size=(2, 4, 3))
    raw[0, 0, 0], raw[0, 1, 0] = 40.0, -40.0  # q saturates: clipped to [1e-5, 1 - 1e-5]
    readout = torch.tensor(raw)
    params = {k: v.detach().numpy() for k, v in model.named_params(readout).items()}
    scales = model.gamma_scales.scales.detach().numpy()
    np.testing.assert_allclose(params["q"], np.clip(_sigmoid(raw[..., 0]), 1e-5, 1 - 1e-5), rtol=1e-12)
    np.testing.assert_allclose(params["alpha"], _sigmoid(raw[..., 1]) * scales[0], rtol=1e-12)
    np.testing.assert_allclose(params["beta"], _sigmoid(raw[..., 2]) * scales[1], rtol=1e-12)
    assert params["q"][0, 0] == pytest.approx(1 - 1e-5) and params["q"][0, 1] == pytest.approx(1e-5)
    # The inferred event rate is the distribution's mean: q x mean of the shifted gamma.
    expected_mean = params["q"] * stats.gamma.mean(params["alpha"], loc=0.2, scale=1.0 / params["beta"])
    np.testing.assert_allclose(model.mean(readout).detach().numpy(), expected_mean, rtol=1e-12)
    target = torch.tensor([[0.0, 0.5, 1.3, 0.0], [0.25, 0.0, 2.0, 0.9]], dtype=torch.float64)
    expected = _scipy_zig_nll(params["q"], params["alpha"], params["beta"], target.numpy(), 0.2)
    np.testing.assert_allclose(model.elementwise_nll(readout, target).detach().numpy(), expected, rtol=1e-10)
    assert np.isfinite(model.elementwise_nll(readout, target).detach().numpy()).all()


def _finite_difference(f, x: torch.Tensor, index, step=1e-6) -> float:
    with torch.no_grad():
        original = x[index].item()
        x[index] = original + step
        up = f().item()
        x[index] = original - step
        down = f().item()
        x[index] = original
    return (up - down) / (2 * step)


def test_gradients_reach_readout_and_scales_and_match_finite_differences():
    model = ZeroInflatedGamma(3, s_min=0.1, gamma_prior=20.0, l2_gamma_distance_scale=0.3).double()
    with torch.no_grad():
        model.gamma_scales.scales.copy_(torch.tensor([[15.0, 22.0, 19.0], [24.0, 17.0, 21.0]]))
    readout = torch.tensor(np.random.default_rng(2).normal(0, 1, (5, 3, 3)), requires_grad=True)
    target = torch.tensor(np.where(np.arange(15).reshape(5, 3) % 4 == 0, 0.0, 0.1 + np.linspace(0.05, 2, 15).reshape(5, 3)))

    def total_nll():
        return model.elementwise_nll(readout, target).sum()

    total_nll().backward()
    scales = model.gamma_scales.scales
    assert scales.grad is not None and torch.all(scales.grad != 0)
    for index in [(0, 0, 0), (1, 1, 1), (2, 2, 2), (4, 1, 0), (3, 0, 1)]:
        assert readout.grad[index].item() == pytest.approx(_finite_difference(total_nll, readout, index), rel=1e-5, abs=1e-8)
    for index in [(0, 1), (1, 2)]:
        assert scales.grad[index].item() == pytest.approx(_finite_difference(total_nll, scales, index), rel=1e-5)

    # The prior penalty: 0.5 * weight * sum (s - prior)^2, its gradient weight * (s - prior).
    scales.grad = None
    penalty = model.penalty()
    assert penalty.item() == pytest.approx(0.5 * 0.3 * ((scales.detach().numpy() - 20.0) ** 2).sum())
    penalty.backward()
    for index in [(0, 0), (1, 1), (0, 2)]:
        assert scales.grad[index].item() == pytest.approx(_finite_difference(model.penalty, scales, index), rel=1e-6)
        assert scales.grad[index].item() == pytest.approx(0.3 * (scales[index].item() - 20.0))


def test_zero_entries_give_finite_gradients():
    model = ZeroInflatedGamma(2, s_min=0.5)
    readout = torch.zeros(4, 2, 3, requires_grad=True)
    model.elementwise_nll(readout, torch.zeros(4, 2)).sum().backward()
    assert torch.isfinite(readout.grad).all() and torch.isfinite(model.gamma_scales.scales.grad).all()


def test_residues_within_tolerance_score_as_zero_and_are_counted():
    model = ZeroInflatedGamma(4, s_min=0.1).double()
    readout = torch.tensor(np.random.default_rng(3).normal(0, 1, (1, 4, 3)))
    residues = torch.tensor([[1e-9, -3e-15, 5e-7, 0.0]], dtype=torch.float64)
    with torch.no_grad():
        np.testing.assert_array_equal(model.elementwise_nll(readout, residues).numpy(),
                                      model.elementwise_nll(readout, torch.zeros_like(residues)).numpy())
    data = np.array([[[1e-9, np.nan, 0.3, -3e-15], [0.0, 0.5, 2e-8, np.nan]]])
    with pytest.warns(UserWarning, match=r"x\.h5: key 'data': 3 observed value\(s\) within"):
        model.validate_targets(data, "x.h5")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # clean data: no warning
        model.validate_targets(np.array([[[0.0, 0.3, np.nan, 1.2]]]), "x.h5")


def test_negative_events_are_an_error_naming_file_and_key():
    with pytest.raises(NeurodynError, match=r"run_data\.h5: key 'data' holds 1 negative value.*-0\.2"):
        ZeroInflatedGamma(3).validate_targets(np.array([[[0.0, -0.2, 0.4]]]), "run_data.h5")


def _events(rng, shape, fraction, shape_param=2.0, rate=5.0, offset=0.25):
    values = offset + rng.gamma(shape_param, 1.0 / rate, shape)
    return np.where(rng.random(shape) < fraction, values, 0.0)


def test_s_min_auto_is_just_below_the_smallest_event_ignoring_residues_and_nan():
    rng = np.random.default_rng(4)
    data = _events(rng, (10, 20, 3), 0.3)
    data[0, 0, 0], data[0, 1, 1], data[1, 0, 2] = 1e-9, -3e-15, np.nan
    smallest = data[data > 1e-3].min()
    options = ZeroInflatedGamma.options_from_config(LfadsConfig(observation="zig"), data)
    assert 0.8 * smallest <= options["s_min"] < smallest
    # A fixed s_min is used as given; the prior settings come from the config.
    fixed = ZeroInflatedGamma.options_from_config(
        LfadsConfig(observation="zig", s_min=0.05, gamma_prior=12.0, l2_gamma_distance_scale=0.01), data)
    assert (fixed["s_min"], fixed["gamma_prior"], fixed["l2_gamma_distance_scale"]) == (0.05, 12.0, 0.01)


def test_s_min_auto_without_any_event_is_an_error():
    with pytest.raises(NeurodynError, match="no non-zero events"):
        ZeroInflatedGamma.options_from_config(LfadsConfig(observation="zig"), np.array([[[0.0, 1e-9, np.nan]]]))


def test_initial_readout_bias_matches_event_fraction_and_mean_event_size():
    rng = np.random.default_rng(5)
    fractions = np.array([0.1, 0.3, 0.6])
    data = np.stack([_events(rng, (200, 30), f) for f in fractions], axis=-1)
    data[rng.random(data.shape) < 0.2] = np.nan  # unobserved entries do not count
    options = ZeroInflatedGamma.options_from_config(LfadsConfig(observation="zig"), data)
    model = make_observation_model("zig", 3, **options)
    bias = model.initial_readout_bias(torch.zeros(3))
    assert bias.shape == (3, 3)
    params = {k: v.detach().numpy() for k, v in model.named_params(bias).items()}
    observed = ~np.isnan(data)
    observed_fraction = ((data > 0) & observed).sum((0, 1)) / observed.sum((0, 1))
    np.testing.assert_allclose(params["q"], observed_fraction, rtol=1e-5)
    mean_excess = np.array([np.nanmean(np.where(data[..., n] > 0, data[..., n], np.nan)) for n in range(3)])
    mean_excess -= options["s_min"]
    np.testing.assert_allclose(params["alpha"] / params["beta"], mean_excess, rtol=1e-4)


def test_registry_and_config_select_zig():
    assert isinstance(make_observation_model("zig", 5, s_min=0.2), ZeroInflatedGamma)
    assert LfadsConfig(observation="zig").observation == "zig"
    assert LfadsConfig(observation="gamma").observation == "gamma"
    with pytest.raises(NeurodynError, match="s_min must be positive"):
        ZeroInflatedGamma(3, s_min=0.0)


def test_hand_set_s_min_above_some_events_warns_and_scores_them_finitely():
    data = np.array([[[0.0, 0.3, 0.8], [0.6, 0.0, 1.5]]])
    with pytest.warns(UserWarning, match=r"s_min = 0\.5 is not below 1 training event"):
        ZeroInflatedGamma.options_from_config(LfadsConfig(observation="zig", s_min=0.5), data)
    model = ZeroInflatedGamma(3, s_min=0.5)
    readout = torch.zeros(1, 3, 3, requires_grad=True)
    nll = model.elementwise_nll(readout, torch.tensor([[0.3, 0.5, 0.8]]))
    nll.sum().backward()
    assert torch.isfinite(nll).all() and torch.isfinite(readout.grad).all()


def test_pbt_can_change_the_gamma_prior_and_its_weight_mid_training():
    from neurodyn.config import LfadsConfig
    from neurodyn.train.trainer import LfadsTrainer

    rng = np.random.default_rng(0)
    data = (rng.random((12, 8, 3)) < 0.3) * rng.gamma(2.0, 0.5, (12, 8, 3)) + 0.0
    config = LfadsConfig(observation="zig", ic_enc_dim=4, ic_dim=2, gen_dim=4, factors_dim=2, device="cpu",
                         gamma_prior=20.0, l2_gamma_distance_scale=1e-4)
    trainer = LfadsTrainer(config, data.astype(np.float32), data[:4].astype(np.float32))
    scales = trainer.model.observation.gamma_scales
    with torch.no_grad():
        scales.scales.add_(1.0)  # away from the prior, so the penalty is non-zero
    before = float(trainer.model.observation.penalty().detach())
    trainer.set_hyperparameters(gamma_prior=10.0, l2_gamma_distance_scale=2e-4)
    expected = 0.5 * 2e-4 * float(((scales.scales.detach() - 10.0) ** 2).sum())
    assert float(trainer.model.observation.penalty().detach()) == pytest.approx(expected)
    assert expected != pytest.approx(before)


def test_pairwise_log_likelihood_sums_scipy_zig_over_observed_entries():
    model = ZeroInflatedGamma(3, s_min=0.1, gamma_prior=20.0).double()
    rng = np.random.default_rng(5)
    readout = torch.tensor(rng.normal(0, 1, size=(4, 2, 3, 3)))  # 4 candidates, T=2, N=3, P=3
    target = np.where(rng.random((5, 2, 3)) < 0.5, 0.0, 0.1 + rng.gamma(2.0, 0.3, (5, 2, 3)))
    target[0, 0], target[1, 1, :2] = 0.05, [1e-3, 0.1]  # at or below s_min: the censored zero class
    observed = rng.random((5, 2, 3)) < 0.7
    params = {k: v.detach().numpy() for k, v in model.named_params(readout).items()}
    expected = np.array([[-_scipy_zig_nll(params["q"][m], params["alpha"][m], params["beta"][m], target[b], 0.1)
                          [observed[b]].sum() for m in range(4)] for b in range(5)])
    args = (readout, torch.tensor(target), torch.tensor(observed, dtype=torch.float64))
    np.testing.assert_allclose(model.pairwise_log_likelihood(*args).detach().numpy(), expected, rtol=1e-10)
    # The base class's entry-by-entry blocks (one trial per block here) give the same matrix.
    generic = super(ZeroInflatedGamma, model).pairwise_log_likelihood(*args, max_entries=1)
    np.testing.assert_allclose(generic.detach().numpy(), expected, rtol=1e-10)


def test_values_at_or_below_s_min_score_as_zeros_and_never_reward_a_model():
    """A value between the zero tolerance and s_min is the class "x <= s_min" (probability 1 - q): its NLL is
    that of a zero, >= 0, and independent of alpha and beta, even where the gamma density near s_min is
    unbounded (alpha < 1) and scoring it as an event just above s_min would reward the model."""
    s_min = 0.2
    model = ZeroInflatedGamma(3, s_min=s_min).double()
    readout = torch.tensor([[[0.3, -3.0, 2.0], [-1.0, 0.5, -0.5], [2.0, -6.0, 4.0]]], dtype=torch.float64,
                           requires_grad=True)
    below = torch.tensor([[1e-4, 0.15, s_min]], dtype=torch.float64)
    nll = model.elementwise_nll(readout, below)
    nll.sum().backward()
    params = {k: v.detach().numpy() for k, v in model.named_params(readout).items()}
    assert params["alpha"].min() < 1  # the density just above s_min is unbounded for this neuron
    np.testing.assert_allclose(nll.detach().numpy(), _scipy_zig_nll(params["q"], params["alpha"], params["beta"],
                                                                     below.numpy(), s_min), rtol=1e-12)
    with torch.no_grad():
        np.testing.assert_array_equal(nll.numpy(), model.elementwise_nll(readout, torch.zeros_like(below)).numpy())
    assert (nll.detach() >= 0).all()
    assert (readout.grad[..., 1:] == 0).all() and (readout.grad[..., 0] != 0).all()


def test_no_scale_or_readout_value_gives_nan_loss_or_gradients():
    """Scales driven to or below zero and saturated sigmoids: alpha and beta stay >= the floor, loss and gradients
    finite, and a scale at or a little below zero still gets a gradient (it can recover)."""
    for dtype in (torch.float32, torch.float64):
        model = ZeroInflatedGamma(4, s_min=0.1, l2_gamma_distance_scale=1e-4).to(dtype)
        with torch.no_grad():
            model.gamma_scales.scales.copy_(torch.tensor([[0.0, -0.02, -5.0, -1e4], [0.0, -1e4, 1e-3, -0.02]]))
        raw = np.zeros((6, 4, 3))
        raw[0], raw[1], raw[2] = 200.0, -200.0, np.array([-200.0, 200.0, -200.0])
        readout = torch.tensor(raw, dtype=dtype, requires_grad=True)
        target = torch.tensor(np.tile([[0.0, 0.05, 0.3, 4.0]], (6, 1)), dtype=dtype)
        loss = model.elementwise_nll(readout, target).sum() + model.penalty()
        loss.backward()
        params = {k: v.detach() for k, v in model.named_params(readout).items()}
        assert torch.isfinite(loss) and torch.isfinite(readout.grad).all()
        scale_grad = model.gamma_scales.scales.grad
        assert torch.isfinite(scale_grad).all()
        assert (params["alpha"] >= 1e-4).all() and (params["beta"] >= 1e-4).all()  # compared in dtype
        assert torch.isfinite(model.mean(readout)).all()
        assert scale_grad[0, 0] != 0 and scale_grad[0, 1] != 0  # NLL and penalty gradient at s = 0 and s < 0

    from neurodyn.observation.gamma import Gamma

    gamma = Gamma(2)
    with torch.no_grad():
        gamma.gamma_scales.scales.fill_(-1.0)
    readout = torch.full((3, 2, 2), -150.0, requires_grad=True)
    loss = gamma.elementwise_nll(readout, torch.full((3, 2), 0.7)).sum()
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(readout.grad).all()


def test_effective_scale_is_the_scale_itself_in_the_usual_range_and_positive_below():
    model = ZeroInflatedGamma(3).double()
    with torch.no_grad():
        model.gamma_scales.scales.copy_(torch.tensor([[0.25, 1.0, 20.0], [0.0, -0.01, -3.0]], dtype=torch.float64))
    effective = model.gamma_scales.effective_scales().detach().numpy()
    np.testing.assert_array_equal(effective[0], [0.25, 1.0, 20.0])
    # SCALE_SOFTNESS x softplus(s / SCALE_SOFTNESS), by NumPy: 0.01 log(1 + exp(100 s))
    np.testing.assert_allclose(effective[1], 0.01 * np.log1p(np.exp(100 * np.array([0.0, -0.01, -3.0]))), rtol=1e-12)
    assert (effective > 0).all()


def test_s_min_auto_is_not_decided_by_one_outlier_which_then_counts_as_zero():
    rng = np.random.default_rng(6)
    clean = _events(rng, (40, 20, 3), 0.3)
    clean_options = ZeroInflatedGamma.options_from_config(LfadsConfig(observation="zig"), clean)
    assert clean_options["s_min"] == pytest.approx(0.9 * clean[clean > 0].min(), rel=1e-12)  # threshold-cut data
    with_outlier = clean.copy()
    zero_entries = np.argwhere(clean[..., 1] == 0)
    trial, time = zero_entries[0]
    with_outlier[trial, time, 1] = 1e-4  # one stray tiny event (a deconvolution fragment)
    options = ZeroInflatedGamma.options_from_config(LfadsConfig(observation="zig"), with_outlier)
    assert options["s_min"] == clean_options["s_min"]
    # The outlier lies below s_min: it is a zero for the likelihood and for the starting event fraction.
    assert options["initial_event_fraction"] == clean_options["initial_event_fraction"]
    model = ZeroInflatedGamma(3, s_min=options["s_min"]).double()
    readout = torch.tensor(rng.normal(0, 1, (1, 3, 3)))
    with torch.no_grad():
        assert (model.elementwise_nll(readout, torch.tensor([[0.0, 1e-4, 0.0]], dtype=torch.float64))
                == model.elementwise_nll(readout, torch.zeros(1, 3, dtype=torch.float64))).all()
    # Events spread down to zero (no detection threshold): s_min sits at the lower edge of the bulk, and
    # only a small fraction of the events falls below it.
    spread = np.where(rng.random((40, 20, 3)) < 0.3, rng.exponential(1.0, (40, 20, 3)), 0.0)
    s_min = ZeroInflatedGamma.options_from_config(LfadsConfig(observation="zig"), spread)["s_min"]
    events = spread[spread > 0]
    assert 0 < s_min < np.quantile(events, 0.01) and (events <= s_min).mean() < 0.01
