"""Records in the published dataset's layout (issue #19): load, predict, write, read back.

The published model's ``get_params()`` gives ``a`` and ``b`` as (1, n) nested lists, ``poly_coeff`` as
(1, degree + 1) and ``max_current``, ``max_firing_rate`` and the threshold ``b`` as one-element lists;
the degree is read as the second dimension of ``poly_coeff`` minus one. The records here are built by
hand in that layout, and their predictions are checked against a NumPy statement of the published
forward pass written out independently of neurodyn's model.
"""

import json
import math
import re

import numpy as np
import pytest

from neurodyn.errors import NeurodynError
from neurodyn.gfr import GFR, df_from_json, load_gfr_model
from neurodyn.gfr.dataset import read_dataset_json, write_dataset_json
from neurodyn.gfr.model import parse_params

#: (bin size, activation bin size) pairs of the published dataset's table, in ms.
PUBLISHED_PAIRS = [(10, 20), (10, 100), (20, 20), (20, 100), (50, 100), (100, 100)]
DEGREES = [1, 2, 3]
CASES = [(bin_size, actv, degree) for bin_size, actv in PUBLISHED_PAIRS for degree in DEGREES]
N_BINS = 300


def published_params(rng, bin_size, activation_bin_size, degree):
    """One neuron's parameters exactly as the published get_params() lays them out.

    The input weight of timescale i is ``u_i n lambda_i`` so that at steady state it adds ``u_i I`` to
    mean(h); the feedback weight is chosen the same way, so that at the maximum rate timescale i lowers
    mean(h) by ``k_i sigma`` (adaptation). That keeps the rate away from both 0 and gamma.
    """
    taus = [tau for tau in (10, 20, 50, 100, 200, 500, 1000, 2000) if tau >= bin_size]
    ds = [1.0] + [1.0 - math.exp(-bin_size / tau) for tau in taus]
    n = len(ds)
    lam = np.array(ds)
    sigma, gamma = float(rng.uniform(300, 500)), float(rng.uniform(0.05, 0.2))
    a = n * lam * np.concatenate([[rng.uniform(0.5, 0.8)], rng.uniform(0.0, 0.15, n - 1)])
    b = -n * lam * rng.uniform(0.0, 0.3, n) * sigma / (1000 * gamma)
    b[0] = 0.0
    # a_0 small and a_1 large, so g crosses 0 (silent bins) a little below the threshold
    coeff = np.concatenate([[rng.uniform(0.1, 0.3)], [rng.uniform(1.0, 1.5)], rng.uniform(0.3, 0.8, degree - 1)])
    return {
        "a": [a.tolist()],
        "b": [b.tolist()],
        "ds": ds,
        "bin_size": bin_size,
        "g": {"max_current": [sigma], "max_firing_rate": [gamma], "poly_coeff": [coeff.tolist()],
              "b": [float(rng.uniform(20, 80))], "bin_size": activation_bin_size},
    }


def published_record(cell_id, params, bin_size=None, actv_bin_size=None):
    return {"cell_id": cell_id, "cre-line": "Sst-IRES-Cre", "bin_size": bin_size or params["bin_size"],
            "actv_bin_size": actv_bin_size or params["g"]["bin_size"], "val_evr": 0.81, "test_evr": 0.78,
            "train_loss": 0.21, "test_loss": 0.25, "params": params}


def published_forward(current, params):
    """The published forward pass in float64, reading the published layout directly.

    h <- (1 - lambda) h + a I_t + 1000 b f_{t-1};  f_t = gamma relu(tanh(sum_k c_k^2 ((mean h - b_g) / sigma)^k)).
    """
    a, b = np.array(params["a"])[0], np.array(params["b"])[0]
    lam = np.array(params["ds"])
    g = params["g"]
    squared = np.array(g["poly_coeff"])[0] ** 2
    sigma, gamma, threshold = g["max_current"][0], g["max_firing_rate"][0], g["b"][0]
    h, f = np.zeros_like(a), 0.0
    rates = np.empty(len(current))
    for t, i_t in enumerate(current):
        h = (1.0 - lam) * h + a * i_t + 1000.0 * b * f
        poly = np.polynomial.polynomial.polyval((h.mean() - threshold) / sigma, squared)
        f = gamma * max(math.tanh(poly), 0.0)
        rates[t] = f
    return rates


def noisy_current(rng, n_bins=N_BINS):
    """Mean current per bin (pA): a slow step plus white noise, so the rate both rises and falls to 0."""
    step = np.where(np.arange(n_bins) % 100 < 60, 200.0, -120.0)
    return step + rng.normal(0.0, 80.0, n_bins)


