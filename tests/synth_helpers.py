"""Checks shared by the tests of the synthetic spike generators."""

import numpy as np


def assert_counts_match_truth(dataset, total_z: float = 4.0, neuron_z: float = 4.5) -> None:
    """The spike counts of ``dataset`` agree with its true expected counts within Poisson sampling error:
    the grand total within ``total_z`` standard deviations, every neuron's total within ``neuron_z``."""
    counts, truth = dataset.data.astype(np.float64), dataset.truth.astype(np.float64)
    assert abs(counts.sum() - truth.sum()) / np.sqrt(truth.sum()) < total_z
    z_neuron = (counts.sum(axis=(0, 1)) - truth.sum(axis=(0, 1))) / np.sqrt(truth.sum(axis=(0, 1)))
    assert np.abs(z_neuron).max() < neuron_z
