"""The stacked population model against W single LFADS models (float64, PyTorch loops on both sides).

Each worker of ``PopulationLFADS`` must compute what the single model it was stacked from computes:
the forward pass (eval and training, with each worker's own dropout masks and posterior noise), the
objective's terms and the gradient of each worker's loss with respect to its own weights.
"""

import pytest
import torch

from neurodyn.config import LfadsConfig
from neurodyn.errors import NeurodynError
from neurodyn.lfads.model import LFADS
from neurodyn.lfads.population import PopulationLFADS
from neurodyn.observation.registry import make_observation_model

SMALL = dict(ic_enc_dim=5, ci_enc_dim=4, con_dim=5, ic_dim=3, gen_dim=6, factors_dim=3, ci_lag=1)
NEURONS, TRIALS, STEPS = 4, 3, 6
OBSERVATION_OPTIONS = {"poisson": {}, "zig": dict(s_min=0.1, gamma_prior=5.0, l2_gamma_distance_scale=0.01),
                       "gamma": dict(gamma_prior=5.0, l2_gamma_distance_scale=0.01)}


# Every test runs three times: PyTorch loops, compiled kernels, the GPU backend (conftest.recurrent_loops).
pytestmark = pytest.mark.usefixtures("recurrent_loops")


def _models(observation="poisson", keep_probs=(0.8, 1.0, 0.6), **overrides):
    models = []
    for k, keep_prob in enumerate(keep_probs):
        torch.manual_seed(10 + k)
        config = LfadsConfig(**{**SMALL, "keep_prob": keep_prob, "observation": observation, **overrides})
        options = dict(OBSERVATION_OPTIONS[observation])
        if "gamma_prior" in options:
            options["gamma_prior"] += k  # a per-worker searched value
        observation_model = make_observation_model(observation, NEURONS, **options)
        model = LFADS(config, NEURONS, observation_model).double()
        with torch.no_grad():  # weights away from their initial values (e.g. the zero initial states)
            for parameter in model.parameters():
                parameter.add_(0.1 * torch.randn_like(parameter))
        models.append(model)
    return models


