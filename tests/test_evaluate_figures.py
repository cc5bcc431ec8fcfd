"""The real-data summary figure: condition averages, factor PCs, training-log reading, the figure itself."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from sklearn.decomposition import PCA

from neurodyn.evaluate.figures import condition_averages, leading_components, plot_data_summary
from neurodyn.runs.tables import read_csv_columns as read_train_log


def test_condition_averages_match_a_per_condition_loop_and_skip_nan():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(12, 5, 3))
    values[rng.random(values.shape) < 0.3] = np.nan
    values[np.array([1, 4, 7]), 2, 0] = np.nan  # every trial of condition 1 unobserved there
    condition = np.array([0, 1, 2] * 4)
    labels, averages = condition_averages(values, condition)
    np.testing.assert_array_equal(labels, [0, 1, 2])
    for index, label in enumerate(labels):
        members = values[condition == label]
        for t in range(5):
            for n in range(3):
                observed = members[:, t, n][~np.isnan(members[:, t, n])]
                expected = observed.mean() if observed.size else np.nan
                np.testing.assert_allclose(averages[index, t, n], expected)
    _, trial_average = condition_averages(values)  # no condition: one average over every trial
    np.testing.assert_allclose(trial_average[0], np.nanmean(values, axis=0))


def test_leading_components_agree_with_sklearn_pca():
    rng = np.random.default_rng(1)
    factors = rng.normal(size=(20, 15, 6)) @ rng.normal(size=(6, 6))
    projected, explained = leading_components(factors, 3)
    pca = PCA(n_components=3).fit(factors.reshape(-1, 6))
    reference = pca.transform(factors.reshape(-1, 6)).reshape(20, 15, 3)
    # Components are defined up to sign; compare each with its best-matching sign.
    for k in range(3):
        sign = np.sign(np.sum(projected[..., k] * reference[..., k]))
        np.testing.assert_allclose(projected[..., k], sign * reference[..., k], atol=1e-9)
    np.testing.assert_allclose(explained, pca.explained_variance_ratio_, rtol=1e-9)


def test_read_train_log(tmp_path):
    path = tmp_path / "train_log.csv"
    path.write_text("epoch,train_nll,valid_nll\n0,1.5,1.6\n1,1.2,nan\n")
    log = read_train_log(path)
    np.testing.assert_array_equal(log["epoch"], [0, 1])
    assert log["train_nll"][1] == 1.2 and np.isnan(log["valid_nll"][1])
    assert read_train_log(tmp_path / "absent.csv") is None


@pytest.mark.parametrize("with_condition, bin_ms, with_log", [(True, 20.0, True), (False, None, False)])
def test_summary_figure_draws_data_and_model_per_condition(with_condition, bin_ms, with_log):
    rng = np.random.default_rng(2)
    rates = rng.uniform(0.1, 2.0, size=(9, 10, 5))
    data = rng.poisson(rates).astype(float)
    data[rng.random(data.shape) < 0.2] = np.nan
    factors = rng.normal(size=(9, 10, 4))
    condition = np.array([0, 1, 2] * 3) if with_condition else None
    log = {"epoch": np.arange(4.0), "train_nll": np.linspace(2, 1, 4), "valid_nll": np.linspace(2.1, 1.2, 4)}
    fig = plot_data_summary(rates, data, factors, condition, bin_ms=bin_ms, train_log=log if with_log else None,
                            num_neurons=2)
    try:
        axes = fig.axes
        psth = axes[0]
        lines = psth.get_lines()
        num_conditions = 3 if with_condition else 1
        assert len(lines) == 2 * num_conditions  # data and model per condition
        neuron = int(psth.get_title().split()[-1])
        _, rate_avg = condition_averages(rates, condition)
        np.testing.assert_allclose(lines[1].get_ydata(), rate_avg[0, :, neuron])
        expected_time = np.arange(10) * (bin_ms or 1.0)
        np.testing.assert_allclose(lines[1].get_xdata(), expected_time)
        assert psth.get_xlabel() == ("time (ms)" if bin_ms else "time bin")
        titles = [ax.get_title() for ax in axes]
        assert any(t.startswith("factor PC 1") for t in titles)
        assert ("training curve (train_log.csv)" in titles) == with_log
    finally:
        plt.close(fig)


def test_training_logs_of_a_train_folder_and_of_a_population(tmp_path):
    from neurodyn.runs.tables import find_training_logs

    run = tmp_path / "run"
    run.mkdir()
    (run / "train_log.csv").write_text("epoch,train_nll\n0,1.0\n")
    found = find_training_logs(run)
    assert found["pbt_log"] is None and list(found["train_log"]["train_nll"]) == [1.0]

    results = tmp_path / "results"
    (results / "pbt_best_model").mkdir(parents=True)
    (results / "session").mkdir()
    (results / "session" / "pbt_log.csv").write_text(
        "generation,worker,metric,copied_from\n0,0,0.9,\n0,1,0.8,\n1,0,0.85,1\n1,1,nan,\n")
    found = find_training_logs(results / "pbt_best_model", results)
    assert found["train_log"] is None
    np.testing.assert_array_equal(found["pbt_log"]["generation"], [0, 0, 1, 1])
    fig = plot_data_summary(np.ones((2, 3, 2)), np.ones((2, 3, 2)), np.random.default_rng(0).normal(size=(2, 3, 3)),
                            **found)
    try:
        curve = next(ax for ax in fig.axes if ax.get_title() == "population training (pbt_log.csv)")
        best = curve.get_lines()[1]
        np.testing.assert_allclose(best.get_ydata(), [0.8, 0.8])  # best so far, NaN worker ignored
    finally:
        plt.close(fig)
