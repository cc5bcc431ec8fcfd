"""The compiled RNN kernels (controller/generator loop, GRU over a sequence): same numbers and
gradients as the PyTorch code they replace, checked against finite differences, switchable off, and
a failed build falls back to PyTorch."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch.autograd import gradcheck

from neurodyn.lfads import compiled_rnn
from neurodyn.lfads.decoder import Decoder
from neurodyn.lfads.dropout import Dropout
from neurodyn.lfads.encoders import BidirectionalEncoder

STEPS, TRIALS = 6, 3


@pytest.fixture(scope="module")
def kernel():
    built = compiled_rnn.load_compiled_rnn()
    assert built is not None, "the compiled decoder must build on the project's machines (gcc + ninja)"
    return built


def make_decoder(clip: float) -> Decoder:
    torch.manual_seed(0)
    decoder = Decoder(gen_dim=7, factors_dim=3, co_dim=2, con_dim=5, ci_dim=4, cell_clip_value=clip,
                      dropout=Dropout(0.3)).double()
    for parameter in decoder.parameters():  # large weights, so some states hit the clip
        torch.nn.init.normal_(parameter, std=0.8)
    return decoder


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


def outputs_and_gradients(decoder: Decoder, monkeypatch, compiled: bool, sample: bool):
    monkeypatch.setenv("NEURODYN_COMPILED_KERNELS", "1" if compiled else "0")
    inputs = torch.Generator().manual_seed(1)
    gen_init = torch.randn(TRIALS, 7, dtype=torch.double, generator=inputs, requires_grad=True)
    controller_inputs = torch.randn(TRIALS, STEPS, 4, dtype=torch.double, generator=inputs, requires_grad=True)
    output = decoder(gen_init, STEPS, controller_inputs, sample, torch.Generator().manual_seed(5))
    return gradients_of((output.factors, output.co_mean, output.co_std, output.co_sample),
                        [gen_init, controller_inputs, *decoder.parameters()])


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("sample", [True, False])
def test_compiled_loop_matches_python_loop(kernel, monkeypatch, training, sample):
    decoder = make_decoder(clip=0.6)
    decoder.train(training)
    assert_same(outputs_and_gradients(decoder, monkeypatch, True, sample),
                outputs_and_gradients(decoder, monkeypatch, False, sample))


def test_clip_is_active_in_the_comparison(kernel):
    """The comparison above must exercise the clip's zero gradient: some states do reach +-0.6."""
    decoder = make_decoder(clip=0.6)
    weights = (decoder.controller.weight_ih_l0[:, 4:], decoder.controller.weight_hh_l0, decoder.controller.bias_hh_l0,
               decoder.controller_output.weight, decoder.controller_output.bias, decoder.generator.weight_ih_l0,
               decoder.generator.bias_ih_l0, decoder.generator.weight_hh_l0, decoder.generator.bias_hh_l0,
               decoder.factors.normalised_weight())
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


def test_compiled_bidirectional_encoder_matches_nn_gru(kernel, monkeypatch):
    torch.manual_seed(0)
    encoder = BidirectionalEncoder(5, 6).double()
    for parameter in encoder.parameters():
        torch.nn.init.normal_(parameter, std=0.7)
    x = torch.randn(3, 8, 5, dtype=torch.double, requires_grad=True)
    results = []
    for compiled in ("1", "0"):
        monkeypatch.setenv("NEURODYN_COMPILED_KERNELS", compiled)
        results.append(gradients_of(encoder(x), [x, *encoder.parameters()]))
    assert_same(*results)


def test_compiled_autonomous_generator_matches_pytorch(kernel, monkeypatch):
    torch.manual_seed(0)
    decoder = Decoder(gen_dim=7, factors_dim=3, co_dim=0, con_dim=5, ci_dim=4, cell_clip_value=0.5,
                      dropout=Dropout(0.0)).double()
    for parameter in decoder.parameters():
        torch.nn.init.normal_(parameter, std=0.9)
    gen_init = torch.randn(3, 7, dtype=torch.double, requires_grad=True)
    results = []
    for compiled in ("1", "0"):
        monkeypatch.setenv("NEURODYN_COMPILED_KERNELS", compiled)
        output = decoder(gen_init, 8, None, False)
        results.append(gradients_of((output.factors,), [gen_init, *decoder.parameters()]))
    assert_same(*results)


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
        decoder = make_decoder(clip=5.0)
        output = decoder(torch.randn(TRIALS, 7, dtype=torch.double), STEPS,
                         torch.randn(TRIALS, STEPS, 4, dtype=torch.double), True)
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


# --- measured inputs (ext_input) and generator states -------------------------------------------

EXT = 2


def make_decoder_with_ext_input(co_dim: int, clip: float) -> Decoder:
    torch.manual_seed(0)
    decoder = Decoder(gen_dim=7, factors_dim=3, co_dim=co_dim, con_dim=5, ci_dim=4, cell_clip_value=clip,
                      dropout=Dropout(0.3), ext_input_dim=EXT).double()
    for parameter in decoder.parameters():
        torch.nn.init.normal_(parameter, std=0.8)
    return decoder