def flat_form(params):
    """The flat layout neurodyn wrote before issue #19, converted by hand."""
    g = params["g"]
    return {"a": params["a"][0], "b": params["b"][0], "ds": params["ds"], "bin_size": params["bin_size"],
            "g": {"max_current": g["max_current"][0], "max_firing_rate": g["max_firing_rate"][0],
                  "poly_coeff": g["poly_coeff"][0], "b": g["b"][0], "bin_size": g["bin_size"]}}


def case_rng(bin_size, actv, degree):
    return np.random.default_rng(1000 * bin_size + 10 * actv + degree)


@pytest.mark.parametrize("bin_size, actv, degree", CASES)
def test_published_record_predicts_the_published_forward_pass(bin_size, actv, degree):
    rng = case_rng(bin_size, actv, degree)
    params = published_params(rng, bin_size, actv, degree)
    current = noisy_current(rng)
    expected = published_forward(current, params)
    gamma = params["g"]["max_firing_rate"][0]
    # the case exercises the whole activation: silent bins, and a rate that moves well away from 0
    assert 0.05 < np.mean(expected == 0) < 0.9 and np.std(expected) > 0.1 * gamma

    model = load_gfr_model(df_from_json([published_record(7, params)]), 7, bin_size, actv)
    assert model.g.degree == degree and model.n_timescales == len(params["ds"])
    predicted = model.predict(current)
    assert np.max(np.abs(predicted - expected)) / np.max(np.abs(expected)) < 1e-4


@pytest.mark.parametrize("bin_size, actv, degree", CASES)
def test_published_record_survives_a_write_read_round_trip(tmp_path, bin_size, actv, degree):
    rng = case_rng(bin_size, actv, degree)
    params = published_params(rng, bin_size, actv, degree)
    current = noisy_current(rng)
    first = load_gfr_model([published_record(7, params)], 7, bin_size, actv)

    path = tmp_path / "gfr_dataset.json"
    write_dataset_json(path, [published_record(7, params)])
    with open(path) as f:
        on_disk = json.load(f)
    # exactly the published layout and values: what the published code reads, neurodyn writes
    assert on_disk == [published_record(7, params)]
    assert np.shape(on_disk[0]["params"]["g"]["poly_coeff"])[1] - 1 == degree

    again = load_gfr_model(df_from_json(on_disk), 7, bin_size, actv)
    np.testing.assert_array_equal(again.predict(current), first.predict(current))
    # the model's own get_params() is the published layout too, and rebuilds the same model
    exported = again.get_params()
    assert jsonable_shapes(exported) == jsonable_shapes(params)
    np.testing.assert_allclose(np.array(exported["a"]), np.array(params["a"]), rtol=1e-6)
    np.testing.assert_array_equal(GFR.from_params(exported).predict(current), again.predict(current))


def jsonable_shapes(params):
    g = params["g"]
    return ({k: np.shape(params[k]) for k in ("a", "b", "ds")}, params["bin_size"],
            {k: np.shape(g[k]) for k in ("max_current", "max_firing_rate", "poly_coeff", "b")}, g["bin_size"])


@pytest.mark.parametrize("bin_size, actv", PUBLISHED_PAIRS)
def test_flat_records_still_load_and_are_rewritten_in_the_published_layout(tmp_path, bin_size, actv):
    degree = 1 + PUBLISHED_PAIRS.index((bin_size, actv)) % 3
    rng = case_rng(bin_size, actv, degree)
    params = published_params(rng, bin_size, actv, degree)
    current = noisy_current(rng)
    flat = load_gfr_model([published_record(3, flat_form(params))], 3, bin_size, actv)
    nested = load_gfr_model([published_record(3, params)], 3, bin_size, actv)
    np.testing.assert_array_equal(flat.predict(current), nested.predict(current))

    path = tmp_path / "gfr_dataset.json"
    path.write_text(json.dumps([published_record(3, flat_form(params))]))  # a file neurodyn wrote before
    write_dataset_json(path, [published_record(4, params)])  # merging rewrites the old record too
    assert [r["params"] for r in read_dataset_json(path)] == [params, params]


