"""The compiled RNN kernels (controller/generator loop, GRU over a sequence): same numbers and
gradients as the PyTorch code they replace, checked against finite differences, switchable off, and
a failed build falls back to PyTorch."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from neurodyn.config import LfadsConfig
from neurodyn.lfads import compiled_rnn, stacked
from neurodyn.lfads.model import LFADS
from neurodyn.lfads.stacked import ForwardNoise
from neurodyn.observation.poisson import Poisson

STEPS, TRIALS = 6, 3


@pytest.fixture(scope="module")
def kernel():
    built = compiled_rnn.load_compiled_rnn()
    assert built is not None, "the compiled decoder must build on the project's machines (gcc + ninja)"
    return built


NEURONS, EXT = 4, 2


def make_model(co_dim: int, clip: float, ext_input_dim: int = 0, keep_prob: float = 0.7) -> LFADS:
    """A float64 model (controller input 4 wide, generator 7 units, 3 factors) with large weights, so
    some states hit the clip."""
    torch.manual_seed(0)
    config = LfadsConfig(ic_enc_dim=5, ci_enc_dim=2, con_dim=5, ic_dim=3, gen_dim=7, factors_dim=3, co_dim=co_dim,
                         cell_clip_value=clip, keep_prob=keep_prob, ext_input_dim=ext_input_dim)
    model = LFADS(config, NEURONS, Poisson(NEURONS)).double()
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.8)
    return model


def gradients_of(outputs, inputs, seed: int = 0):
    """Outputs and the gradients of a random linear functional of them (exercises every output)."""
    generator = torch.Generator().manual_seed(seed)
    loss = sum((torch.randn(t.shape, dtype=t.dtype, generator=generator) * t).sum() for t in outputs)
    return outputs, torch.autograd.grad(loss, inputs, allow_unused=True)


def assert_same(compiled, reference):
    for a, b in zip(tuple(compiled[0]) + tuple(compiled[1]), tuple(reference[0]) + tuple(reference[1])):
        if a is None or b is None:  # an input-free GRU: the compiled path never touches W_ih
            assert a is None or not a.any()
            assert b is None or not b.any()
        else:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def outputs_and_gradients(model: LFADS, monkeypatch, backend: str, sample: bool):
    """A whole forward pass (encoders, controller, generator) on ``backend`` (compiled, library or loop)
    with dropout and posterior noise from a fixed generator: its outputs, the generator states, and the
    gradients with respect to the data, the measured inputs and every parameter."""
    monkeypatch.setenv("NEURODYN_COMPILED_KERNELS", "1" if backend == "compiled" else "0")
    monkeypatch.setattr(stacked, "recurrent_backend", lambda device: backend)
    inputs = torch.Generator().manual_seed(1)
    data = torch.rand(TRIALS, STEPS, NEURONS, dtype=torch.double, generator=inputs).requires_grad_()
    ext_input = (torch.randn(TRIALS, STEPS, EXT, dtype=torch.double, generator=inputs).requires_grad_()
                 if model.ext_input_dim else None)
    output = model(data, sample, rng=torch.Generator().manual_seed(5), ext_input=ext_input)
    values = [output.readout, output.factors, output.ic_mean, output.ic_std]
    if model.co_dim:
        values += [output.co_mean, output.co_std, output.co_sample]
    leaves = [data] + ([ext_input] if ext_input is not None else []) + list(model.parameters())
    values, grads = gradients_of(values, leaves)
    assert not output.gen_states.requires_grad and output.gen_states.abs().max() <= model.cell_clip_value
    return (*values, output.gen_states), grads


@pytest.mark.parametrize("co_dim", [0, 2])
@pytest.mark.parametrize("ext_input_dim", [0, EXT])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("sample", [True, False])
@pytest.mark.parametrize("clip", [0.6, 5.0])
@pytest.mark.parametrize("backend", ["compiled", "library"])
def test_compiled_loop_matches_python_loop(kernel, monkeypatch, co_dim, ext_input_dim, training, sample, clip, backend):
    """Values, generator states and every gradient (measured inputs and their weights included) of the
    compiled kernels (CPU) or the library kernels (the GPU's: cuDNN-style GRU calls, which run on a CPU
    too) and the PyTorch loops, through a whole model."""
    model = make_model(co_dim, clip, ext_input_dim)
    model.train(training)
    compiled = outputs_and_gradients(model, monkeypatch, backend, sample)
    assert_same(compiled, outputs_and_gradients(model, monkeypatch, "loop", sample))
    if ext_input_dim and clip > 1.0:  # (a clipped state passes no gradient back to its step's input)
        w_ext_grad = compiled[1][2 + [name for name, _ in model.named_parameters()].index("decoder.generator.weight_ih_l0")]
        assert compiled[1][1].abs().min() > 0  # every step's measured input reaches the outputs
        assert w_ext_grad[:, co_dim:].abs().sum() > 0


def test_clip_is_active_in_the_comparison(kernel):
    """The comparison above must exercise the clip's zero gradient: some states do reach +-0.6."""
    decoder = make_model(co_dim=2, clip=0.6).decoder
    weights = (decoder.controller.weight_ih_l0[:, 4:], decoder.controller.weight_hh_l0, decoder.controller.bias_hh_l0,
               decoder.controller_output.weight, decoder.controller_output.bias, decoder.generator.weight_ih_l0,
               decoder.generator.bias_ih_l0, decoder.generator.weight_hh_l0, decoder.generator.bias_hh_l0,
               F.normalize(decoder.factors.weight, dim=1))
    inputs = torch.Generator().manual_seed(1)
    states = kernel.decoder_forward(
        torch.randn(STEPS, TRIALS, 15, dtype=torch.double, generator=inputs),
        torch.randn(TRIALS, 7, dtype=torch.double, generator=inputs), torch.zeros(TRIALS, 5, dtype=torch.double),
        torch.zeros(STEPS, TRIALS, 2, dtype=torch.double), torch.ones(STEPS + 1, TRIALS, 7, dtype=torch.double),
        *[w.detach().contiguous() for w in weights], 0.6)
    gen_unclipped = states[12]
    assert (gen_unclipped.abs() > 0.6).any() and (gen_unclipped.abs() < 0.6).any()