def ext_outputs_and_gradients(decoder: Decoder, monkeypatch, compiled: bool, sample: bool):
    monkeypatch.setenv("NEURODYN_COMPILED_KERNELS", "1" if compiled else "0")
    inputs = torch.Generator().manual_seed(1)
    gen_init = torch.randn(TRIALS, 7, dtype=torch.double, generator=inputs, requires_grad=True)
    ext_input = torch.randn(TRIALS, STEPS, EXT, dtype=torch.double, generator=inputs, requires_grad=True)
    leaves = [gen_init, ext_input, *decoder.parameters()]
    if decoder.co_dim:
        controller_inputs = torch.randn(TRIALS, STEPS, 4, dtype=torch.double, generator=inputs, requires_grad=True)
        leaves.append(controller_inputs)
        output = decoder(gen_init, STEPS, controller_inputs, sample, torch.Generator().manual_seed(5), ext_input)
        outputs = (output.factors, output.co_mean, output.co_std, output.co_sample)
    else:
        output = decoder(gen_init, STEPS, None, sample, torch.Generator().manual_seed(5), ext_input)
        outputs = (output.factors,)
    values, grads = gradients_of(outputs, leaves)
    return (*values, output.gen_states), grads


@pytest.mark.parametrize("co_dim", [0, 2])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("clip", [0.6, 5.0])
def test_compiled_loop_with_ext_input_matches_python_loop(kernel, monkeypatch, co_dim, training, clip):
    """Values, generator states and every gradient (the measured inputs' and their weights' included)."""
    decoder = make_decoder_with_ext_input(co_dim, clip)
    decoder.train(training)
    compiled = ext_outputs_and_gradients(decoder, monkeypatch, True, sample=True)
    reference = ext_outputs_and_gradients(decoder, monkeypatch, False, sample=True)
    assert_same(compiled, reference)
    ext_grad = compiled[1][1]
    w_ext_grad = compiled[1][2 + [name for name, _ in decoder.named_parameters()].index("generator.weight_ih_l0")]
    assert ext_grad.abs().min() > 0  # every step's measured input reaches the outputs
    assert w_ext_grad[:, co_dim:].abs().sum() > 0


def test_ext_input_enters_the_generator_as_its_last_input_columns(monkeypatch):
    """Independent check: the generator's input is [co_t, ext_t]: a step-by-step loop of torch.gru_cell
    over that concatenation (clip large, no dropout, posterior means) gives the same factors."""
    monkeypatch.setenv("NEURODYN_COMPILED_KERNELS", "1")
    decoder = make_decoder_with_ext_input(co_dim=2, clip=50.0).eval()
    generator = torch.Generator().manual_seed(3)
    gen_init = torch.randn(TRIALS, 7, dtype=torch.double, generator=generator)
    controller_inputs = torch.randn(TRIALS, STEPS, 4, dtype=torch.double, generator=generator)
    ext_input = torch.randn(TRIALS, STEPS, EXT, dtype=torch.double, generator=generator)
    with torch.no_grad():
        output = decoder(gen_init, STEPS, controller_inputs, False, None, ext_input)
        gen_h, con_h = gen_init, decoder.controller_initial_state.expand(TRIALS, -1)
        factor = decoder.factors(gen_h)
        factors, states = [], []
        for t in range(STEPS):
            con_h = torch.gru_cell(torch.cat([controller_inputs[:, t], factor], -1), con_h,
                                   *[getattr(decoder.controller, n) for n in
                                     ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")])
            co_mean = decoder.controller_output(con_h)[:, :2]
            gen_h = torch.gru_cell(torch.cat([co_mean, ext_input[:, t]], -1), gen_h,
                                   *[getattr(decoder.generator, n) for n in
                                     ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")])
            factor = decoder.factors(gen_h)
            factors.append(factor)
            states.append(gen_h)
    torch.testing.assert_close(output.factors, torch.stack(factors, 1), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(output.gen_states, torch.stack(states, 1), rtol=1e-10, atol=1e-12)


def test_compiled_per_step_generator_bias_gradients_match_finite_differences(kernel):
    _check_decoder_gradients(kernel, per_step_generator_bias=True)


@pytest.mark.parametrize("co_dim", [0, 2])
def test_generator_states_of_compiled_and_python_paths_agree(kernel, monkeypatch, co_dim):
    """Without measured inputs too; states are (B, T, G) and detached."""
    torch.manual_seed(0)
    decoder = Decoder(gen_dim=7, factors_dim=3, co_dim=co_dim, con_dim=5, ci_dim=4, cell_clip_value=0.6,
                      dropout=Dropout(0.0)).double()
    for parameter in decoder.parameters():
        torch.nn.init.normal_(parameter, std=0.8)
    gen_init = torch.randn(TRIALS, 7, dtype=torch.double)
    controller_inputs = torch.randn(TRIALS, STEPS, 4, dtype=torch.double) if co_dim else None
    states = []
    for compiled in ("1", "0"):
        monkeypatch.setenv("NEURODYN_COMPILED_KERNELS", compiled)
        output = decoder(gen_init, STEPS, controller_inputs, False)
        assert output.gen_states.shape == (TRIALS, STEPS, 7) and not output.gen_states.requires_grad
        states.append(output.gen_states)
    torch.testing.assert_close(states[0], states[1], rtol=1e-10, atol=1e-12)
    assert states[0].abs().max() <= 0.6  # the clipped states, as the loop carries them