def test_a_file_of_every_published_pair_groups_and_loads_each_cell(tmp_path):
    records, expected = [], {}
    for index, (bin_size, actv, degree) in enumerate(CASES):
        params = published_params(case_rng(bin_size, actv, degree), bin_size, actv, degree)
        records.append(published_record(100 + index, params))
        expected[(100 + index, bin_size, actv)] = params
    write_dataset_json(tmp_path / "gfr_dataset.json", records[::-1])
    with open(tmp_path / "gfr_dataset.json") as f:
        dataset = df_from_json(json.load(f))
    assert list(dataset) == PUBLISHED_PAIRS
    assert all(len(df) == len(DEGREES) for df in dataset.values())
    assert list(dataset[(10, 20)].columns) == ["cell_id", "cre-line", "bin_size", "actv_bin_size", "val_evr",
                                               "test_evr", "train_loss", "test_loss", "params"]
    current = noisy_current(np.random.default_rng(5), 120)
    for (cell_id, bin_size, actv), params in expected.items():
        model = load_gfr_model(dataset, cell_id, bin_size, actv)
        reference = published_forward(current, params)
        assert np.max(np.abs(model.predict(current) - reference)) <= 1e-4 * np.max(reference)


def corrupt(params, change):
    broken = json.loads(json.dumps(params))
    change(broken)
    return broken


# (how the published params are broken, the key the one-line error must name, words it must say)
MALFORMED = [
    (lambda p: p["g"].update(poly_coeff=[p["g"]["poly_coeff"][0]] * 2), "g.poly_coeff", r"shape \(2, 3\)"),
    (lambda p: p["g"].update(poly_coeff=[[0.5, 1.0], [0.2]]), "g.poly_coeff", "not a rectangular"),
    (lambda p: p["g"].update(poly_coeff=[]), "g.poly_coeff", r"shape \(0,\)"),
    (lambda p: p["a"][0].pop(), "a", r"shape \(7,\)"),
    (lambda p: p.update(b=[p["b"][0], p["b"][0]]), "b", r"shape \(2, 8\)"),
    (lambda p: p["a"][0].__setitem__(2, "x"), "a", "non-numbers"),
    (lambda p: p["b"][0].__setitem__(1, float("nan")), "b", "non-finite"),
    (lambda p: p["g"].update(max_current=[300.0, 400.0]), "g.max_current", r"shape \(2,\)"),
    (lambda p: p["g"].update(max_current=[0.0]), "g.max_current", "sigma > 0"),
    (lambda p: p["g"].update(max_firing_rate=None), "g.max_firing_rate", "non-numbers"),
    (lambda p: p["g"].update(b={"value": 3}), "g.b", "non-numbers"),
    (lambda p: p["g"].pop("b"), "g.b", "is missing"),
    (lambda p: p["g"].update(bin_size="20"), "g.bin_size", "positive integer"),
    (lambda p: p.pop("g"), "g", "is missing"),
    (lambda p: p.update(g=[1, 2]), "g", "is list, expected an object with key"),
    (lambda p: p.update(ds=p["ds"][:-1]), "ds", "decay table for bin size 20"),
    (lambda p: p.update(bin_size=30), "bin_size", "expected one of 10, 20, 50, 100"),
]


@pytest.mark.parametrize("change, key, words", MALFORMED)
def test_malformed_params_are_one_line_naming_the_cell_and_the_key(change, key, words):
    params = corrupt(published_params(np.random.default_rng(0), 20, 20, 2), change)
    record = published_record(4242, params, 20, 20)
    for load in (lambda: df_from_json([record]), lambda: load_gfr_model([record], 4242, 20, 20),
                 lambda: GFR.from_params(params, source="cell 4242")):
        with pytest.raises(NeurodynError) as error:
            load()
        message = str(error.value)
        assert "\n" not in message and "cell 4242" in message and f"'{key}'" in message
        assert re.search(words, message), message


def test_record_and_params_bin_sizes_must_agree():
    params = published_params(np.random.default_rng(1), 20, 100, 3)
    record = published_record(9, params)
    record["actv_bin_size"] = 20
    with pytest.raises(NeurodynError, match=r"cell 9\): 'actv_bin_size' is 20 but GFR parameter 'g.bin_size' is 100"):
        df_from_json([record])


def test_a_batch_of_neurons_must_share_the_degree():
    rng = np.random.default_rng(2)
    params = [published_params(rng, 20, 20, 1), published_params(rng, 20, 20, 2)]
    with pytest.raises(NeurodynError, match="neuron 1 has degree 2, neuron 0 has 1"):
        GFR.from_params(params)
    batched = GFR.from_params([params[0], flat_form(params[0])])  # layouts may mix in one batch
    current = noisy_current(rng, 50)
    rates = batched.predict(current)
    np.testing.assert_array_equal(rates[:, 0], rates[:, 1])


def test_parse_params_gives_both_layouts_back():
    params = published_params(np.random.default_rng(3), 50, 100, 3)
    cell = parse_params(params)
    assert cell.degree == 3 and cell.bin_size == 50 and cell.activation_bin_size == 100
    assert cell.published() == params
    assert cell.flat() == flat_form(params)
    assert parse_params(flat_form(params)).published() == params