def _sequence_shape(steps: int, trials: int, workers: int | None):
    """Shape of a sequence of ``steps + extra`` steps of width ``width``: ``(T, B, X)`` for one model,
    worker-major ``(W, T, B, X)`` stacked."""
    def shape(extra: int, width: int) -> tuple[int, ...]:
        return (steps + extra, trials, width) if workers is None else (workers, steps + extra, trials, width)
    return shape


def _check_decoder_gradients(kernel, per_step_generator_bias: bool, workers: int | None = None) -> None:
    """gradcheck of the compiled controlled decoder (float64) against finite differences; the generator's
    input bias is one vector, or one per step and trial (measured inputs). ``workers``: the stacked form
    (a leading worker axis on weights and states, worker-major sequences ``(W, T, B, ...)``)."""
    steps, trials, con, gen, factors, inputs_dim = 3, 2, 3, 4, 2, 2
    rng = torch.Generator().manual_seed(0)
    w = () if workers is None else (workers,)  # the weights' leading axes
    b = (trials,) if workers is None else (workers, trials)  # a state's batch axes
    seq = _sequence_shape(steps, trials, workers)

    def leaf(*shape):
        return torch.randn(*shape, dtype=torch.double, generator=rng).requires_grad_()

    noise = torch.randn(*seq(0, inputs_dim), dtype=torch.double, generator=rng)
    keep = (torch.rand(*seq(1, gen), dtype=torch.double, generator=rng) > 0.3).double() / 0.7
    generator_bias = leaf(*seq(0, 3 * gen)) if per_step_generator_bias else leaf(*w, 3 * gen)
    tensors = [leaf(*seq(0, 3 * con)), leaf(*b, gen), leaf(*b, con),
               leaf(*w, 3 * con, factors), leaf(*w, 3 * con, con), leaf(*w, 3 * con), leaf(*w, 2 * inputs_dim, con),
               leaf(*w, 2 * inputs_dim), leaf(*w, 3 * gen, inputs_dim), generator_bias, leaf(*w, 3 * gen, gen),
               leaf(*w, 3 * gen), leaf(*w, factors, gen)]

    def run(ci_projection, gen_init, con_init, *weights):
        return compiled_rnn.run_controlled_decoder(kernel, ci_projection, gen_init, con_init, noise, keep,
                                                   weights, 0.5)[:4]

    assert gradcheck(run, tensors, eps=1e-6, atol=1e-6)


