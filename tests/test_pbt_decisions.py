"""The population's decisions after a generation, without training: chosen metrics in, decisions out;
and the driver with a fake engine and the real store."""

import copy
import csv
import math

import numpy as np
import pytest
import yaml
from scipy import stats

from neurodyn.config import LfadsConfig, PbtSettings, SearchSpec, load_run_config, validate_run_config
from neurodyn.errors import NeurodynError
from neurodyn.pbt.decisions import decide_after_generation
from neurodyn.pbt.engines import WorkerResult, assign_devices
from neurodyn.pbt.population import StoppingRule
from neurodyn.pbt.run import run_pbt
from neurodyn.pbt.search_space import explore, keep_valid
from neurodyn.runs.checkpoint import encode_state
from neurodyn.train.trainer import LfadsTrainer

from pbt_helpers import TINY_RUN, write_config, write_tiny_dataset

SPACE = {"keep_ratio": SearchSpec(explore_range=[0.3, 0.9], explore_param=0.2),
         "keep_prob": SearchSpec(explore_range=[0.9, 1.0], explore_param=0.9, limit_explore=False)}


def _decide(metrics, best=math.inf, stopping=None, generations_done=1, seed=0, **settings):
    hps = [{"keep_ratio": 0.5, "keep_prob": 0.95 + 0.01 * w} for w in range(len(metrics))]
    stopping = stopping or StoppingRule(patience=3)
    return decide_after_generation(metrics, hps, SPACE, best, stopping,
                                   PbtSettings(**{"max_generations": 10, **settings}), generations_done,
                                   np.random.default_rng(seed)), hps


def test_the_best_worker_is_tracked_against_the_best_so_far():
    decision, _ = _decide([3.0, 1.0, 2.0])
    assert decision.leader == 1 and decision.new_best
    decision, _ = _decide([3.0, 1.0, 2.0], best=0.5)
    assert decision.leader == 1 and not decision.new_best


def test_copies_follow_the_metrics_and_a_diverged_worker_is_always_replaced():
    for seed in range(20):
        decision, hps = _decide([3.0, math.nan, 2.0, 1.0], seed=seed)
        assert 1 in decision.copies and decision.copies[1] != 1
        metrics = [3.0, math.inf, 2.0, 1.0]
        for copier, source in decision.copies.items():
            assert metrics[source] < metrics[copier]
        assert 3 not in decision.copies  # the best never copies
        for worker, values in enumerate(decision.hyperparameters):
            if worker not in decision.copies:
                assert values == hps[worker]


def test_truncation_copies_the_top_into_the_bottom():
    decision, _ = _decide([4.0, 3.0, 2.0, 1.0], exploit_method="truncation", truncation_fraction=0.25)
    assert decision.copies == {0: 3}


def test_stopping_and_max_generations_are_decided_without_changing_the_input():
    rule = StoppingRule(patience=2, best=1.0, generations_without_best=1, history=[1.0])
    before = copy.deepcopy(rule)
    decision, _ = _decide([2.0, 3.0], best=1.0, stopping=rule)
    assert decision.stop_reason.startswith("no improvement") and rule == before
    decision, _ = _decide([0.5, 3.0], generations_done=10)
    assert decision.stop_reason == "max_generations (10) reached"
    decision, _ = _decide([0.5, 3.0], generations_done=3)
    assert decision.stop_reason is None


def test_unlimited_explore_stays_inside_the_values_the_config_accepts_and_says_so():
    notes, values = [], []
    for seed in range(30):
        decision, _ = _decide([5.0, 1.0, 4.0, 3.0], seed=seed)
        notes += decision.notes
        values += [hp["keep_prob"] for hp in decision.hyperparameters]
    assert max(values) == 1.0 and all(0 < v <= 1.0 for v in values)
    assert any("keep_prob" in note and "kept at 1" in note for note in notes)
    LfadsConfig(keep_prob=max(values))  # accepted by the schema


def test_keep_valid_uses_the_schema_bounds():
    assert keep_valid("keep_prob", 1.3) == (1.0, "keep_prob 1.3 is outside the values the config accepts; kept at 1")
    assert keep_valid("keep_prob", 0.7) == (0.7, "")
    low, _ = keep_valid("learning_rate_init", -1.0)
    assert 0 < low < 1e-9
    assert keep_valid("batch_size", 0.2)[0] == 1.0


@pytest.mark.parametrize("mode, log", [("rand", False), ("logrand", True)])
def test_resample_draws_from_the_distribution_init_sample_mode_names(mode, log):
    spec = SearchSpec(explore_range=[1e-4, 1.0], init_sample_mode=mode, explore_method="resample")
    rng = np.random.default_rng(0)
    draws = np.array([explore(0.5, spec, rng) for _ in range(3000)])
    if log:
        assert stats.kstest(np.log10(draws), stats.uniform(loc=-4, scale=4).cdf).pvalue > 0.01
    else:
        assert stats.kstest(draws, stats.uniform(loc=1e-4, scale=1.0 - 1e-4).cdf).pvalue > 0.01


