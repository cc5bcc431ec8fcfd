"""Digit loaders (IDX, npz, sklearn) and the GFR network / vanilla RNN."""

import gzip

import numpy as np
import pytest
import torch

from neurodyn.errors import NeurodynError
from neurodyn.gfr.digits import DigitData, load_mnist, load_sklearn_digits, read_idx
from neurodyn.gfr.model import GFR
from neurodyn.gfr.network import (GFRNetwork, VanillaRNN, count_trainable, matched_rnn_hidden, sample_neuron_params,
                                  train_classifier)


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


def test_network_forward_matches_a_manual_unroll_with_the_extra_zero_step():
    torch.manual_seed(0)
    net = GFRNetwork(3, 5, 4, bin_size=20)
    x = torch.rand(2, 6, 3)
    neurons = net.neurons
    h, f = neurons.initial_state(2)
    steps = list(x.unbind(1)) + [torch.zeros(2, 3)]
    for x_t in steps:
        current = neurons.g.max_current * (net.fc1(x_t) + net.fc2(f))
        h = (1 - neurons.ds) * h + current[..., None] * neurons.a + 1000 * neurons.b * f[..., None]
        f = neurons.g(h.mean(-1))
    torch.testing.assert_close(net(x), net.fc3(f))


def test_freezing_neurons_and_activations():
    data = load_sklearn_digits()
    small = DigitData(data.x_train[:64], data.y_train[:64], data.x_test[:32], data.y_test[:32], "subset")
    net = GFRNetwork(8, 6, freeze_neurons=True, freeze_activations=True)
    frozen = {k: v.clone() for k, v in net.neurons.state_dict().items()}
    fc1 = net.fc1.weight.detach().clone()
    history = train_classifier(net, small, 1e-2, 1, 16, progress=False)
    assert len(history) == 1 and 0 <= history[0]["test_accuracy"] <= 1
    for k, v in net.neurons.state_dict().items():
        torch.testing.assert_close(v, frozen[k])
    assert not torch.equal(net.fc1.weight, fc1)
    trainable = GFRNetwork(8, 6)
    assert count_trainable(trainable) - count_trainable(net) == net.neurons.a.numel() * 2 + 6 * 3


def test_training_lowers_the_loss():
    data = load_sklearn_digits()
    small = DigitData(data.x_train[:256], data.y_train[:256], data.x_test[:64], data.y_test[:64], "subset")
    torch.manual_seed(0)
    history = train_classifier(GFRNetwork(8, 16), small, 1e-2, 4, 32, progress=False)
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_matched_rnn_has_the_closest_parameter_count():
    target = count_trainable(GFRNetwork(28, 65, bin_size=10))
    hidden = matched_rnn_hidden(28, 10, target)
    counts = {h: count_trainable(VanillaRNN(28, h)) for h in (hidden - 1, hidden, hidden + 1)}
    assert min(counts, key=lambda h: abs(counts[h] - target)) == hidden


def test_neurons_from_a_dataset():
    params = GFR(bin_size=20).get_params()
    params["g"]["max_current"] = 250.0
    records = [{"bin_size": 20, "actv_bin_size": 20, "params": params}]
    picked = sample_neuron_params(records, 3, 20, 20)
    net = GFRNetwork(8, 3, neuron_params=picked)
    assert net.neurons.g.max_current.tolist() == [250.0] * 3
    with pytest.raises(NeurodynError, match="no cells for bin size 10"):
        sample_neuron_params(records, 3, 10, 20)
