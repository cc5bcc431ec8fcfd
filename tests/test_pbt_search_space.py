"""Initial sampling and explore of PBT hyperparameters."""

import numpy as np
import pytest
from scipy import stats

from neurodyn.config import DEFAULT_SEARCH_SPACE, SearchSpec, validate_run_config, without_controller_search
from neurodyn.errors import NeurodynError
from neurodyn.pbt.search_space import as_config_value, explore, initial_values, limit


def _rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("method, param", [("perturb", 0.9), ("resample", None)])
def test_explore_never_leaves_the_range_when_limited(method, param):
    spec = SearchSpec(explore_range=[0.3, 0.9], explore_method=method, explore_param=param)
    rng, value = _rng(), 0.88
    for _ in range(2000):
        value = explore(value, spec, rng)
        assert 0.3 <= value <= 0.9


def test_unlimited_perturb_can_leave_the_range_and_stays_within_the_factor():
    spec = SearchSpec(explore_range=[0.3, 0.9], explore_param=0.5, limit_explore=False)
    rng = _rng()
    values = [explore(0.88, spec, rng) for _ in range(500)]
    assert max(values) > 0.9
    assert all(0.88 * 0.5 <= v <= 0.88 * 1.5 for v in values)


def test_perturb_factor_is_uniform_in_one_plus_minus_param():
    spec = SearchSpec(explore_range=[1e-6, 1e6], explore_param=0.2)
    rng = _rng(3)
    factors = np.array([explore(1.0, spec, rng) for _ in range(4000)])
    assert stats.kstest(factors, stats.uniform(loc=0.8, scale=0.4).cdf).pvalue > 0.01


def test_not_explorable_keeps_its_value():
    spec = SearchSpec(explore_range=[0.0, 1.0], explorable=False)
    assert explore(0.42, spec, _rng()) == 0.42


def test_allowed_value_lists_are_respected():
    spec = SearchSpec(explore_range=[16, 32, 64, 128], init_sample_mode="rand")
    rng = _rng()
    assert set(initial_values(spec, 50, rng)) <= {16, 32, 64, 128}
    assert all(explore(64, spec, rng) in (16, 32, 64, 128) for _ in range(200))
    assert limit(50, spec) == 64


def test_init_modes():
    rng = _rng(1)
    uniform = np.array(initial_values(SearchSpec(explore_range=[2.0, 4.0], init_sample_mode="rand"), 4000, rng))
    assert uniform.min() >= 2 and uniform.max() <= 4
    assert stats.kstest(uniform, stats.uniform(loc=2, scale=2).cdf).pvalue > 0.01
    log = np.array(initial_values(SearchSpec(explore_range=[1e-5, 1.0], init_sample_mode="logrand"), 4000, rng))
    assert log.min() >= 1e-5 and log.max() <= 1.0
    assert stats.kstest(np.log10(log), stats.uniform(loc=-5, scale=5).cdf).pvalue > 0.01
    grid = initial_values(SearchSpec(explore_range=[0.3, 0.9], init_sample_mode="grid"), 4, rng)
    np.testing.assert_allclose(sorted(grid), [0.3, 0.5, 0.7, 0.9])
    log_grid = initial_values(SearchSpec(explore_range=[1e-4, 1.0], init_sample_mode="grid"), 5, rng)
    np.testing.assert_allclose(sorted(log_grid), [1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    assert initial_values(SearchSpec(explore_range=[1e-5, 5e-3], init_sample_mode=4e-3), 3, rng) == [4e-3] * 3


@pytest.mark.parametrize("settings, message", [
    ({"explore_range": [0.9, 0.3]}, "low < high"),
    ({"explore_range": [0.0, 1.0], "init_sample_mode": "logrand"}, "positive"),
    ({"explore_range": [0.1, 1.0], "explore_param": 1.5}, "between 0 and 1"),
    ({"explore_range": [0.1, 1.0], "init_sample_mode": 5.0}, "outside"),
    ({"explore_range": [0.1, 1.0], "init_sample_mode": "sometimes"}, "rand"),
    ({"explore_range": [0.1, 1.0], "explore_metod": "perturb"}, "explore_metod"),
])
def test_invalid_search_settings_name_the_hyperparameter(settings, message):
    with pytest.raises(NeurodynError, match=f"keep_ratio.*{message}|{message}.*keep_ratio"):
        validate_run_config({"keep_ratio": settings}, source="cfg.yaml")


def test_run_config_splits_keys_and_defaults_to_the_published_search_space():
    config = validate_run_config({"run_name": "r", "num_workers": 4, "Duration": 30, "keep_ratio": 0.6, "co_dim": 2})
    assert config.pbt.num_workers == 4 and config.pbt.Duration == 30
    assert config.model.keep_ratio == 0.6 and config.model.co_dim == 2
    assert set(config.search_space) == set(DEFAULT_SEARCH_SPACE) - {"keep_ratio"}
    autonomous = validate_run_config({"run_name": "r", "co_dim": 0})
    assert "kl_co_weight" not in autonomous.search_space and "l2_con_scale" not in autonomous.search_space
    # co_dim 'auto' (the default): the controller's keys stay until the data decide.
    undecided = validate_run_config({"run_name": "r"})
    assert set(undecided.search_space) == set(DEFAULT_SEARCH_SPACE)
    resolved = undecided.model.model_copy(update={"co_dim": 0})
    assert set(without_controller_search(undecided.search_space, resolved)) == set(autonomous.search_space)
    assert without_controller_search(undecided.search_space, resolved.model_copy(update={"co_dim": 4})) \
        == undecided.search_space


def test_run_config_errors():
    with pytest.raises(NeurodynError, match="did you mean 'epochs_per_generation'"):
        validate_run_config({"epochs_per_generaton": 5})
    with pytest.raises(NeurodynError, match="cannot be searched"):
        validate_run_config({"gen_dim": {"explore_range": [32, 64]}})


def test_integer_hyperparameters_are_cast():
    assert as_config_value("batch_size", 100.6) == 101
    assert isinstance(as_config_value("keep_prob", 1), float)


def test_the_shipped_autolfads_config_is_valid_and_spells_out_the_published_space():
    from pathlib import Path

    from neurodyn.config import load_run_config

    config = load_run_config(Path(__file__).resolve().parents[1] / "configs" / "autolfads_lorenz.yaml")
    assert set(config.search_space) == set(DEFAULT_SEARCH_SPACE)
    for key, spec in DEFAULT_SEARCH_SPACE.items():
        assert config.search_space[key].explore_range == spec.explore_range
        assert config.search_space[key].init_sample_mode == spec.init_sample_mode


def test_the_shipped_radical_config_searches_the_gamma_settings():
    from pathlib import Path

    from neurodyn.config import load_run_config

    config = load_run_config(Path(__file__).resolve().parents[1] / "configs" / "radical_lorenz.yaml")
    assert config.model.observation == "zig" and config.model.s_min == "auto"
    assert {"gamma_prior", "l2_gamma_distance_scale"} <= set(config.search_space)