def test_resample_refuses_an_explore_param_and_perturb_defaults_to_0_3():
    with pytest.raises(NeurodynError, match="explore_param must be None"):
        validate_run_config({"keep_ratio": {"explore_range": [0.3, 0.9], "explore_method": "resample",
                                            "explore_param": 0.3}})
    config = validate_run_config({"keep_ratio": {"explore_range": [0.3, 0.9], "explore_method": "resample"},
                                  "keep_prob": {"explore_range": [0.5, 1.0]}})
    assert config.search_space["keep_ratio"].explore_param is None
    assert config.search_space["keep_prob"].explore_param == 0.3


def test_an_explore_range_outside_the_valid_values_is_refused():
    with pytest.raises(NeurodynError, match=r"explore_range \[0.5, 1.2\] of 'keep_prob' goes outside"):
        validate_run_config({"keep_prob": {"explore_range": [0.5, 1.2]}})


def test_workers_are_placed_on_the_gpus_in_turn():
    assert assign_devices(5, 2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert assign_devices(3, 0) == [None, None, None]
    assert assign_devices(2, 4, "cpu") == [None, None]


# -- the driver with a fake engine ---------------------------------------------------------------------

class FakeEngine:
    """Returns chosen metrics (one list per generation) and a fixed small trainer state for every worker."""

    def __init__(self, metrics_per_generation, state):
        self.metrics = list(metrics_per_generation)
        self.state = state
        self.jobs_seen = []

    def run(self, jobs):
        metrics = self.metrics.pop(0)
        self.jobs_seen.append(jobs)
        for job in reversed(jobs):  # in any order, as processes finish
            yield WorkerResult(job.worker, job.generation, metrics[job.worker], self.state,
                               [{"epoch": job.generation}], 0.01)

    def close(self):
        pass

    def terminate(self):
        pass


def test_the_driver_applies_the_decisions_to_the_chosen_metrics(tmp_path):
    data = write_tiny_dataset(tmp_path)
    run_config = load_run_config(write_config(tmp_path, num_workers=3, max_generations=3))
    base = {k: v for k, v in TINY_RUN.items() if k in LfadsConfig.model_fields} | {"event_delay_bins": 0, "forward_bins": 0}
    from neurodyn.data.seed_format import read_dataset

    dataset = read_dataset(data)
    state = encode_state(LfadsTrainer(LfadsConfig(**base), dataset.data[:20], dataset.data[20:]).state_dict())
    engine = FakeEngine([[2.0, 1.0, 3.0], [math.nan, 0.5, 0.7], [0.9, 0.8, 0.6]], state)
    result = run_pbt(run_config, data, tmp_path / "res", progress=False, echo=lambda line: None,
                     engine_factory=lambda data, log: engine)
    assert result.best_metric == 0.5 and result.generations == 3
    chosen = yaml.safe_load((tmp_path / "res" / "pbt_best_model" / "hyperparameters.yaml").read_text())
    assert (chosen["generation"], chosen["worker"]) == (1, 1)
    rows = list(csv.DictReader((tmp_path / "res" / "tiny" / "pbt_log.csv").open()))
    assert [float(r["metric"]) for r in rows if r["generation"] == "1"][1] == 0.5
    # the worker that diverged in generation 1 starts generation 2 from another worker's state
    assert [r for r in rows if r["generation"] == "2" and r["worker"] == "0"][0]["copied_from"] in ("1", "2")
    assert engine.jobs_seen[1][0].start_state is not None


def test_ramps_complete_when_the_last_epoch_trained_with_full_weights():
    from neurodyn.pbt.decisions import ramps_complete_after

    model = LfadsConfig(kl_increase_epochs=80, l2_increase_epochs=60)
    # LfadsTrainer counts epoch index e as ramped once e >= 80: after 81 epochs.
    assert [ramps_complete_after(g, 25, model) for g in range(1, 6)] == [False, False, False, True, True]
    assert not ramps_complete_after(8, 10, model) and ramps_complete_after(9, 10, model)
    rule = StoppingRule(patience=1, best=1.0, generations_without_best=0, history=[1.0])
    decision, _ = _decide([2.0, 3.0], best=1.0, stopping=rule)
    assert decision.stop_reason is not None  # a generation after the ramps counts towards patience
    decision = decide_after_generation([2.0, 3.0], [{"keep_ratio": 0.5, "keep_prob": 0.95}] * 2, SPACE, 1.0, rule,
                                       PbtSettings(max_generations=10), 1, np.random.default_rng(0),
                                       ramps_complete=False)
    assert decision.stop_reason is None and decision.stopping == rule  # one before them does not


def test_a_best_from_before_the_ramps_is_replaced_by_the_first_leader_after_them(tmp_path):
    data = write_tiny_dataset(tmp_path)
    # Two epochs per generation and ramps over 4 epochs: generations 0 and 1 end before the ramps do.
    run_config = load_run_config(write_config(tmp_path, num_workers=3, max_generations=4, num_no_best_to_stop=1,
                                              kl_increase_epochs=4, l2_increase_epochs=4))
    base = {k: v for k, v in TINY_RUN.items() if k in LfadsConfig.model_fields} | {"event_delay_bins": 0, "forward_bins": 0}
    from neurodyn.data.seed_format import read_dataset

    dataset = read_dataset(data)
    state = encode_state(LfadsTrainer(LfadsConfig(**base), dataset.data[:20], dataset.data[20:]).state_dict())
    # Unregularised early generations score best; after the ramps the metric is higher.
    engine = FakeEngine([[0.2, 0.3, 0.4], [0.25, 0.1, 0.3], [0.9, 0.8, 0.7], [0.95, 0.85, 0.75]], state)
    lines = []
    result = run_pbt(run_config, data, tmp_path / "res", progress=False, echo=lines.append,
                     engine_factory=lambda data, log: engine)
    chosen = yaml.safe_load((tmp_path / "res" / "pbt_best_model" / "hyperparameters.yaml").read_text())
    assert (chosen["generation"], chosen["worker"]) == (2, 2) and result.best_metric == 0.7
    # Patience of 1 counted only after the ramps: generation 3 is no better, so the run stops there.
    assert result.generations == 4 and "no improvement" in result.finished
    assert any("provisional" in line for line in lines if line.startswith("generation 1:"))


def test_worker_zero_starts_from_the_config_and_the_others_are_drawn():
    from neurodyn.pbt.decisions import initial_population

    space = {"keep_prob": SearchSpec(explore_range=[0.4, 1.0], init_sample_mode="rand"),
             "l2_gen_scale": SearchSpec(explore_range=[1e-3, 1.0], init_sample_mode="logrand"),
             "learning_rate_init": SearchSpec(explore_range=[1e-5, 5e-3], init_sample_mode=4e-3)}
    model = LfadsConfig(keep_prob=0.95, l2_gen_scale=1e-4, learning_rate_init=2e-3)
    workers = initial_population(space, model, 6, True, np.random.default_rng(0))
    # the config's values, clipped into the range (l2_gen_scale 1e-4 lies below it)
    assert workers[0] == {"keep_prob": 0.95, "l2_gen_scale": 1e-3, "learning_rate_init": 2e-3}
    assert all(w["learning_rate_init"] == 4e-3 for w in workers[1:])
    assert len({w["keep_prob"] for w in workers[1:]}) == 5
    drawn = initial_population(space, model, 6, False, np.random.default_rng(0))
    assert drawn[1:] == workers[1:] and drawn[0]["keep_prob"] != 0.95


def test_a_run_starts_worker_zero_from_the_config(tmp_path):
    data = write_tiny_dataset(tmp_path)
    run_config = load_run_config(write_config(tmp_path, num_workers=3, max_generations=1, epochs_per_generation=1,
                                              keep_prob={"explore_range": [0.4, 1.0], "init_sample_mode": "rand"}))
    run_pbt(run_config, data, tmp_path / "res", progress=False, echo=lambda line: None)
    rows = list(csv.DictReader((tmp_path / "res" / "tiny" / "pbt_log.csv").open()))
    assert float(rows[0]["keep_prob"]) == LfadsConfig().keep_prob


def test_a_run_refused_before_its_first_generation_leaves_no_folder(tmp_path):
    """An engine that cannot start (e.g. no Ray cluster at the address given) refuses a new run in one
    line and leaves nothing behind; a run that has saved a generation keeps everything (it continues)."""
    from neurodyn.errors import NeurodynError

    data = write_tiny_dataset(tmp_path)
    run_config = load_run_config(write_config(tmp_path, num_workers=3, max_generations=3))

    def no_cluster(data, log):
        raise NeurodynError("cannot connect to the Ray cluster at '10.0.0.1:6379'")

    out = tmp_path / "res"
    with pytest.raises(NeurodynError, match="cannot connect"):
        run_pbt(run_config, data, out, progress=False, echo=lambda line: None, engine_factory=no_cluster)
    assert not out.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    with pytest.raises(NeurodynError):
        run_pbt(run_config, data, existing, progress=False, echo=lambda line: None, engine_factory=no_cluster)
    assert sorted(p.name for p in existing.iterdir()) == [".neurodyn.lock", "notes.txt"]
    # A run that saved a generation before the refusal keeps it, to continue from.
    from neurodyn.data.seed_format import read_dataset

    base = {k: v for k, v in TINY_RUN.items() if k in LfadsConfig.model_fields} | {"event_delay_bins": 0, "forward_bins": 0}
    dataset = read_dataset(data)
    state = encode_state(LfadsTrainer(LfadsConfig(**base), dataset.data[:20], dataset.data[20:]).state_dict())
    engine = FakeEngine([[2.0, 1.0, 3.0]], state)

    def one_generation_then_refused(jobs):
        if not engine.metrics:
            raise NeurodynError("the Ray cluster went away")
        yield from FakeEngine.run(engine, jobs)

    engine.run = one_generation_then_refused
    with pytest.raises(NeurodynError, match="went away"):
        run_pbt(run_config, data, out, progress=False, echo=lambda line: None, engine_factory=lambda d, log: engine)
    assert (out / "run.json").is_file() and (out / "tiny" / "run.log").is_file()
