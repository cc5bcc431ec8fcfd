"""PopulationTrainer against single LfadsTrainers (float64): worker k follows the run of a single trainer
with the same seed and hyperparameters — log rows, weights, Adam state, schedule and random stream —
with different hyperparameters per worker, the controller, CD, SBTT, held-out neurons, measured
inputs, several sessions (stitching) and each observation model; a worker loading another's state
(PBT's exploit); states that LfadsTrainer accepts."""

import math

import numpy as np
import pytest
import torch

from neurodyn.config import LfadsConfig
from neurodyn.errors import NeurodynError
from neurodyn.lfads.augmentations import inference_masks
from neurodyn.train.population_trainer import PopulationTrainer
from neurodyn.train.trainer import LfadsTrainer
from pbt_helpers import replay_by_running

TINY = dict(ic_enc_dim=5, ci_enc_dim=4, con_dim=5, ic_dim=3, gen_dim=6, factors_dim=3, batch_size=8,
            valid_batch_size=5, device="cpu", batch_threads=1, kl_increase_epochs=1, l2_increase_epochs=2,
            learning_rate_patience=0, learning_rate_decay=0.5, max_grad_norm=5.0)
# Per-worker searched values: every worker of a population differs from the others.
WORKERS = [
    dict(seed=1, learning_rate_init=4e-3, keep_prob=0.9, keep_ratio=0.7, kl_ic_weight=1e-2, l2_gen_scale=1e-2),
    dict(seed=2, learning_rate_init=1e-2, keep_prob=1.0, keep_ratio=1.0, kl_co_weight=1e-3, l2_con_scale=0.0,
         loss_scale=10.0),
    dict(seed=3, learning_rate_init=2e-3, keep_prob=0.7, keep_ratio=0.5, cd_pass_fraction=0.3, l2_gen_scale=0.0,
         max_grad_norm=0.05),
]
TRIALS, STEPS, NEURONS, EXT = 20, 7, 5, 2


# Every test runs three times: PyTorch loops, compiled kernels, the GPU backend (conftest.recurrent_loops).
pytestmark = pytest.mark.usefixtures("recurrent_loops")


