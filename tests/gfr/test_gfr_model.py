"""GFR model: decay table, activation, the published step convention, batching, pass-through."""

import math

import numpy as np
import pytest
import torch

from neurodyn.errors import NeurodynError
from neurodyn.gfr import GFR, PolynomialActivation, decay_rates


@pytest.mark.parametrize("bin_size, taus", [
    (10, [10, 20, 50, 100, 200, 500, 1000, 2000]),
    (20, [20, 50, 100, 200, 500, 1000, 2000]),
    (50, [50, 100, 200, 500, 1000, 2000]),
    (100, [100, 200, 500, 1000, 2000]),
])
def test_decay_table_per_bin_size(bin_size, taus):
    expected = [1.0] + [1 - math.exp(-bin_size / tau) for tau in taus]
    np.testing.assert_allclose(decay_rates(bin_size), expected)
    assert GFR(bin_size=bin_size).n_timescales == len(expected)


@pytest.mark.parametrize("bad", [15, 0, "20", 200])
def test_unknown_bin_size_is_a_clear_error(bad):
    with pytest.raises(NeurodynError, match="bin size"):
        decay_rates(bad)


def random_params(rng, bin_size=20, degree=2):
    n = len(decay_rates(bin_size))
    return {
        "a": rng.normal(1.0, 0.5, n).tolist(), "b": rng.normal(0, 1e-3, n).tolist(),
        "ds": decay_rates(bin_size).tolist(), "bin_size": bin_size,
        "g": {"max_current": 300.0, "max_firing_rate": 0.2, "poly_coeff": rng.uniform(0.2, 1.2, degree + 1).tolist(),
              "b": 50.0, "bin_size": 20},
    }


def reference_activation(x, g):
    """g written out term by term from the published formula."""
    z = (x - g["b"]) / g["max_current"]
    poly = sum(c**2 * z**k for k, c in enumerate(g["poly_coeff"]))
    return g["max_firing_rate"] * max(0.0, math.tanh(poly))


def reference_predict(current, p):
    """An independent scalar loop of the published step: no dt, feedback on 1000 f (Hz)."""
    h = np.zeros(len(p["a"]))
    f_prev, out = 0.0, []
    for i_t in current:
        h = (1 - np.asarray(p["ds"])) * h + np.asarray(p["a"]) * i_t + 1000 * np.asarray(p["b"]) * f_prev
        f_prev = reference_activation(h.mean(), p["g"])
        out.append(f_prev)
    return np.array(out)


def test_activation_matches_formula():
    g = PolynomialActivation(1, degree=3)
    with torch.no_grad():
        g.poly_coeff[:] = torch.tensor([0.3, -0.8, 0.5, 0.2])
        g.threshold[:] = 40.0
        g.max_current[:] = 250.0
        g.max_firing_rate[:] = 0.15
    params = {"poly_coeff": [0.3, -0.8, 0.5, 0.2], "b": 40.0, "max_current": 250.0, "max_firing_rate": 0.15}
    x = np.array([-300.0, 0.0, 39.0, 40.0, 120.0, 800.0])
    out = g(torch.tensor(x, dtype=torch.float32)[:, None])[:, 0].detach().numpy()
    np.testing.assert_allclose(out, [reference_activation(v, params) for v in x], rtol=1e-5, atol=1e-7)


def test_predict_reproduces_the_published_step_convention():
    rng = np.random.default_rng(0)
    p = random_params(rng)
    current = rng.uniform(-50, 400, 120)
    model = GFR.from_params(p)
    np.testing.assert_allclose(model.predict(current), reference_predict(current, p), rtol=1e-4, atol=1e-6)


def test_batched_neurons_equal_separate_models():
    rng = np.random.default_rng(1)
    params = [random_params(rng) for _ in range(3)]
    current = rng.uniform(0, 400, 60)
    batched = GFR.from_params(params).predict(current)
    assert batched.shape == (60, 3)
    for i, p in enumerate(params):
        np.testing.assert_allclose(batched[:, i], GFR.from_params(p).predict(current), rtol=1e-6)


def test_pass_through_initialisation_gives_g_of_current():
    model = GFR(bin_size=10, degree=1)
    n = model.n_timescales
    assert model.a[0].tolist() == [n] + [0.0] * (n - 1)
    assert model.b.abs().sum() == 0
    current = np.linspace(-2, 3, 40)
    expected = model.g(torch.tensor(current, dtype=torch.float32)[:, None])[:, 0].detach().numpy()
    np.testing.assert_allclose(model.predict(current), expected, rtol=1e-6)


def test_get_params_has_the_published_layout():
    """Shapes of the published get_params(): a, b (1, n); poly_coeff (1, degree + 1); one-element lists."""
    p = GFR(bin_size=50, degree=3, activation_bin_size=100).get_params()
    assert set(p) == {"a", "b", "ds", "bin_size", "g"}
    assert set(p["g"]) == {"max_current", "max_firing_rate", "poly_coeff", "b", "bin_size"}
    assert np.shape(p["a"]) == np.shape(p["b"]) == (1, 7) and np.shape(p["ds"]) == (7,)
    assert np.shape(p["g"]["poly_coeff"]) == (1, 4)
    assert all(np.shape(p["g"][k]) == (1,) for k in ("max_current", "max_firing_rate", "b"))
    assert p["bin_size"] == 50 and p["g"]["bin_size"] == 100


def test_from_params_rejects_a_wrong_decay_table():
    p = random_params(np.random.default_rng(2))
    p["ds"] = p["ds"][:-1]
    with pytest.raises(NeurodynError, match="decay table"):
        GFR.from_params(p)


def test_predict_rejects_2d_current():
    with pytest.raises(NeurodynError, match="1-D"):
        GFR().predict(np.zeros((3, 4)))


def test_predict_on_an_empty_current_is_empty():
    assert GFR().predict(np.zeros(0)).shape == (0,)
