"""Fitting: the loss, the L1 penalty, per-run learning rates, data splits, acceptance, parallel runs."""

import copy

import numpy as np
import pytest
import torch

from neurodyn.errors import NeurodynError
from neurodyn.gfr.fit import (FitConfig, SweepBatch, fit_cell, fit_cells, l1_penalty, load_fit_config, poisson_nll,
                              save_fit_results, scale_updates_per_row, stimulus_onset_points)
from neurodyn.gfr.dataset import read_dataset_json
from neurodyn.gfr.model import GFR
from neurodyn.gfr.preprocess import BinnedSweep, process_cell, processed_path, write_processed
from neurodyn.gfr.simulate import Protocol, simulate_gfr_cell

TINY = FitConfig(activation_epochs=60, epochs=6, eval_every=3, workers=1)
PROTOCOL = Protocol(long_square_multiples=(-0.5, 1.0, 1.5, 2.0, 3.0), long_square_s=(0.1, 0.6, 0.1),
                    ramp_s=(0.1, 1.0, 0.1), noise_segment_s=0.6, noise_gap_s=0.1, noise_repeats=2,
                    sampling_rate_hz=1000.0)


def synthetic_cell(cell_id=1, seed=0):
    params = GFR(bin_size=20).get_params()
    params["a"][0][1] = 0.5  # published layout: a, b are (1, n), the activation values one-element lists
    params["b"][0][3] = -2e-3
    params["g"].update(max_current=[400.0], max_firing_rate=[0.15], poly_coeff=[[0.3, 1.5]], b=[100.0])
    cell = process_cell(cell_id, simulate_gfr_cell(params, 100.0, PROTOCOL, seed), bin_sizes=(20,))
    cell.max_firing_rate, cell.max_current = 0.15, 400.0
    return cell


