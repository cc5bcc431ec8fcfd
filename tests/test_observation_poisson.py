import numpy as np
import pytest
import torch
from scipy import stats

from neurodyn.errors import NeurodynError
from neurodyn.observation.base import masked_nll_sum
from neurodyn.observation.poisson import Poisson, poisson_nll


def test_poisson_nll_matches_scipy_logpmf():
    rng = np.random.default_rng(1)
    rates = rng.uniform(0.01, 5.0, size=200)
    counts = rng.poisson(rates).astype(float)
    ours = poisson_nll(torch.log(torch.tensor(rates)), torch.tensor(counts)).numpy()
    np.testing.assert_allclose(ours, -stats.poisson.logpmf(counts, rates), rtol=1e-10)


def test_poisson_model_mean_and_readout_layout():
    model = Poisson(num_neurons=3)
    readout = torch.log(torch.tensor([[[0.5], [2.0], [1.0]]]))  # (B=1, N=3, P=1)
    np.testing.assert_allclose(model.mean(readout).numpy(), [[0.5, 2.0, 1.0]], rtol=1e-6)
    nll = model.elementwise_nll(readout, torch.tensor([[0.0, 3.0, 1.0]]))
    expected = -stats.poisson.logpmf([0, 3, 1], [0.5, 2.0, 1.0])
    np.testing.assert_allclose(nll.numpy()[0], expected, rtol=1e-6)


def test_masked_sum_ignores_masked_nonfinite_entries_in_value_and_gradient():
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    nll = torch.stack([x[0] * 2, x[1] + float("nan"), x[2] * 3])  # masked middle entry is NaN
    total = masked_nll_sum(nll, torch.tensor([1.0, 0.0, 1.0]))
    total.backward()
    assert total.item() == pytest.approx(2.0 + 9.0)
    assert torch.isfinite(x.grad).all()
    assert x.grad.tolist() == [2.0, 0.0, 3.0]


@pytest.mark.parametrize("bad, word", [(-1.0, "negative"), (1.5, "non-integer")])
def test_poisson_rejects_invalid_counts(bad, word):
    data = np.array([[[0.0, np.nan, bad]]])
    with pytest.raises(NeurodynError, match=word):
        Poisson(3).validate_targets(data, "x.h5")


def test_pairwise_log_likelihood_matches_scipy_and_the_generic_blocks():
    rng = np.random.default_rng(3)
    rates = rng.uniform(0.05, 3.0, size=(4, 6, 5))          # 4 candidate readouts, T=6, N=5
    counts = rng.poisson(1.0, size=(3, 6, 5)).astype(float)  # 3 trials
    observed = rng.random((3, 6, 5)) < 0.6
    expected = np.array([[stats.poisson.logpmf(counts[b], rates[m])[observed[b]].sum() for m in range(4)]
                         for b in range(3)])
    model = Poisson(num_neurons=5)
    readout = torch.log(torch.tensor(rates)).unsqueeze(-1)
    args = (readout, torch.tensor(counts), torch.tensor(observed, dtype=torch.float64))
    np.testing.assert_allclose(model.pairwise_log_likelihood(*args).numpy(), expected, rtol=1e-10)
    # The base class's entry-by-entry blocks (one trial per block here) give the same matrix.
    generic = super(Poisson, model).pairwise_log_likelihood(*args, max_entries=1)
    np.testing.assert_allclose(generic.numpy(), expected, rtol=1e-10)


def test_nll_up_to_constant_drops_only_log_factorial_of_the_counts():
    from scipy.special import gammaln

    rng = np.random.default_rng(3)
    counts = torch.as_tensor(rng.poisson(2.0, (4, 6, 5)).astype(np.float32))
    readout = torch.as_tensor(rng.normal(0.5, 0.8, (4, 6, 5, 1)).astype(np.float32), dtype=torch.float32)
    model = Poisson(5)
    full = model.elementwise_nll(readout, counts)
    reduced = model.elementwise_nll_up_to_constant(readout, counts)
    np.testing.assert_allclose((full - reduced).numpy(), gammaln(counts.numpy() + 1.0), rtol=1e-5, atol=1e-5)
    # The same gradient with respect to the readout.
    grads = [torch.autograd.grad(f(readout.requires_grad_(), counts).sum(), readout)[0]
             for f in (model.elementwise_nll, model.elementwise_nll_up_to_constant)]
    torch.testing.assert_close(grads[0], grads[1])