def test_compiled_gradients_match_finite_differences(kernel):
    _check_decoder_gradients(kernel, per_step_generator_bias=False)


@pytest.mark.parametrize("per_step_generator_bias", [False, True])
def test_stacked_decoder_gradients_match_finite_differences(kernel, per_step_generator_bias):
    """The stacked form (several workers' weights at once, as the population engine calls it)."""
    _check_decoder_gradients(kernel, per_step_generator_bias, workers=3)


@pytest.mark.parametrize("per_step_generator_bias", [False, True])
def test_stacked_decoder_is_each_workers_own_decoder(kernel, per_step_generator_bias):
    """Worker k of a stacked (worker-major) decoder call: every output and every gradient of the
    one-model call on its slice, in float64, with dropout and inferred-input noise."""
    workers, steps, trials, con, gen, factors, inputs_dim = 3, 5, 4, 3, 4, 2, 2
    rng = torch.Generator().manual_seed(4)
    seq = _sequence_shape(steps, trials, workers)

    def draw(*shape):
        return torch.randn(*shape, dtype=torch.double, generator=rng)

    noise = draw(*seq(0, inputs_dim))
    keep = (torch.rand(*seq(1, gen), dtype=torch.double, generator=rng) > 0.3).double() / 0.7
    bias = draw(*seq(0, 3 * gen)) if per_step_generator_bias else draw(workers, 3 * gen)
    tensors = [draw(*seq(0, 3 * con)), draw(workers, trials, gen), draw(workers, trials, con),
               draw(workers, 3 * con, factors), draw(workers, 3 * con, con), draw(workers, 3 * con),
               draw(workers, 2 * inputs_dim, con), draw(workers, 2 * inputs_dim), draw(workers, 3 * gen, inputs_dim),
               bias, draw(workers, 3 * gen, gen), draw(workers, 3 * gen), draw(workers, factors, gen)]
    upstream = [draw(*seq(0, factors))] + [draw(*seq(0, inputs_dim)) for _ in range(3)]

    def run(tensors, noise, keep, upstream):
        leaves = [t.clone().requires_grad_() for t in tensors]
        outputs = compiled_rnn.run_controlled_decoder(kernel, *leaves[:3], noise, keep, leaves[3:], 0.6)
        torch.autograd.backward(outputs[:4], upstream)
        return [o.detach() for o in outputs] + [leaf.grad for leaf in leaves]

    stacked = run(tensors, noise, keep, upstream)
    for k in range(workers):
        one = run([t[k] for t in tensors], noise[k], keep[k], [g[k] for g in upstream])
        for got, expected in zip(stacked, one):
            torch.testing.assert_close(got[k], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("compiled", ["1", "0"])
def test_bidirectional_encoder_matches_nn_gru(kernel, monkeypatch, compiled):
    """The encoders' loop (both directions stacked, the backward one on the reversed input) against
    ``nn.GRU`` itself, bidirectional, from the trainable initial state: states, final states, gradients."""
    monkeypatch.setenv("NEURODYN_COMPILED_KERNELS", compiled)
    model = make_model(co_dim=0, clip=5.0)
    gru = model.ic_encoder.gru
    x = torch.randn(3, 8, NEURONS, dtype=torch.double, requires_grad=True)
    states, final = model._bidirectional("ic_encoder", x.unsqueeze(0))
    reference, reference_final = gru(x, model.ic_encoder.initial_state.expand(2, 3, -1).contiguous())
    parameters = [x, *gru.parameters(), model.ic_encoder.initial_state]
    got = gradients_of((states[0], final[0]), parameters)
    expected = gradients_of((reference, torch.cat([reference_final[0], reference_final[1]], dim=-1)), parameters)
    assert_same(got, expected)


@pytest.mark.parametrize("workers", [None, 3], ids=["one-model", "stacked"])
@pytest.mark.parametrize("reverse", [False, True])
def test_compiled_gru_sequence_gradients_match_finite_differences(kernel, reverse, workers):
    steps, trials, hidden = 4, 2, 3
    rng = torch.Generator().manual_seed(0)
    w = () if workers is None else (workers,)

    def leaf(*shape):
        return torch.randn(*shape, dtype=torch.double, generator=rng).requires_grad_()

    # Stacked sequences are worker-major: (W, T, B, 3H).
    tensors = [leaf(*w, steps, trials, 3 * hidden), leaf(*w, trials, hidden), leaf(*w, 3 * hidden, hidden),
               leaf(*w, 3 * hidden)]

    def run(x_projection, h0, w_hh, b_hh):
        return compiled_rnn.run_gru_sequence(kernel, x_projection, h0, w_hh, b_hh, clip=0.7, reverse=reverse)

    states = run(*tensors)
    assert (states.abs() == 0.7).any()  # the clip is exercised
    assert gradcheck(run, tensors, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("reverse", [False, True])
def test_stacked_gru_sequence_is_each_workers_own_sequence(kernel, reverse):
    """Worker k of a stacked (worker-major) call: the states and every gradient of the one-model call on
    its slice, in float64."""
    workers, steps, trials, hidden = 3, 6, 4, 5
    rng = torch.Generator().manual_seed(3)
    x_projection = torch.randn(workers, steps, trials, 3 * hidden, dtype=torch.double, generator=rng)
    h0 = torch.randn(workers, trials, hidden, dtype=torch.double, generator=rng)
    w_hh = torch.randn(workers, 3 * hidden, hidden, dtype=torch.double, generator=rng)
    b_hh = torch.randn(workers, 3 * hidden, dtype=torch.double, generator=rng)
    upstream = torch.randn(workers, steps, trials, hidden, dtype=torch.double, generator=rng)

    def run(tensors, grad_states):
        leaves = [t.clone().requires_grad_() for t in tensors]
        states = compiled_rnn.run_gru_sequence(kernel, *leaves, clip=0.8, reverse=reverse)
        states.backward(grad_states)
        return [states.detach()] + [leaf.grad for leaf in leaves]

    stacked = run((x_projection, h0, w_hh, b_hh), upstream)
    for k in range(workers):
        one = run((x_projection[k], h0[k], w_hh[k], b_hh[k]), upstream[k])
        for got, expected in zip(stacked, one):
            torch.testing.assert_close(got[k], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("workers", [None, 3], ids=["one-model", "stacked"])
def test_gru_sequence_with_fixed_weights_skips_their_gradients_only(kernel, workers):
    rng = torch.Generator().manual_seed(1)
    w = () if workers is None else (workers,)
    x_projection, h0 = torch.randn(*w, 5, 2, 12, generator=rng), torch.randn(*w, 2, 4, generator=rng)
    w_hh, b_hh = torch.randn(*w, 12, 4, generator=rng), torch.randn(*w, 12, generator=rng)

    def input_gradients(weights_need_grad: bool):
        inputs = [x_projection.clone().requires_grad_(), h0.clone().requires_grad_()]
        weights = [w_hh.clone().requires_grad_(weights_need_grad), b_hh.clone().requires_grad_(weights_need_grad)]
        compiled_rnn.run_gru_sequence(kernel, *inputs, *weights, clip=0.9).pow(2).sum().backward()
        return [t.grad for t in inputs], [t.grad for t in weights]

    (dx_all, dh_all), trained = input_gradients(True)
    (dx_fixed, dh_fixed), fixed = input_gradients(False)
    torch.testing.assert_close(dx_fixed, dx_all)
    torch.testing.assert_close(dh_fixed, dh_all)
    assert all(g is not None for g in trained) and all(g is None for g in fixed)


@pytest.mark.parametrize("workers", [None, 3], ids=["one-model", "stacked"])
@pytest.mark.parametrize("per_step_generator_bias", [False, True])
def test_decoder_with_fixed_weights_skips_their_gradients_only(kernel, per_step_generator_bias, workers):
    steps, trials, con, gen, factors, inputs_dim = 4, 3, 5, 6, 3, 2
    rng = torch.Generator().manual_seed(2)
    w = () if workers is None else (workers,)  # the weights' leading axes
    b = (trials,) if workers is None else (workers, trials)  # a state's batch axes
    seq = _sequence_shape(steps, trials, workers)

    def draw(*shape):
        return torch.randn(*shape, generator=rng)

    noise, keep = draw(*seq(0, inputs_dim)), torch.ones(*seq(1, gen))
    activations = [draw(*seq(0, 3 * con)), draw(*b, gen), draw(*b, con)]
    bias = draw(*seq(0, 3 * gen)) if per_step_generator_bias else draw(*w, 3 * gen)
    weights = [draw(*w, 3 * con, factors), draw(*w, 3 * con, con), draw(*w, 3 * con), draw(*w, 2 * inputs_dim, con),
               draw(*w, 2 * inputs_dim), draw(*w, 3 * gen, inputs_dim), bias, draw(*w, 3 * gen, gen),
               draw(*w, 3 * gen), draw(*w, factors, gen)]

    def gradients(weights_need_grad: list[bool]):
        inputs = [t.clone().requires_grad_() for t in activations]
        held = [t.clone().requires_grad_(flag) for t, flag in zip(weights, weights_need_grad)]
        outputs = compiled_rnn.run_controlled_decoder(kernel, *inputs, noise, keep, held, 0.8)
        sum(o.pow(2).sum() for o in outputs[:4]).backward()
        return [t.grad for t in inputs], [t.grad for t in held]

    inputs_all, trained = gradients([True] * len(weights))
    inputs_fixed, fixed = gradients([False] * len(weights))
    for a, b in zip(inputs_fixed, inputs_all):
        torch.testing.assert_close(a, b)
    assert all(g is not None for g in trained) and all(g is None for g in fixed)
    # Some weights fixed, some trained (e.g. a model partly frozen for fine-tuning): the trained ones
    # get the gradients they get when all are trained.
    alternate = [i % 2 == 0 for i in range(len(weights))]
    inputs_mixed, mixed = gradients(alternate)
    for a, b in zip(inputs_mixed, inputs_all):
        torch.testing.assert_close(a, b)
    for flag, got, full in zip(alternate, mixed, trained):
        if flag:
            torch.testing.assert_close(got, full)
        else:
            assert got is None


def test_switched_off_by_environment(kernel, monkeypatch):
    monkeypatch.setenv("NEURODYN_COMPILED_KERNELS", "0")
    assert compiled_rnn.load_compiled_rnn() is None
    monkeypatch.setenv("NEURODYN_COMPILED_KERNELS", "1")
    assert compiled_rnn.load_compiled_rnn() is kernel


def test_failed_build_falls_back_to_python_loop(monkeypatch, caplog):
    from torch.utils import cpp_extension

    def broken_build(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(cpp_extension, "load", broken_build)
    compiled_rnn._build.cache_clear()
    try:
        with caplog.at_level(logging.WARNING):
            assert compiled_rnn.load_compiled_rnn() is None
        assert "no compiler here" in caplog.text
        output = make_model(co_dim=2, clip=5.0)(torch.rand(TRIALS, STEPS, NEURONS, dtype=torch.double), True)
        assert output.factors.shape == (TRIALS, STEPS, 3) and torch.isfinite(output.factors).all()
    finally:
        compiled_rnn._build.cache_clear()


def test_the_build_message_is_printed_only_when_building(kernel, capsys):
    """A kernel already built (here: by the fixture) is loaded without announcing a build."""
    compiled_rnn._build.cache_clear()
    try:
        assert compiled_rnn.load_compiled_rnn() is not None
    finally:
        compiled_rnn._build.cache_clear()
    assert "building the compiled recurrent kernels" not in capsys.readouterr().err


def test_every_checkout_builds_from_one_copy_of_the_source_named_by_its_content(tmp_path):
    """Two checkouts of one version must load one build: the build records the source's path, so each
    building from its own file would rebuild the other's kernel (tens of seconds) at every switch."""
    source = b"// kernel v1\n"
    target = tmp_path / "sources" / "neurodyn_compiled_rnn_cpu_hash1.cpp"
    first = compiled_rnn.stable_source_copy(source, target)
    written = first.stat().st_mtime_ns
    assert first == target and first.read_bytes() == source
    assert compiled_rnn.stable_source_copy(source, target) == first
    assert first.stat().st_mtime_ns == written  # not rewritten: a newer source would trigger a rebuild
    target.write_bytes(b"// truncated by a crash")
    assert compiled_rnn.stable_source_copy(source, target).read_bytes() == source
    assert list(target.parent.iterdir()) == [target]  # no partial files left


def test_a_build_made_from_another_source_path_is_announced_as_a_build(tmp_path):
    (tmp_path / "build.ninja").write_text("build x.o: compile /home/a/checkout1/compiled_rnn.cpp\n")
    assert compiled_rnn._built_from(tmp_path, Path("/home/a/checkout1/compiled_rnn.cpp"))
    assert not compiled_rnn._built_from(tmp_path, Path("/cache/neurodyn_sources/k.cpp"))
    assert not compiled_rnn._built_from(tmp_path / "missing", Path("/cache/neurodyn_sources/k.cpp"))


def test_build_is_named_by_cpu(monkeypatch):
    """Builds for different CPUs (a shared home directory on a cluster) must not overwrite each other."""
    tag = compiled_rnn.cpu_tag()
    assert tag == compiled_rnn.cpu_tag() and len(tag) == 10
    monkeypatch.setattr(compiled_rnn.platform, "machine", lambda: "some-other-architecture")
    assert compiled_rnn.cpu_tag() != tag


# --- measured inputs (ext_input) -----------------------------------------------------------------


def test_ext_input_enters_the_generator_as_its_last_input_columns(monkeypatch):
    """Independent check: the generator's input is [co_t, ext_t]: a step-by-step loop of torch.gru_cell
    over that concatenation (clip large, no dropout, posterior means) gives the same factors."""
    monkeypatch.setenv("NEURODYN_COMPILED_KERNELS", "1")
    model = make_model(co_dim=2, clip=50.0, ext_input_dim=EXT).eval()
    decoder = model.decoder
    generator = torch.Generator().manual_seed(3)
    gen_init = torch.randn(TRIALS, 7, dtype=torch.double, generator=generator)
    controller_inputs = torch.randn(TRIALS, STEPS, 4, dtype=torch.double, generator=generator)
    ext_input = torch.randn(TRIALS, STEPS, EXT, dtype=torch.double, generator=generator)
    factor_weight = F.normalize(decoder.factors.weight, dim=1)
    with torch.no_grad():
        output_factors, _, _, _, output_states = model._controlled(
            gen_init[None], controller_inputs[None], False, ForwardNoise(), ext_input[None])
        gen_h, con_h = gen_init, decoder.controller_initial_state.expand(TRIALS, -1)
        factor = gen_h @ factor_weight.T
        factors, states = [], []
        for t in range(STEPS):
            con_h = torch.gru_cell(torch.cat([controller_inputs[:, t], factor], -1), con_h,
                                   *[getattr(decoder.controller, n) for n in
                                     ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")])
            co_mean = decoder.controller_output(con_h)[:, :2]
            gen_h = torch.gru_cell(torch.cat([co_mean, ext_input[:, t]], -1), gen_h,
                                   *[getattr(decoder.generator, n) for n in
                                     ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")])
            factor = gen_h @ factor_weight.T
            factors.append(factor)
            states.append(gen_h)
    torch.testing.assert_close(output_factors[0], torch.stack(factors, 1), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(output_states[0], torch.stack(states, 1), rtol=1e-10, atol=1e-12)


def test_compiled_per_step_generator_bias_gradients_match_finite_differences(kernel):
    _check_decoder_gradients(kernel, per_step_generator_bias=True)