def _data(observation: str, missing: float = 0.2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (TRIALS, STEPS, NEURONS)
    if observation == "poisson":
        data = rng.poisson(1.2, shape).astype(np.float32)
    elif observation == "zig":
        data = np.where(rng.random(shape) < 0.4, rng.gamma(2.0, 0.5, shape) + 0.2, 0.0).astype(np.float32)
    else:
        data = rng.gamma(3.0, 0.4, shape).astype(np.float32)
    data[rng.random(shape) < missing] = np.nan  # SBTT: unobserved entries
    return data


def _configs(**case) -> list[LfadsConfig]:
    return [LfadsConfig(**{**TINY, **worker, **case}) for worker in WORKERS]


def _inputs(case: dict):
    data = _data(case.get("observation", "poisson"))
    ext = None
    if case.get("ext_input_dim"):
        ext = np.random.default_rng(5).normal(size=(TRIALS, STEPS, EXT)).astype(np.float32)
    split = 14
    inputs = dict(train_data=data[:split], valid_data=data[split:],
                  train_ext_input=None if ext is None else ext[:split],
                  valid_ext_input=None if ext is None else ext[split:])
    if case.get("session_neurons"):
        # Two sessions over the union of their neurons: a trial is observed on its session's block only.
        session = np.arange(TRIALS) % 2
        first = case["session_neurons"][0]
        data[session == 0, :, first:] = np.nan
        data[session == 1, :, :first] = np.nan
        inputs.update(train_session=session[:split], valid_session=session[split:],
                      train_condition=(np.arange(TRIALS) // 2 % 3)[:split])
    return inputs


def _single(config: LfadsConfig, inputs: dict) -> LfadsTrainer:
    trainer = LfadsTrainer(config, **inputs)
    trainer.set_dtype(torch.float64)
    return trainer


def assert_worker_matches(population: PopulationTrainer, k: int, single: LfadsTrainer, tolerance: float = 1e-9):
    member = population.members[k]
    assert len(member.history) == len(single.history)
    for row, expected in zip(member.history, single.history):
        for key, value in expected.items():
            if key == "seconds":
                continue
            assert row[key] == pytest.approx(value, rel=tolerance, abs=tolerance), (k, row["epoch"], key)
    weights = population.model.worker_state_dict(k)
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(weights[name], value, rtol=tolerance, atol=tolerance, msg=f"worker {k}: {name}")
    state = population.members[k].state_dict()
    expected_state = single.state_dict()
    # The same random numbers were drawn, in the same order: the streams are in the same place.
    assert torch.equal(state["generator"], expected_state["generator"])
    for key in ("epoch", "best_epoch", "epochs_since_best", "skipped_steps"):
        assert state[key] == expected_state[key], key
    assert state["plateau"] == pytest.approx(expected_state["plateau"], rel=1e-12)
    assert state["learning_rate"] == pytest.approx(expected_state["learning_rate"], rel=1e-12)
    assert state["adam"]["steps"] == expected_state["adam"]["steps"]
    for key in ("exp_avg", "exp_avg_sq"):
        for moment, expected in zip(state["adam"][key], expected_state["adam"][key], strict=True):
            torch.testing.assert_close(moment, expected, rtol=1e-7, atol=tolerance)


CASES = {
    "autonomous": dict(),
    "controller-heldout-ext": dict(co_dim=2, heldout_neurons=[3], ext_input_dim=EXT, mask_as_input=True),
    "zig-controller": dict(observation="zig", co_dim=1, s_min=0.15, l2_gamma_distance_scale=1e-2),
    "gamma-shift": dict(observation="gamma", temporal_shift_std=1.0, cell_clip_value=0.8),
    "controller-forward-shift": dict(co_dim=2, forward_bins=2, temporal_shift_std=1.0, mask_as_input=True),
    "stitched-controller": dict(session_neurons=[2, 3], co_dim=2, mask_as_input=True),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_each_worker_follows_its_single_trainer(case):
    inputs = _inputs(case)
    configs = _configs(**case)
    population = PopulationTrainer.from_configs(configs, **inputs, dtype=torch.float64)
    singles = [_single(config, inputs) for config in configs]
    for _ in range(3):
        rows = population.step_epoch()
        for single in singles:
            single.step_epoch()
    assert len(rows) == len(configs)
    for k, single in enumerate(singles):
        assert_worker_matches(population, k, single)
    # The workers really differ (their hyperparameters do).
    assert len({round(row["valid_nll"], 12) for row in rows}) == len(configs)


def test_a_member_loading_another_workers_state_continues_as_it_and_states_round_trip():
    inputs = _inputs({})
    configs = _configs()
    population = PopulationTrainer.from_configs(configs, **inputs, dtype=torch.float64)
    singles = [_single(config, inputs) for config in configs]
    for _ in range(2):
        population.step_epoch()
        for single in singles:
            single.step_epoch()
    # PBT: worker 0 copies worker 2, explores a hyperparameter and starts a new random stream.
    population.members[0].load_state_dict(population.members[2].state_dict())
    population.members[0].set_hyperparameters(learning_rate_init=3e-3, keep_prob=0.8)
    population.members[0].reseed(1234)
    copy = _single(configs[0], inputs)
    copy.load_state_dict(singles[2].state_dict())
    copy.set_hyperparameters(learning_rate_init=3e-3, keep_prob=0.8)
    copy.reseed(1234)
    singles[0] = copy
    # Worker 1 continues from a state exported and loaded back (as the PBT store does).
    population.members[1].load_state_dict(population.members[1].state_dict())
    for _ in range(2):
        population.step_epoch()
        for single in singles:
            single.step_epoch()
    for k, single in enumerate(singles):
        assert_worker_matches(population, k, single)
    # The plateau schedule acted (per worker) on at least one worker.
    assert any(member.learning_rate < member.config.learning_rate_init
               for member in population.members)
    # An exported state holds the worker's own tensors only (compact copies, not views of every worker's
    # stacked tensors), and continues in a single LfadsTrainer exactly where the population left it.
    exported = population.members[2].state_dict()
    for tensor in (*exported["model"].values(), *exported["adam"]["exp_avg"], *exported["best_model_state"].values()):
        assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
    resumed = _single(configs[2], inputs)
    resumed.load_state_dict(exported)
    resumed.step_epoch()
    singles[2].step_epoch()
    assert resumed.history[-1]["valid_nll"] == pytest.approx(singles[2].history[-1]["valid_nll"], rel=1e-9)


# An infinite readout bias makes a worker's loss and gradient non-finite; a NaN encoder weight makes its
# encoder's numbers NaN, which in the GPU backend's shared encoder call must not reach the other workers.
NON_FINITE = [("readout.bias", math.inf), ("ic_encoder.gru.bias_ih_l0", math.nan),
              ("ci_encoder.gru.weight_hh_l0_reverse", math.nan)]


@pytest.mark.parametrize("name, value", NON_FINITE, ids=[name for name, _ in NON_FINITE])
def test_a_non_finite_worker_skips_its_step_and_leaves_the_others_alone(name, value):
    _check_a_non_finite_worker_is_skipped_alone(_configs(co_dim=1), name, value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name, value", NON_FINITE, ids=[name for name, _ in NON_FINITE])
def test_on_a_gpu_a_non_finite_worker_skips_its_step_and_leaves_the_others_alone(name, value):
    """On a GPU the workers' encoders share one cuDNN call: a worker's non-finite numbers must not reach
    the others there, forward or backward."""
    _check_a_non_finite_worker_is_skipped_alone([LfadsConfig(**{**config.model_dump(), "device": "cuda"})
                                                  for config in _configs(co_dim=1)], name, value)


def _check_a_non_finite_worker_is_skipped_alone(configs, name, value):
    inputs = _inputs({})
    population = PopulationTrainer.from_configs(configs, **inputs, dtype=torch.float64)
    singles = [_single(config, inputs) for config in configs]
    with torch.no_grad():
        population.model.weights[name.replace(".", "__")][1].fill_(value)
        dict(singles[1].model.named_parameters())[name].fill_(value)
    population.step_epoch()
    for single in singles:
        single.step_epoch()
    assert population.members[1].skipped_steps == singles[1].skipped_steps > 0
    assert population.members[0].skipped_steps == 0
    for k in (0, 2):
        assert_worker_matches(population, k, singles[k])


def test_restore_best_loads_each_workers_best_weights():
    inputs = _inputs({})
    configs = _configs()
    population = PopulationTrainer.from_configs(configs, **inputs, dtype=torch.float64)
    singles = [_single(config, inputs) for config in configs]
    for _ in range(3):
        population.step_epoch()
        for single in singles:
            single.step_epoch()
    population.restore_best()
    for k, single in enumerate(singles):
        single.restore_best()
        for name, value in single.model.state_dict().items():
            torch.testing.assert_close(population.model.worker_state_dict(k)[name], value, rtol=1e-9, atol=1e-9)


def test_different_batch_sizes_and_different_data_are_refused():
    inputs = _inputs({})
    configs = _configs()
    configs[1] = LfadsConfig(**{**configs[1].model_dump(), "batch_size": 4})
    population = PopulationTrainer.from_configs(configs, **inputs)
    with pytest.raises(NeurodynError, match="batch_size"):
        population.step_epoch()
    other = dict(inputs, train_data=inputs["train_data"] + 1.0)
    members = [LfadsTrainer(configs[0], **inputs), LfadsTrainer(configs[0], **other)]
    with pytest.raises(NeurodynError, match="other data"):
        PopulationTrainer(members)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("case", [CASES["autonomous"], CASES["controller-heldout-ext"]], ids=["autonomous", "controller"])
def test_on_a_gpu_each_worker_follows_its_single_trainer(case):
    """On a GPU the population's steps are replayed from CUDA graphs, one per batch shape (after one
    warm-up step each here): each epoch's full batch, its smaller last one and the validation batches."""
    inputs = _inputs(case)
    configs = [LfadsConfig(**{**config.model_dump(), "device": "cuda"}) for config in _configs(**case)]
    population = PopulationTrainer.from_configs(configs, **inputs, dtype=torch.float64)
    population.captured_step.warmup_steps = population.captured_validation.warmup_steps = 1
    singles = [_single(config, inputs) for config in configs]
    assert population.device.type == "cuda"
    for _ in range(3):
        population.step_epoch()
        for single in singles:
            single.step_epoch()
    # Training: a full batch and a smaller last one per epoch, each its own graph from epoch 2; validation:
    # the 6 validation trials in a batch of 5 and one of 1.
    assert (population.captured_step.failure, population.captured_step.replays) == (None, 4)
    assert (population.captured_validation.failure, population.captured_validation.replays) == (None, 4)
    for k, single in enumerate(singles):
        assert_worker_matches(population, k, single, tolerance=1e-8)


def _exploit(population: PopulationTrainer, copier: int, source: int) -> None:
    """PBT's exploit inside one population: the copier loads the source's state and gets a stream of its own."""
    population.members[copier].load_state_dict(population.members[source].state_dict())
    population.members[copier].reseed(1000 + copier)


def test_a_replayed_step_reads_every_input_afresh():
    """The plumbing of a replay: each step's inputs are copied into the graph's static inputs and its
    outputs read from the graph's, for every batch shape, so a replayed population follows the eager one
    exactly, through exploit, changed hyperparameters and a skipped non-finite step. (The stand-in reruns
    the Python step, so it cannot see Python state frozen into a real graph: that is
    ``test_a_step_reads_only_its_input_tensors``'s, and the GPU tests'.)"""
    from neurodyn.train.cuda_graphs import CapturedStep

    case = CASES["zig-controller"]
    inputs = _inputs(case)
    eager = PopulationTrainer.from_configs(_configs(**case), **inputs, dtype=torch.float64)
    replayed = PopulationTrainer.from_configs(_configs(**case), **inputs, dtype=torch.float64)
    replayed.captured_step = CapturedStep(replayed._step, enabled=True, warmup_steps=1, capture=replay_by_running)
    replayed.captured_validation = CapturedStep(replayed._validation_sums, enabled=True, warmup_steps=1,
                                                capture=replay_by_running)
    for epoch in range(4):
        if epoch == 2:
            for population in (eager, replayed):
                _exploit(population, 0, 2)
                population.members[1].set_hyperparameters(learning_rate_init=3e-3, keep_prob=0.6, kl_ic_weight=0.5,
                                                 gamma_prior=3.0, l2_gamma_distance_scale=0.1, max_grad_norm=0.1)
                with torch.no_grad():
                    population.model.weights["readout__bias"][2].fill_(math.nan)
        if epoch == 3:
            for population in (eager, replayed):
                _exploit(population, 2, 1)
        eager.step_epoch()
        replayed.step_epoch()
        if epoch == 2:  # the NaN worker skipped its steps (exploit at the next epoch copies the count over)
            assert replayed.members[2].skipped_steps == eager.members[2].skipped_steps > 0
    assert (replayed.captured_step.replays, replayed.captured_validation.replays) == (6, 6)
    for k in range(3):
        untimed = [[{key: value for key, value in row.items() if key != "seconds"} for row in population.members[k].history]
                   for population in (replayed, eager)]
        np.testing.assert_equal(*untimed)  # NaN equals NaN here
        for name, value in eager.model.worker_state_dict(k).items():
            assert torch.equal(replayed.model.worker_state_dict(k)[name], value), name


def test_a_step_reads_only_its_input_tensors():
    """What a CUDA graph needs: ``_step`` depends on its inputs and the tensors it updates in place, not
    on Python state (configs, schedules, settings) read at the time it runs, which a recorded graph
    would hold frozen."""
    case = CASES["zig-controller"]
    population = PopulationTrainer.from_configs(_configs(**case), **_inputs(case), dtype=torch.float64)
    population.step_epoch()
    trials = [torch.arange(8)] * 3
    ramp = population._per_worker([0.5] * 3)
    inputs = population._step_inputs(trials, ramp, ramp)
    tensors = [*population.parameters, *population.exp_avg, *population.exp_avg_sq]
    before = [tensor.detach().clone() for tensor in tensors]
    first = population._step(inputs)
    after_first = [tensor.detach().clone() for tensor in tensors]
    with torch.no_grad():
        for tensor, value in zip(tensors, before):
            tensor.copy_(value)
    for k in range(3):
        population.members[k].set_hyperparameters(learning_rate_init=0.5, kl_ic_weight=7.0, kl_co_weight=7.0, max_grad_norm=1e-3,
                                       gamma_prior=9.0, l2_gamma_distance_scale=3.0, loss_scale=0.1, keep_prob=0.5,
                                       l2_gen_scale=5.0, l2_con_scale=5.0)
        population.members[k].adam_steps = 100
    second = population._step(inputs)
    for name in first:
        assert torch.equal(first[name], second[name]), name
    for tensor, expected in zip(tensors, after_first):
        assert torch.equal(tensor, expected)


def test_a_step_never_waits_for_the_device():
    """A CUDA graph cannot record an operation that hands a value back to Python (``.item()``, a boolean
    mask's ``nonzero``, ``tensor == tensor`` as a Python bool): no such operation in a training step or
    a validation batch, whatever the backend."""
    from torch.utils._python_dispatch import TorchDispatchMode

    waiting = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::is_nonzero",
               "aten::equal", "aten::unique", "aten::_unique2"}
    called = set()

    class Operations(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            called.add(func._schema.name)
            return func(*args, **(kwargs or {}))

    case = CASES["zig-controller"]
    population = PopulationTrainer.from_configs(_configs(**case), **_inputs(case), dtype=torch.float64)
    ramp = population._per_worker([0.5] * 3)
    inputs = population._step_inputs([torch.arange(8)] * 3, ramp, ramp)
    masks = population.valid_data[:5]
    with Operations():
        population._step(inputs)
        population._validation_sums({"encoder_input": torch.nan_to_num(masks).expand(3, -1, -1, -1),
                                     "encoder_visible": torch.isfinite(masks).double().expand(3, -1, -1, -1),
                                     "target": torch.nan_to_num(masks).expand(3, -1, -1, -1),
                                     "observed": torch.isfinite(masks).double().expand(3, -1, -1, -1)})
    assert "aten::bmm" in called or "aten::baddbmm" in called  # the recorder saw the step's arithmetic
    assert not called & waiting, called & waiting


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_on_a_second_gpu_the_graphs_record_there():
    """A population on cuda:1 while cuda:0 is the current device (the engine's one population per GPU):
    its graphs must be recorded on cuda:1's stream (one of cuda:0 would record nothing while the step
    ran eagerly, and every replay would then do nothing)."""
    inputs = _inputs({})
    configs = [LfadsConfig(**{**config.model_dump(), "device": "cuda:1"}) for config in _configs()]
    population = PopulationTrainer.from_configs(configs, **inputs, dtype=torch.float64)
    population.captured_step.warmup_steps = population.captured_validation.warmup_steps = 1
    singles = [_single(config, inputs) for config in configs]
    assert torch.cuda.current_device() == 0
    for _ in range(3):
        population.step_epoch()
        for single in singles:
            single.step_epoch()
    assert (population.captured_step.failure, population.captured_step.replays) == (None, 4)
    for k, single in enumerate(singles):
        assert_worker_matches(population, k, single, tolerance=1e-8)


def test_the_validation_nll_that_picks_models_includes_the_held_out_neurons():
    """Early stopping, learning-rate decay and PBT fitness read the mean NLL over every observed entry of the
    validation trials, the held-out neurons' included (the encoders never see them; the readout predicts them)."""
    case = CASES["controller-heldout-ext"]
    inputs = _inputs(case)
    configs = _configs(**case)
    single = _single(configs[0], inputs)
    single.step_epoch()
    heldout = case["heldout_neurons"]
    valid = single.valid_data
    heldin_only = valid.clone()
    heldin_only[..., heldout] = math.nan
    shifted = valid.clone()
    shifted[..., heldout] = torch.where(torch.isnan(valid[..., heldout]), valid[..., heldout],
                                        valid[..., heldout] + 4.0)
    full = single.validation_nll()
    assert single.history[-1]["valid_nll"] == pytest.approx(full, rel=1e-12)
    # The held-out entries' NLL, from the same readout (the encoders see none of them).
    single.model.eval()
    masks = inference_masks(valid)
    with torch.no_grad():
        output = single.model(masks.encoder_input, sample_posteriors=False, encoder_visible=masks.encoder_visible,
                              ext_input=single.valid_ext_input)
        nll = single.model.observation.elementwise_nll(output.readout, masks.target)
    observed = masks.observed
    expected = float((nll * observed).sum() / observed.sum())
    heldin_mean = float((nll * observed)[..., [n for n in range(NEURONS) if n not in heldout]].sum()
                        / observed[..., [n for n in range(NEURONS) if n not in heldout]].sum())
    assert full == pytest.approx(expected, rel=1e-9)
    assert single.validation_nll(heldin_only, single.valid_ext_input) == pytest.approx(heldin_mean, rel=1e-9)
    assert abs(full - heldin_mean) > 1e-6
    assert abs(single.validation_nll(shifted, single.valid_ext_input) - full) > 1e-6
    # A population's workers are scored the same way.
    population = PopulationTrainer.from_configs(configs, **inputs, dtype=torch.float64)
    population.step_epoch()
    assert population.validation_nll()[0] == pytest.approx(full, rel=1e-9)
