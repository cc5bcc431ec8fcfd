"""Digit loaders (IDX, npz, sklearn) and the GFR network / vanilla RNN."""

import gzip

import numpy as np
import pytest
import torch

from neurodyn.errors import NeurodynError
from neurodyn.gfr.digits import DigitData, load_mnist, load_sklearn_digits, read_idx, validation_split
from neurodyn.gfr.model import GFR
from neurodyn.gfr.network import (GFRNetwork, VanillaRNN, count_trainable, matched_rnn_hidden,
                                  sample_neuron_params, train_classifier)


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX by hand: two zero bytes, dtype 0x08 (ubyte), ndim, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_idx_reader_and_mnist_directory(tmp_path):
    images = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(images))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([3, 7])))
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(idx_bytes(images[:1]))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([3])))
    np.testing.assert_array_equal(read_idx(tmp_path / "train-images-idx3-ubyte"), images)
    data = load_mnist(tmp_path)
    assert data.x_train.shape == (2, 3, 4) and data.x_test.shape == (1, 3, 4)
    np.testing.assert_allclose(data.x_train, images / 23.0)
    assert data.y_train.tolist() == [3, 7]


def test_mnist_npz_and_errors(tmp_path):
    x = np.zeros((4, 2, 2), dtype=np.uint8)
    x[0, 0, 0] = 255
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=np.arange(4), x_test=x[:2], y_test=np.arange(2))
    assert load_mnist(tmp_path).x_train.max() == 1.0
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(NeurodynError, match="not an IDX file"):
        load_mnist(tmp_path / "bad")
    truncated = idx_bytes(np.zeros((3, 2, 2)))[:-1]
    (tmp_path / "t.idx").write_bytes(truncated)
    with pytest.raises(NeurodynError, match="promises shape"):
        read_idx(tmp_path / "t.idx")


def test_sklearn_digits_are_read_row_by_row():
    data = load_sklearn_digits()
    assert data.x_train.shape[1:] == (8, 8) and len(data.x_train) + len(data.x_test) == 1797
    assert 0.0 <= data.x_train.min() and data.x_train.max() == 1.0
    assert sorted(np.unique(data.y_test)) == list(range(10))