def test_poisson_nll_hand_formula_and_padding_is_ignored():
    rates = torch.tensor([[[0.1], [0.2], [0.05]]])  # (1 sweep, 3 bins, 1 neuron), spikes/ms
    counts = torch.tensor([[1.0, 3.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the last bin is padding
    expected = ((2.0 - 1 * np.log(2.0)) + (4.0 - 3 * np.log(4.0))) / 2  # bin size 20 ms: means 2 and 4
    assert float(poisson_nll(rates, counts, mask, 20)[0]) == pytest.approx(expected, rel=1e-6)
    padded_rates = rates.clone().requires_grad_(True)
    poisson_nll(padded_rates, counts, mask, 20).sum().backward()
    assert padded_rates.grad[0, 2, 0] == 0


def test_padding_does_not_change_the_model_loss():
    model = GFR(bin_size=20)
    short = BinnedSweep(1, "Ramp", np.linspace(0, 3, 5), np.full(5, 0.05))
    long = BinnedSweep(2, "Ramp", np.linspace(0, 3, 9), np.full(9, 0.1))
    alone = SweepBatch.from_sweeps([short], 20, torch.device("cpu"))
    together = SweepBatch.from_sweeps([short, long], 20, torch.device("cpu"))
    assert together.mask.sum() == 14 and together.current.shape == (2, 9)
    loss_alone = poisson_nll(model(alone.current[..., None]), alone.counts, alone.mask, 20)
    per_bin = torch.nn.functional.poisson_nll_loss(model(together.current[..., None])[..., 0] * 20, together.counts,
                                                   log_input=False, reduction="none")
    assert float(per_bin[0, :5].mean().detach()) == pytest.approx(float(loss_alone[0].detach()), rel=1e-6)


def test_l1_penalty_has_the_gradient_c_times_sign():
    model = GFR(2, bin_size=50)
    with torch.no_grad():
        model.a.normal_()
        model.b.normal_()
    (0.3 * l1_penalty(model)).sum().backward()
    torch.testing.assert_close(model.a.grad, 0.3 * torch.sign(model.a.detach()))
    torch.testing.assert_close(model.b.grad, 0.3 * torch.sign(model.b.detach()))


def test_row_scaled_adam_equals_separate_runs_with_their_learning_rates():
    target = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    batched = torch.zeros(2, 2, requires_grad=True)
    opt = torch.optim.Adam([batched], lr=1e-2)
    separate = [torch.zeros(2, requires_grad=True) for _ in range(2)]
    opts = [torch.optim.Adam([separate[0]], lr=1e-2), torch.optim.Adam([separate[1]], lr=1e-3)]
    for _ in range(20):
        opt.zero_grad()
        ((batched - target) ** 3).abs().sum().backward()
        before = [batched.detach().clone()]
        opt.step()
        scale_updates_per_row([batched], before, torch.tensor([1.0, 0.1]))
        for p, o, t in zip(separate, opts, target):
            o.zero_grad()
            ((p - t) ** 3).abs().sum().backward()
            o.step()
    torch.testing.assert_close(batched.detach(), torch.stack(separate).detach(), rtol=1e-5, atol=1e-6)


def test_onset_point_skips_a_test_pulse():
    current = np.array([0, -10, 0, 0, 100, 100, 100, 0.0])
    sweep = BinnedSweep(1, "Long Square", current, np.array([0, 0, 0, 0, 0.15, 0.05, 0.05, 0]))
    x, n = stimulus_onset_points([sweep], 20)
    np.testing.assert_allclose(x, [100.0])
    np.testing.assert_allclose(n, [3.0])


def test_fit_cell_scores_and_never_uses_noise_2_for_training_or_selection():
    cell = synthetic_cell()
    result = fit_cell(cell, 20, 20, 1, 0.0, TINY)
    assert np.isfinite([result.val_evr, result.test_evr, result.train_loss, result.test_loss]).all()
    assert set(result.record()) == {"cell_id", "cre-line", "bin_size", "actv_bin_size", "val_evr", "test_evr",
                                    "train_loss", "test_loss", "params"}
    changed = copy.deepcopy(cell)
    for s in changed.sweeps[20]:
        if s.stimulus_name == "Noise 2":
            s.rate = np.roll(s.rate, 7)
    again = fit_cell(changed, 20, 20, 1, 0.0, TINY)
    assert again.params == result.params and again.val_evr == result.val_evr
    assert again.test_evr != result.test_evr


def test_acceptance_filter():
    cell = synthetic_cell()
    strict = fit_cell(cell, 20, 20, 1, 0.0, TINY.model_copy(update={"min_val_evr": 2.0, "max_train_loss": -1.0}))
    assert not strict.accepted and "validation EVR" in strict.reason and "training loss" in strict.reason
    lax = fit_cell(cell, 20, 20, 1, 0.0, TINY.model_copy(update={"min_val_evr": -10.0, "max_train_loss": 10.0}))
    assert lax.accepted and lax.reason == ""


def test_cell_without_noise_sweeps_is_a_clear_error(tmp_path):
    cell = synthetic_cell()
    cell.sweeps[20] = [s for s in cell.sweeps[20] if s.stimulus_name != "Noise 2"]
    path = tmp_path / "processed_I_and_firing_rate_1.h5"
    write_processed(path, cell)
    with pytest.raises(NeurodynError, match=r"processed_I_and_firing_rate_1.h5: no 'Noise 2' sweeps at 20 ms"):
        fit_cell(path, 20, 20, 1, 0.0, TINY)


def test_bad_options_and_config(tmp_path):
    cell = synthetic_cell()
    with pytest.raises(NeurodynError, match="unknown activation bin size 50"):
        fit_cell(cell, 20, 50, 1, 0.0, TINY)
    with pytest.raises(NeurodynError, match="C must be >= 0"):
        fit_cell(cell, 20, 20, 1, -1.0, TINY)
    (tmp_path / "c.json").write_text('{"train_stimuli": ["Long Square", "Noise 1"]}')
    with pytest.raises(NeurodynError, match="must not contain \\['Noise 1'\\]"):
        load_fit_config(tmp_path / "c.json")
    (tmp_path / "d.json").write_text('{"epochs": -3}')
    with pytest.raises(NeurodynError, match="key 'epochs'"):
        load_fit_config(tmp_path / "d.json")


def test_fit_cells_in_parallel_and_save(tmp_path):
    for cell_id in (1, 2):
        write_processed(processed_path(tmp_path, cell_id), synthetic_cell(cell_id, seed=cell_id))
    config = TINY.model_copy(update={"workers": 2, "min_val_evr": -10.0, "max_train_loss": 10.0})
    results, failures = fit_cells([1, 2, 3], tmp_path, 20, 20, 1, 0.0, config, {1: "Sst"}, progress=False)
    assert [r.cell_id for r in results] == [1, 2] and list(failures) == [3]
    assert "not found" in failures[3] and results[0].cre_line == "Sst"
    paths = save_fit_results(tmp_path / "out", results, failures, 20, 20)
    on_disk = read_dataset_json(paths["dataset"])
    assert [r["cell_id"] for r in on_disk] == [1, 2]
    for record in on_disk:  # the published layout, as the published get_params() writes it
        p = record["params"]
        assert np.shape(p["a"]) == np.shape(p["b"]) == (1, 8) and np.shape(p["ds"]) == (8,)
        assert np.shape(p["g"]["poly_coeff"]) == (1, 2)
        assert all(np.shape(p["g"][k]) == (1,) for k in ("max_current", "max_firing_rate", "b"))
    assert "not found" in paths["summary"].read_text()