def _data(num_workers, observation, ext_dim=0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shape = (num_workers, TRIALS, STEPS, NEURONS)
    if observation == "poisson":
        data = torch.poisson(torch.full(shape, 1.5, dtype=torch.float64), generator=generator)
    else:
        data = torch.rand(shape, generator=generator, dtype=torch.float64) * 2.0
        if observation == "zig":
            data[data < 0.8] = 0.0
    ext = torch.randn(num_workers, TRIALS, STEPS, ext_dim, generator=generator, dtype=torch.float64) if ext_dim else None
    return data, ext


def _single_loss(model, output, target):
    nll = model.observation.elementwise_nll(output.readout, target).sum()
    return nll + model.kl_ic(output).sum() + model.kl_co(output).sum() + model.recurrent_l2(0.3, 0.2)[0] \
        + model.observation.penalty()


def _population_loss(population, output, target):
    workers = population.num_workers
    nll = population.observation.elementwise_nll(output.readout, target).flatten(1).sum(1)
    scale = torch.full((workers,), 0.3, dtype=torch.float64), torch.full((workers,), 0.2, dtype=torch.float64)
    return nll + population.kl_ic(output).sum(1) + population.kl_co(output).sum(1) \
        + population.recurrent_l2(*scale) + population.observation_penalty()


CASES = [
    dict(observation="poisson"),
    dict(observation="poisson", co_dim=2),
    dict(observation="poisson", co_dim=2, ext_input_dim=2, cell_clip_value=0.7),
    dict(observation="poisson", ext_input_dim=2, heldout_neurons=[1], mask_as_input=True),
    dict(observation="zig", co_dim=1),
    dict(observation="gamma"),
    dict(observation="poisson", co_dim=2, forward_bins=2, heldout_neurons=[1], mask_as_input=True),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: "-".join(f"{k}={v}" for k, v in case.items()))
@pytest.mark.parametrize("training", [False, True])
def test_each_worker_computes_what_its_single_model_computes(case, training):
    models = _models(**case)
    population = PopulationLFADS.from_models(models)
    data, ext = _data(len(models), case["observation"], case.get("ext_input_dim", 0))
    visible = (torch.rand(data.shape, generator=torch.Generator().manual_seed(3)) > 0.2).double()
    for model in [*models, population]:
        model.train(training)
    noise = None
    if training:
        rngs = [torch.Generator().manual_seed(100 + k) for k in range(len(models))]
        noise = population.draw_forward_noise(rngs, TRIALS, STEPS, sample=True, like=data)
    output = population(data, sample_posteriors=training, encoder_visible=visible, noise=noise, ext_input=ext)
    losses = _population_loss(population, output, data)
    gradients = torch.autograd.grad(losses.sum(), [p for _, p in population.stacked_parameters()], allow_unused=True)
    for k, model in enumerate(models):
        rng = torch.Generator().manual_seed(100 + k) if training else None
        single = model(data[k], sample_posteriors=training, encoder_visible=visible[k], rng=rng,
                       ext_input=None if ext is None else ext[k])
        for name in ("readout", "factors", "ic_mean", "ic_std", "co_mean", "co_std", "co_sample", "gen_states"):
            expected = getattr(single, name)
            if expected is None:
                assert getattr(output, name) is None, name
                continue
            torch.testing.assert_close(getattr(output, name)[k], expected, rtol=1e-12, atol=1e-12, msg=name)
        loss = _single_loss(model, single, data[k])
        torch.testing.assert_close(losses[k], loss, rtol=1e-12, atol=1e-12)
        single_gradients = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
        for (name, _), gradient, expected in zip(population.stacked_parameters(), gradients, single_gradients):
            # A weight the pass does not use (the autonomous generator's input kernel) has no gradient on
            # one side and a zero one on the other.
            gradient = torch.zeros_like(population.weights[name.replace('.', '__')]) if gradient is None else gradient
            expected = torch.zeros_like(gradient[k]) if expected is None else expected
            torch.testing.assert_close(gradient[k], expected, rtol=1e-10, atol=1e-12, msg=name)


def test_training_noise_differs_between_workers_and_is_not_all_ones():
    models = _models(keep_probs=(0.5, 0.5))
    population = PopulationLFADS.from_models(models).train()
    rngs = [torch.Generator().manual_seed(7), torch.Generator().manual_seed(8)]
    noise = population.draw_forward_noise(rngs, TRIALS, STEPS, sample=True, like=torch.zeros((), dtype=torch.float64))
    assert set(noise.input_keep.unique().tolist()) == {0.0, 2.0}
    assert not torch.equal(noise.input_keep[0], noise.input_keep[1])


def test_the_models_become_views_of_their_workers_with_their_weights_and_settings():
    models = _models(co_dim=2)
    originals = [{key: value.clone() for key, value in model.state_dict().items()} for model in models]
    population = PopulationLFADS.from_models(models)
    for k, model in enumerate(models):
        state = population.worker_state_dict(k)
        assert state.keys() == originals[k].keys()
        for key, value in originals[k].items():
            assert torch.equal(state[key], value), key
            assert torch.equal(model.state_dict()[key], value), key
    state = population.worker_state_dict(0)
    state["readout.bias"] += 1.0  # a copy, not a view
    assert not torch.equal(population.worker_state_dict(0)["readout.bias"], state["readout.bias"])
    # One copy of the weights: loading into a model writes its worker, a population update reaches the model.
    models[2].load_state_dict(state)
    assert torch.equal(population.weights["readout__bias"][2], state["readout.bias"])
    with torch.no_grad():
        population.weights["decoder__generator__weight_hh_l0"][1].mul_(2.0)
    assert torch.equal(models[1].decoder.generator.weight_hh_l0, 2.0 * originals[1]["decoder.generator.weight_hh_l0"])
    models[1].set_keep_prob(0.3)
    assert population.dropout_p == [models[0].dropout_p, pytest.approx(0.7), models[2].dropout_p]


def test_models_of_another_architecture_are_refused():
    torch.manual_seed(0)
    small = LFADS(LfadsConfig(**SMALL), NEURONS, make_observation_model("poisson", NEURONS))
    larger = LFADS(LfadsConfig(**{**SMALL, "gen_dim": 7}), NEURONS, make_observation_model("poisson", NEURONS))
    with pytest.raises(NeurodynError, match="architecture"):
        PopulationLFADS.from_models([small, larger])
    # Same weight shapes, other settings the mathematics reads: one population would run worker 0's.
    for setting in ({"forward_bins": 2}, {"cell_clip_value": 3.0}, {"ci_lag": 2}, {"ic_post_var_min": 1e-3}):
        other = LFADS(LfadsConfig(**{**SMALL, **setting}), NEURONS, make_observation_model("poisson", NEURONS))
        with pytest.raises(NeurodynError, match="architecture"):
            PopulationLFADS.from_models([small, other])
    torch.manual_seed(1)
    same = LFADS(LfadsConfig(**SMALL), NEURONS, make_observation_model("poisson", NEURONS))
    assert PopulationLFADS.from_models([small, same]).forward_bins == small.forward_bins
    with pytest.raises(NeurodynError, match="once"):
        PopulationLFADS.from_models([small, small])


@pytest.mark.parametrize("co_dim", [0, 2])
def test_population_runs_its_loops_in_the_compiled_kernels_on_cpu(monkeypatch, co_dim):
    """With the kernels on, every recurrent loop of the population (both encoders, controller/generator or
    the autonomous generator) is one stacked kernel call; the comparison above then checks their numbers."""
    from neurodyn.lfads import compiled_rnn, stacked as population_module

    monkeypatch.undo()  # this test checks the CPU's own choice of backend, whatever the fixture chose
    monkeypatch.setenv("NEURODYN_COMPILED_KERNELS", "1")
    if compiled_rnn.load_compiled_rnn() is None:
        pytest.fail("the compiled kernels must build on the project's machines (gcc + ninja)")
    calls = []
    for name in ("run_gru_sequence", "run_controlled_decoder"):
        original = getattr(population_module, name)
        monkeypatch.setattr(population_module, name,
                            lambda *args, _original=original, _name=name, **kwargs:
                            calls.append((_name, args[2].dim())) or _original(*args, **kwargs))
    models = _models(co_dim=co_dim)
    population = PopulationLFADS.from_models(models)
    data, _ = _data(len(models), "poisson")
    population(data, sample_posteriors=False)
    # args[2] is the initial state: (W, B, H) for the stacked form, (B, H) for one model.
    if co_dim:
        assert calls == [("run_gru_sequence", 3), ("run_gru_sequence", 3), ("run_controlled_decoder", 3)]
    else:
        assert calls == [("run_gru_sequence", 3), ("run_gru_sequence", 3)]


def test_each_device_gets_its_recurrent_backend(monkeypatch):
    from neurodyn.lfads.recurrent import recurrent_backend

    monkeypatch.undo()  # the real choice, not the fixture's
    assert recurrent_backend(torch.device("cuda")) == "library"
    monkeypatch.setenv("NEURODYN_COMPILED_KERNELS", "0")
    assert recurrent_backend(torch.device("cpu")) == "loop"


def test_block_diagonal_encoders_split_workers_into_groups_and_match_one_group(monkeypatch):
    """Workers beyond ``MAX_BLOCK_DIAGONAL_UNITS`` go to further GRU calls; the numbers do not change."""
    from neurodyn.lfads import stacked as stacked_module

    monkeypatch.setattr(stacked_module, "recurrent_backend", lambda device: "library")
    models = _models(co_dim=2)
    population = PopulationLFADS.from_models(models)
    data, _ = _data(len(models), "poisson")
    whole = population(data, sample_posteriors=False)
    calls = []
    original = stacked_module.bidirectional_gru_block_diagonal
    monkeypatch.setattr(stacked_module, "bidirectional_gru_block_diagonal",
                        lambda x, *args: calls.append(x.shape[0]) or original(x, *args))
    monkeypatch.setattr(stacked_module, "MAX_BLOCK_DIAGONAL_UNITS", 2 * SMALL["ic_enc_dim"])
    grouped = population(data, sample_posteriors=False)
    assert calls[:2] == [2, 1]  # the IC encoder (5 units): groups of two workers
    torch.testing.assert_close(grouped.readout, whole.readout, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_fused_gate_kernel_computes_the_gru_gates():
    from neurodyn.lfads.recurrent import fused_gru_gates, gru_gates

    generator = torch.Generator(device="cuda").manual_seed(0)
    shapes = {"gates_x": (3, 4, 15), "gates_h": (3, 4, 15), "h": (3, 4, 5)}
    inputs = {name: torch.randn(shape, generator=generator, device="cuda", dtype=torch.float64, requires_grad=True)
              for name, shape in shapes.items()}
    weight = torch.randn((3, 4, 5), generator=generator, device="cuda", dtype=torch.float64)
    fused = fused_gru_gates(**inputs)
    plain = gru_gates(**inputs)
    torch.testing.assert_close(fused, plain, rtol=1e-12, atol=1e-12)
    fused_gradients = torch.autograd.grad((fused * weight).sum(), list(inputs.values()))
    plain_gradients = torch.autograd.grad((plain * weight).sum(), list(inputs.values()))
    for name, got, expected in zip(inputs, fused_gradients, plain_gradients):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12, msg=name)


def test_the_block_diagonal_memory_per_worker_is_what_a_group_builds(monkeypatch):
    from neurodyn.lfads import population as population_module
    from neurodyn.lfads import recurrent

    models = _models(co_dim=2)
    population = PopulationLFADS.from_models(models)
    monkeypatch.setattr(population_module, "MAX_BLOCK_DIAGONAL_UNITS", 2 * max(SMALL["ic_enc_dim"], SMALL["ci_enc_dim"]))
    expected = 0
    for prefix in ("ic_encoder", "ci_encoder"):
        pair = population._stacked(f"{prefix}.gru.weight_ih_l0")[:2], population._stacked(f"{prefix}.gru.weight_hh_l0")[:2]
        built = sum(recurrent._block_diagonal_gates(weight).numel() for weight in pair)  # a group of two
        alone = sum(weight[0].numel() for weight in pair)
        expected += 2 * 3 * (built / 2 - alone)  # two directions, three copies, beyond one worker's own
    assert population.block_diagonal_bytes_per_worker() == expected * 8  # float64