def test_network_forward_is_the_published_neuron_maths_with_the_extra_zero_step():
    """Unrolling the exported published-convention neurons by hand reproduces the network."""
    torch.manual_seed(0)
    records = []
    for i in range(5):
        p = GFR(bin_size=20).get_params()
        n = len(p["a"][0])  # published layout: a, b are (1, n), the activation values one-element lists
        p["a"] = [torch.randn(n).tolist()]
        p["b"] = [(torch.randn(n) * 1e-3).tolist()]
        p["g"].update(max_current=[100.0 + 50 * i], max_firing_rate=[0.05 + 0.01 * i], b=[3.0 * i],
                      poly_coeff=[[0.6, 1.3]])
        records.append(p)
    net = GFRNetwork(3, 5, 4, bin_size=20, neuron_params=records, horizon=7)
    for p, back in zip(records, net.neuron_params()):  # the training parameterisation round-trips
        np.testing.assert_allclose(back["a"], p["a"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(back["b"], p["b"], rtol=1e-5, atol=1e-9)
        assert back["g"]["b"] == pytest.approx(p["g"]["b"], abs=1e-5)
    x = torch.rand(2, 6, 3)
    neurons = net.neurons
    sigma, gamma = neurons.g.max_current, neurons.g.max_firing_rate
    h, f = neurons.initial_state(2)
    for x_t in list(x.unbind(1)) + [torch.zeros(2, 3)]:
        current = sigma * (net.fc1(x_t) + net.fc2(2 * f / gamma - 1))
        h = (1 - neurons.ds) * h + current[..., None] * neurons.a + 1000 * neurons.b * f[..., None]
        f = neurons.g(h.mean(-1))
    torch.testing.assert_close(net(x), net.fc3(2 * f / gamma - 1), rtol=1e-4, atol=1e-5)


def test_fresh_network_init_and_timescale_gains():
    net = GFRNetwork(8, 4, bin_size=10, horizon=9)
    cells = net.neurons
    n = cells.n_timescales
    assert cells.a[:, 0].tolist() == [n] * 4 and cells.a[:, 1:].abs().max() == 0 and cells.b.abs().max() == 0
    assert cells.g.poly_coeff[:, 0].tolist() == pytest.approx([0.7] * 4)
    # gain of timescale i over 9 steps: 1 for the memory-less one, close to 9 for the slowest
    expected = [sum((1 - d) ** k for k in range(9)) for d in cells.ds.tolist()]
    np.testing.assert_allclose(net.gain.numpy(), expected, rtol=1e-5)
    assert net.gain[0] == pytest.approx(1.0) and 8.5 < net.gain[-1] <= 9.0
    # a constant unit current held for the horizon adds w_i to mean(h) / sigma through timescale i
    with torch.no_grad():
        net.w.zero_()
        net.w[:, -1] = 0.3
        p = torch.zeros(4, n)
        for _ in range(9):
            p = (1 - net.ds) * p + net.w / net.gain
    np.testing.assert_allclose(p.sum(-1).numpy(), [0.3] * 4, rtol=1e-5)
    with pytest.raises(NeurodynError, match="horizon"):
        GFRNetwork(8, 4, horizon=0)


def test_freezing_neurons_and_activations():
    data = load_sklearn_digits()
    small = DigitData(data.x_train[:64], data.y_train[:64], data.x_test[:32], data.y_test[:32], "subset")
    net = GFRNetwork(8, 6, freeze_neurons=True, freeze_activations=True)
    frozen = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("fc")}
    fc1 = net.fc1.weight.detach().clone()
    history = train_classifier(net, small, 1e-2, 1, 16, progress=False)
    assert len(history) == 1 and 0 <= history[0]["test_accuracy"] <= 1
    for k, v in frozen.items():
        torch.testing.assert_close(net.state_dict()[k], v)
    assert not torch.equal(net.fc1.weight, fc1)
    trainable = GFRNetwork(8, 6)
    assert count_trainable(trainable) - count_trainable(net) == net.w.numel() * 2 + 6 * 3
    before = trainable.neuron_params()
    train_classifier(trainable, small, 1e-2, 1, 16, progress=False)
    after = trainable.neuron_params()
    assert any(b["a"] != a["a"] and b["b"] != a["b"] for a, b in zip(after, before))


def test_training_lowers_the_loss():
    data = load_sklearn_digits()
    small = DigitData(data.x_train[:256], data.y_train[:256], data.x_test[:64], data.y_test[:64], "subset")
    torch.manual_seed(0)
    history = train_classifier(GFRNetwork(8, 16, horizon=9), small, 1e-2, 4, 32, progress=False)
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]
    assert history[-1]["test_accuracy"] > 0.3  # well above chance (0.1) after 4 short epochs


def test_cosine_schedule_decays_the_learning_rate_to_zero():
    """Default training decays Adam's rate step by step on a half cosine; "constant" keeps it."""
    def cosine(step, total):  # closed form: half a cosine from 1 at step 0 to 0 at step `total`
        return 0.5 * (1.0 + np.cos(np.pi * step / total))

    data = load_sklearn_digits()
    small = DigitData(data.x_train[:64], data.y_train[:64], data.x_test[:16], data.y_test[:16], "subset")
    torch.manual_seed(0)
    history = train_classifier(VanillaRNN(8, 4), small, 1e-2, 4, 16, progress=False)
    lrs = [h["lr"] for h in history]  # rate of each epoch's last step: steps 3, 7, 11, 15 of 16
    np.testing.assert_allclose(lrs, [1e-2 * cosine(s, 16) for s in (3, 7, 11, 15)], rtol=1e-6)
    assert lrs[-1] < 1e-4
    history = train_classifier(VanillaRNN(8, 4), small, 1e-2, 2, 16, progress=False, schedule="constant")
    assert [h["lr"] for h in history] == [1e-2, 1e-2]
    with pytest.raises(NeurodynError, match="schedule"):
        train_classifier(VanillaRNN(8, 4), small, 1e-2, 1, 16, progress=False, schedule="step")


def test_relu_tanh_rnn_is_the_published_baseline_with_the_same_parameters():
    """relu(tanh(W x_t + U h_{t-1} + b)) unrolled by hand over the rows and the zero step; the tanh RNN
    is nn.RNN's; both count the same parameters."""
    torch.manual_seed(0)
    net = VanillaRNN(3, 5, 4, activation="relu_tanh")
    tanh_net = VanillaRNN(3, 5, 4)
    assert count_trainable(net) == count_trainable(tanh_net)
    tanh_net.load_state_dict(net.state_dict())
    x = torch.rand(2, 6, 3) - 0.3
    rnn = net.rnn
    h = torch.zeros(2, 5)
    h_tanh = torch.zeros(2, 5)
    for x_t in list(x.unbind(1)) + [torch.zeros(2, 3)]:
        pre = x_t @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + rnn.bias_hh_l0
        h = torch.relu(torch.tanh(pre + h @ rnn.weight_hh_l0.T))
        h_tanh = torch.tanh(pre + h_tanh @ rnn.weight_hh_l0.T)
    torch.testing.assert_close(net(x), net.readout(h), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tanh_net(x), net.readout(h_tanh), rtol=1e-5, atol=1e-6)
    assert (h == 0).any()  # the relu is active, so the two models really differ
    with pytest.raises(NeurodynError, match="activation"):
        VanillaRNN(3, 5, activation="relu")


def test_validation_split_is_stratified_and_disjoint_from_test():
    data = load_sklearn_digits()
    split = validation_split(data, 0.2, seed=0)
    assert len(split.x_train) + len(split.x_test) == len(data.x_train)
    assert abs(len(split.x_test) - 0.2 * len(data.x_train)) <= 1
    assert sorted(np.unique(split.y_test)) == list(range(10))
    flat = {row.tobytes() for row in data.x_test.reshape(len(data.x_test), -1)}
    held = [row.tobytes() for row in split.x_test.reshape(len(split.x_test), -1)]
    train_rows = {row.tobytes() for row in data.x_train.reshape(len(data.x_train), -1)}
    assert all(r in train_rows for r in held)
    assert sum(r in flat for r in held) <= sum(r in flat for r in train_rows)  # only duplicate images overlap
    with pytest.raises(NeurodynError, match="fraction"):
        validation_split(data, 1.0)


def test_matched_rnn_has_the_closest_parameter_count():
    target = count_trainable(GFRNetwork(28, 65, bin_size=10))
    hidden = matched_rnn_hidden(28, 10, target)
    counts = {h: count_trainable(VanillaRNN(28, h)) for h in (hidden - 1, hidden, hidden + 1)}
    assert min(counts, key=lambda h: abs(counts[h] - target)) == hidden


def test_neurons_from_a_dataset():
    params = GFR(bin_size=20).get_params()
    params["g"]["max_current"] = [250.0]
    records = [{"bin_size": 20, "actv_bin_size": 20, "params": params}]
    picked = sample_neuron_params(records, 3, 20, 20)
    net = GFRNetwork(8, 3, neuron_params=picked)
    assert net.neurons.g.max_current.tolist() == [250.0] * 3
    assert net.neuron_params()[0]["a"][0] == pytest.approx(params["a"][0])
    with pytest.raises(NeurodynError, match="no cells for bin size 10"):
        sample_neuron_params(records, 3, 10, 20)
