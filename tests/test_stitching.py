"""Several sessions in one model (stitching): combining the data, the per-session read-in and its PCR
initialisation, training, outputs per session, infer / evaluate per session, and the checks on input."""

import csv

import h5py
import numpy as np
import pytest
import torch
import yaml
from scipy.ndimage import gaussian_filter1d
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge

from neurodyn.cli.main import main
from neurodyn.config import LfadsConfig
from neurodyn.data.seed_format import NeuralDataset, write_dataset
from neurodyn.data.sessions import combine_sessions, session_names
from neurodyn.errors import NeurodynError
from neurodyn.lfads.model import LFADS
from neurodyn.lfads.stitching import (averaged_activity, initialise_stitched_model, pcr_alignment,
                                      shared_condition_labels)
from neurodyn.observation.registry import make_observation_model
from neurodyn.runs.checkpoint import load_checkpoint
from neurodyn.runs.outputs import read_split_output
from neurodyn.synth.lorenz_sessions import make_lorenz_sessions
from neurodyn.train.run import read_model_data, train_model
from neurodyn.train.trainer import LfadsTrainer

SMALL = {"ic_enc_dim": 8, "ci_enc_dim": 6, "con_dim": 6, "ic_dim": 4, "gen_dim": 12, "factors_dim": 5,
         "batch_size": 16, "max_epochs": 3, "kl_increase_epochs": 1, "l2_increase_epochs": 1,
         "posterior_samples": 4, "device": "cpu"}
NEURONS, TRIALS_PER_CONDITION = [9, 6, 5], [3, 3, 1]


def write_sessions(folder, neurons=NEURONS, trials=TRIALS_PER_CONDITION, **options):
    paths = []
    for index, dataset in enumerate(make_lorenz_sessions(neurons, trials, num_conditions=6, num_samples=14,
                                                         **options)):
        path = folder / f"day{index}.h5"
        write_dataset(path, dataset)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def stitched(tmp_path_factory):
    root = tmp_path_factory.mktemp("stitch")
    paths = write_sessions(root)
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(SMALL))
    out = root / "run"
    assert main(["train", str(config_path), "--data", *map(str, paths), "--out", str(out), "--no-progress"]) == 0
    return root, paths, out


# -- combining the data ---------------------------------------------------------------------------

def test_combined_dataset_puts_each_session_on_its_own_block_of_neurons():
    rng = np.random.default_rng(0)
    a = NeuralDataset(rng.poisson(1.0, (4, 6, 3)).astype(float), heldout_neurons=[2])
    b = NeuralDataset(rng.poisson(1.0, (5, 6, 2)).astype(float), heldout_neurons=[0], attrs={"bin_ms": 10.0})
    a.attrs["bin_ms"] = 10.0
    combined, layout = combine_sessions([a, b], ("a", "b"))
    assert combined.data.shape == (9, 6, 5)
    np.testing.assert_array_equal(combined.data[:4, :, :3], a.data)
    np.testing.assert_array_equal(combined.data[4:, :, 3:], b.data)
    assert np.isnan(combined.data[:4, :, 3:]).all() and np.isnan(combined.data[4:, :, :3]).all()
    assert combined.heldout_neurons.tolist() == [2, 3]
    assert layout.neuron_offsets == (0, 3) and layout.trial_offsets == (0, 4)
    np.testing.assert_array_equal(layout.session_of_trial(), [0] * 4 + [1] * 5)
    np.testing.assert_array_equal(layout.local_trials(1, np.array([1, 5, 8])), [1, 4])


@pytest.mark.parametrize("change, message", [
    (lambda d: NeuralDataset(d.data[:, :5], attrs=d.attrs), "trials of 5 bins"),
    (lambda d: NeuralDataset(d.data, attrs={"bin_ms": 5.0}), "attribute 'bin_ms'"),
    (lambda d: NeuralDataset(d.data.copy(), attrs=dict(d.attrs)), "holds the same data as"),
])
def test_sessions_that_cannot_share_a_model_get_one_line_naming_the_file(change, message):
    first = NeuralDataset(np.random.default_rng(1).poisson(1.0, (4, 6, 3)).astype(float), attrs={"bin_ms": 10.0},
                          source="first.h5")
    second = change(first)
    second.source = "second.h5"
    with pytest.raises(NeurodynError, match=message) as error:
        combine_sessions([first, second], ("first", "second"))
    assert str(error.value).startswith("second.h5:")


def test_two_files_with_one_stem_are_refused():
    with pytest.raises(NeurodynError, match="same file name"):
        session_names(["a/day.h5", "b/day.h5"])


def test_a_session_the_observation_model_does_not_fit_is_named(tmp_path):
    paths = write_sessions(tmp_path)
    with h5py.File(paths[1], "r+") as f:
        f["data"][0, 0, 0] = 0.5  # not a spike count
    with pytest.raises(NeurodynError, match="day1.h5: key 'data' holds non-integer values"):
        read_model_data(paths, LfadsConfig(**SMALL))


def test_different_event_delays_are_refused(tmp_path):
    paths = write_sessions(tmp_path)
    with h5py.File(paths[2], "r+") as f:
        f.attrs["event_delay_ms"] = 40.0
    with pytest.raises(NeurodynError, match="day2.h5: an event delay of 2 bins"):
        read_model_data(paths, LfadsConfig(**SMALL))


def test_each_session_is_split_on_its_own(tmp_path):
    paths = write_sessions(tmp_path)
    data = read_model_data(paths, LfadsConfig(**SMALL))
    for s in range(3):
        train = data.sessions.local_trials(s, data.split.train)
        valid = data.sessions.local_trials(s, data.split.valid)
        assert train.size and valid.size
        assert np.union1d(train, valid).size == data.sessions.num_trials[s]
    assert data.config.session_neurons == NEURONS


# -- the read-in and its PCR initialisation -------------------------------------------------------

def test_session_readin_is_a_separate_linear_map_per_session():
    torch.manual_seed(0)
    model = LFADS(LfadsConfig(session_neurons=[4, 3], readin_dim=3, co_dim=0), 7, make_observation_model("poisson", 7))
    readin = model.readin
    blocks = [slice(0, 4), slice(4, 7)]
    x = torch.zeros(5, 6, 7)
    session = torch.tensor([0, 1, 1, 0, 1])
    for trial, s in enumerate(session.tolist()):
        x[trial, :, blocks[s]] = torch.randn(6, blocks[s].stop - blocks[s].start)
    out = model._readin(x.unsqueeze(0), session.unsqueeze(0))[0]
    for trial, s in enumerate(session.tolist()):
        expected = torch.nn.functional.linear(x[trial, :, blocks[s]], readin.weight[:, blocks[s]], readin.bias[s])
        torch.testing.assert_close(out[trial], expected)


def test_pcr_alignment_matches_an_independent_pca_and_ridge():
    rng = np.random.default_rng(3)
    shared = rng.standard_normal((40, 3))
    averages = [shared @ rng.standard_normal((3, n)) + 0.1 * rng.standard_normal((40, n)) + 2.0 for n in (6, 4, 5)]
    k = 3
    alignments = pcr_alignment(averages, readin_dim=k)
    centred = [a - a.mean(0) for a in averages]
    scores = PCA(n_components=k, svd_solver="full").fit_transform(np.concatenate(centred, axis=1))
    basis = scores / scores.std(0)
    for block, average, alignment in zip(centred, averages, alignments):
        lam = 1e-3 * np.mean(np.diag(block.T @ block))
        ridge = Ridge(alpha=lam, fit_intercept=False).fit(block, basis)
        # Principal components are defined up to sign: compare with each component's sign aligned.
        signs = np.sign(np.sum(alignment.weight * ridge.coef_.T, axis=0))
        np.testing.assert_allclose(alignment.weight * signs, ridge.coef_.T, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(alignment.bias, -average.mean(0) @ alignment.weight, rtol=1e-10)
        activity_map = np.linalg.pinv(basis) @ block
        np.testing.assert_allclose(alignment.activity_map * signs[:, None], activity_map, rtol=1e-6, atol=1e-9)
        # The read-in of a session's averaged activity gives (about) the shared basis.
        readin = average @ alignment.weight + alignment.bias
        assert np.corrcoef(readin[:, 0], basis[:, 0] * signs[0])[0, 1] > 0.99


def test_averaged_activity_is_the_smoothed_condition_mean_of_observed_entries():
    rng = np.random.default_rng(4)
    data = rng.poisson(2.0, (6, 10, 3)).astype(float)
    data[0, 2, 1] = np.nan
    condition = np.array([0, 1, 0, 1, 0, 1])
    result = averaged_activity(data, condition, np.array([1, 0]))
    expected = []
    for label in (1, 0):
        mean = np.nanmean(data[condition == label], axis=0)
        expected.append(gaussian_filter1d(mean, 2.0, axis=0, mode="nearest"))
    np.testing.assert_allclose(result, np.concatenate(expected), rtol=1e-12)


def test_condition_labels_shared_by_every_session():
    assert shared_condition_labels([np.array([0, 1, 2]), np.array([2, 1, 5])]).tolist() == [1, 2]
    assert shared_condition_labels([np.array([0]), None]) is None
    assert shared_condition_labels([np.array([0]), np.array([1])]) is None


def test_trainer_initialises_the_readin_by_pcr_and_needs_the_sessions(tmp_path):
    data = read_model_data(write_sessions(tmp_path), LfadsConfig(**SMALL))
    inputs = data.trainer_inputs()
    trainer = LfadsTrainer(data.config, **inputs)
    # The read-in of the training trials' condition averages is centred: the PCR bias is -mean x W.
    s, block = 1, data.sessions.neurons(1)
    members = inputs["train_session"] == s
    average = averaged_activity(inputs["train_data"][members][..., block], inputs["train_condition"][members],
                                shared_condition_labels([inputs["train_condition"][inputs["train_session"] == i]
                                                         for i in range(3)]))
    readin = average @ trainer.model.readin.weight.detach().numpy()[:, block].T + \
        trainer.model.readin.bias.detach().numpy()[s]
    np.testing.assert_allclose(readin.mean(0), 0.0, atol=1e-4)
    with pytest.raises(NeurodynError, match="train_session"):
        LfadsTrainer(data.config, **{**inputs, "train_session": None})


def test_a_trials_output_does_not_depend_on_other_sessions_weights():
    config = LfadsConfig(**SMALL, session_neurons=[4, 3])
    torch.manual_seed(0)
    model = LFADS(config, 7, make_observation_model("poisson", 7)).eval()
    x = torch.zeros(2, 8, 7)
    x[:, :, :4] = torch.poisson(torch.full((2, 8, 4), 1.0))
    session = torch.zeros(2, dtype=torch.int64)
    before = model(x, sample_posteriors=False, session=session).readout[..., :4, :]
    with torch.no_grad():
        model.readin.weight[:, 4:] += 1.0
        model.readin.bias[1] += 1.0
        model.readout.weight[4:] += 1.0
    after = model(x, sample_posteriors=False, session=session).readout[..., :4, :]
    torch.testing.assert_close(before, after)
    with pytest.raises(NeurodynError, match="session index"):
        model(x, sample_posteriors=False)


# -- end to end -----------------------------------------------------------------------------------

def test_train_writes_each_sessions_outputs_in_its_own_folder(stitched):
    root, paths, out = stitched
    checkpoint = load_checkpoint(out / "checkpoint.safetensors")
    assert checkpoint["sessions"]["names"] == ["day0", "day1", "day2"]
    for path, neurons, trials in zip(paths, NEURONS, TRIALS_PER_CONDITION):
        seen = []
        for split in ("train", "valid"):
            output = read_split_output(out / path.stem / f"{split}_output.h5")
            assert output.rates.shape[1:] == (14, neurons)
            assert output.arrays["factors"].shape[-1] == SMALL["factors_dim"]
            seen += output.trial_idx.tolist()
            with h5py.File(out / path.stem / f"{split}_output.h5") as f:
                assert f.attrs["session"] == path.stem
        assert sorted(seen) == list(range(6 * trials))
        assert not (out / f"{path.stem}" / "test_output.h5").exists()
    assert not (out / "valid_output.h5").exists()


def test_infer_applies_the_model_to_a_sessions_file(stitched, tmp_path):
    root, paths, out = stitched
    target = tmp_path / "day1_again.h5"
    assert main(["infer", str(out), "--data", str(paths[1]), "--out", str(target), "--session", "day1"]) == 0
    valid = read_split_output(out / "day1" / "valid_output.h5", rates_key="rates_posterior_mean")
    again = read_split_output(target, rates_key="rates_posterior_mean")
    np.testing.assert_allclose(again.rates[valid.trial_idx], valid.rates, rtol=1e-4, atol=1e-6)
    # The session named like the file's stem is found without --session.
    assert main(["infer", str(out), "--data", str(paths[2]), "--out", str(tmp_path / "b.h5")]) == 0


def test_infer_refuses_a_file_of_another_session_or_no_session(stitched, tmp_path, capsys):
    root, paths, out = stitched
    assert main(["infer", str(out), "--data", str(paths[1]), "--out", str(tmp_path / "x.h5"),
                 "--session", "day0"]) != 0
    assert "has 6 neurons" in capsys.readouterr().err
    other = tmp_path / "other.h5"
    other.write_bytes(paths[1].read_bytes())
    assert main(["infer", str(out), "--data", str(other), "--out", str(tmp_path / "y.h5")]) != 0
    assert "--session NAME" in capsys.readouterr().err


def test_evaluate_and_map_to_latents_work_per_session(stitched, capsys):
    root, paths, out = stitched
    assert main(["evaluate", str(out), "--data", str(paths[2])]) == 0
    assert (out / "day2" / "evaluation.json").is_file()
    assert main(["map-to-latents", str(out), "--data", str(paths[0])]) == 0
    assert (out / "day0" / "map_to_latents.json").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(root / "config.yaml")]) != 0


def test_rerunning_continues_and_a_changed_session_is_refused(stitched, tmp_path):
    root, paths, out = stitched
    config = LfadsConfig(**SMALL)
    assert "nothing to do" in train_model(config, paths, out, progress=False, echo=lambda _: None).messages[0]
    copies = write_sessions(tmp_path, seed=5)
    with pytest.raises(NeurodynError, match="another data file"):
        train_model(config, copies, out, progress=False, echo=lambda _: None)


def test_overwrite_removes_the_earlier_sessions_folders(tmp_path):
    config = LfadsConfig(**{**SMALL, "max_epochs": 1})
    paths = write_sessions(tmp_path, neurons=[5, 4], trials=[2, 2])
    out = tmp_path / "run"
    train_model(config, paths, out, progress=False, echo=lambda _: None)
    assert (out / "day1" / "valid_output.h5").is_file()
    train_model(config, paths[0], out, progress=False, overwrite=True, echo=lambda _: None)
    assert not (out / "day1").exists() and (out / "valid_output.h5").is_file()


def test_heldout_neurons_in_the_config_are_refused_with_several_sessions(tmp_path):
    paths = write_sessions(tmp_path)
    with pytest.raises(NeurodynError, match="heldout_neurons"):
        read_model_data(paths, LfadsConfig(**SMALL, heldout_neurons=[1]))


def test_a_pbt_run_of_several_sessions_exports_each_sessions_outputs(tmp_path):
    from pbt_helpers import write_config

    paths = write_sessions(tmp_path, neurons=[5, 4], trials=[2, 2])
    config = write_config(tmp_path, num_workers=2, max_generations=1)
    out = tmp_path / "results"
    assert main(["run", str(config), "--data", *map(str, paths), "--out", str(out), "--no-progress"]) == 0
    best = out / "pbt_best_model"
    for path, neurons in zip(paths, (5, 4)):
        assert read_split_output(best / path.stem / "valid_output.h5").rates.shape[-1] == neurons
    assert load_checkpoint(best / "checkpoint.safetensors")["trainer"]["config"]["session_neurons"] == [5, 4]
    assert "stitching 2 sessions" in (out / "tiny" / "run.log").read_text()


def test_a_pbt_run_of_several_sessions_trains_a_population_with_the_embedded_engines_results(tmp_path):
    """engine: auto stitches in the batched population (each worker its own per-session read-ins)
    and gets the generations the per-process engine gets."""
    from pbt_helpers import write_config

    paths = write_sessions(tmp_path, neurons=[5, 4], trials=[2, 2])
    metrics = {}
    for engine in ("auto", "embedded"):
        folder = tmp_path / engine
        folder.mkdir()
        overrides = {} if engine == "auto" else {"engine": engine}
        config = write_config(folder, num_workers=2, max_generations=2, **overrides)
        assert main(["run", str(config), "--data", *map(str, paths), "--out", str(folder / "res"),
                     "--no-progress"]) == 0
        log = (folder / "res" / "tiny" / "run.log").read_text()
        assert ("engine: population" in log) == (engine == "auto")
        rows = list(csv.DictReader((folder / "res" / "tiny" / "pbt_log.csv").open()))
        metrics[engine] = [(r["generation"], r["worker"], float(r["metric"])) for r in rows]
    assert [row[:2] for row in metrics["auto"]] == [row[:2] for row in metrics["embedded"]]
    for (_, _, value), (_, _, reference) in zip(metrics["auto"], metrics["embedded"]):
        assert value == pytest.approx(reference, rel=1e-4)


def test_one_file_in_a_list_is_the_single_file_run(tmp_path):
    config = LfadsConfig(**{**SMALL, "max_epochs": 2})
    path = write_sessions(tmp_path, neurons=[5], trials=[3])[0]
    train_model(config, path, tmp_path / "plain", progress=False, echo=lambda _: None)
    train_model(config, [path], tmp_path / "listed", progress=False, echo=lambda _: None)
    for split in ("train", "valid"):
        plain = read_split_output(tmp_path / "plain" / f"{split}_output.h5")
        listed = read_split_output(tmp_path / "listed" / f"{split}_output.h5")
        np.testing.assert_array_equal(plain.rates, listed.rates)
    assert not [p for p in (tmp_path / "listed").iterdir() if p.is_dir()]
    assert "readin" not in "".join(load_checkpoint(tmp_path / "listed" / "checkpoint.safetensors")["trainer"]["model"])
    with pytest.raises(NeurodynError, match="session_neurons"):
        read_model_data(path, LfadsConfig(**SMALL, session_neurons=[2, 3]))


def test_pcr_sets_each_sessions_readout_rows_from_its_activity_map(tmp_path):
    from neurodyn.lfads.stitching import initialise_stitched_model

    data = read_model_data(write_sessions(tmp_path), LfadsConfig(**SMALL))
    inputs = data.trainer_inputs()
    trainer = LfadsTrainer(data.config, **inputs)
    alignments = initialise_stitched_model(trainer.model, inputs["train_data"], inputs["train_session"],
                                           inputs["train_condition"])
    weight = trainer.model.readout.weight.detach().numpy()  # (neurons x 1 Poisson parameter, factors)
    for s, alignment in enumerate(alignments):
        k = min(alignment.weight.shape[1], weight.shape[1])
        rows = weight[data.sessions.neurons(s), :k]
        np.testing.assert_allclose(rows, (alignment.activity_map[:k] / np.maximum(alignment.mean, 1e-3)).T,
                                   rtol=1e-5, atol=1e-6)
        assert trainer.model.readin.weight.shape == (SMALL["factors_dim"], sum(NEURONS))


def test_export_nlb_writes_one_sessions_submission(tmp_path):
    paths = write_sessions(tmp_path, neurons=[6, 5], trials=[2, 2])
    with h5py.File(paths[1], "r+") as f:
        f["heldout_neurons"] = np.array([1, 4])
    config = LfadsConfig(**{**SMALL, "max_epochs": 1})
    data = read_model_data(paths, config)
    assert data.config.heldout_neurons == [7, 10]  # session 1's neurons 1 and 4 after session 0's six
    train_model(config, paths, tmp_path / "run", progress=False, echo=lambda _: None)
    target = tmp_path / "submission.h5"
    assert main(["export", "nlb", str(tmp_path / "run"), str(target), "--data", str(paths[1]),
                 "--dataset", "lorenz"]) == 0
    valid = read_split_output(tmp_path / "run" / "day1" / "valid_output.h5")
    with h5py.File(target) as f:
        np.testing.assert_allclose(f["lorenz/eval_rates_heldout"][()], valid.rates[..., [1, 4]], rtol=1e-6)
        assert f["lorenz/train_rates_heldin"].shape[-1] == 3


def test_pcr_fits_the_readin_on_the_held_in_neurons_only(tmp_path):
    """Held-out neurons reach the encoders as zeros: they get no read-in weight and stay out of the basis
    and the bias, so the read-in of the training trials as the encoders see them is centred; the readout's
    activity map still covers them (an independent PCA + ridge on the held-in columns)."""
    paths = write_sessions(tmp_path, neurons=[7, 6], trials=[3, 3])
    heldout = {0: [1, 4], 1: [0, 5]}
    for s, local in heldout.items():
        with h5py.File(paths[s], "r+") as f:
            f["heldout_neurons"] = np.array(local)
            f["data"][...] = f["data"][()] + 3 * np.isin(np.arange(f["data"].shape[0]), local)[:, None, None]
    data = read_model_data(paths, LfadsConfig(**SMALL))
    assert data.config.heldout_neurons == [1, 4, 7, 12]
    inputs = data.trainer_inputs()
    trainer = LfadsTrainer(data.config, **inputs)
    weight = trainer.model.readin.weight.detach().numpy().astype(np.float64)  # (readin_dim, sum N_s)
    bias = trainer.model.readin.bias.detach().numpy().astype(np.float64)
    heldin = np.ones(sum(data.config.session_neurons), dtype=bool)
    heldin[data.config.heldout_neurons] = False
    assert np.all(weight[:, ~heldin] == 0.0)
    labels = shared_condition_labels([inputs["train_condition"][inputs["train_session"] == s] for s in range(2)])
    blocks = [data.sessions.neurons(s) for s in range(2)]
    members = [inputs["train_session"] == s for s in range(2)]
    averages = [averaged_activity(inputs["train_data"][m][..., b], inputs["train_condition"][m], labels)
                for m, b in zip(members, blocks)]
    seen = [heldin[b] for b in blocks]
    # Independently: PCA of the held-in columns, ridge of the unit-variance scores on each session's held-in columns.
    centred_in = [a[:, h] - a[:, h].mean(0) for a, h in zip(averages, seen)]
    k = weight.shape[0]
    scores = PCA(n_components=k, svd_solver="full").fit_transform(np.concatenate(centred_in, axis=1))
    basis = scores / scores.std(0)
    for s, (block, average, h, centred) in enumerate(zip(blocks, averages, seen, centred_in)):
        lam = 1e-3 * np.mean(np.diag(centred.T @ centred))
        expected = Ridge(alpha=lam, fit_intercept=False).fit(centred, basis).coef_  # (k, N_s^in)
        got = weight[:, block][:, h]
        signs = np.sign(np.sum(got * expected, axis=1, keepdims=True))
        np.testing.assert_allclose(got * signs, expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(bias[s], -average[:, h].mean(0) @ got.T, rtol=1e-4, atol=1e-5)
        # The read-in of the training trials as the encoders see them (held-out columns zero): centred.
        trials = np.nan_to_num(inputs["train_data"][members[s]][..., block]) * h
        outputs = trials @ weight[:, block].T + bias[s]
        np.testing.assert_allclose(((average * h) @ weight[:, block].T + bias[s]).mean(0), 0.0, atol=1e-4)
        # Centred up to the smoothing's edges (the PCR mean is over smoothed averages); fitted on every
        # column, the held-out neurons' -mean x weight left offsets of 2-8 here.
        assert np.abs(outputs.mean(axis=(0, 1))).max() < 0.15
    # The readout's map covers every neuron, held-out ones included.
    alignments = initialise_stitched_model(trainer.model, inputs["train_data"], inputs["train_session"],
                                           inputs["train_condition"])
    for alignment, h, average in zip(alignments, seen, averages):
        assert alignment.activity_map.shape[1] == h.size and np.abs(alignment.activity_map[:, ~h]).max() > 0
        np.testing.assert_array_equal(alignment.weight[~h], 0.0)
        np.testing.assert_allclose(alignment.mean, average.mean(0))


def test_pcr_alignment_leaves_held_out_columns_out_of_the_readin():
    rng = np.random.default_rng(7)
    shared = rng.standard_normal((30, 2))
    averages = [shared @ rng.standard_normal((2, n)) + 0.1 * rng.standard_normal((30, n)) + 5.0 for n in (5, 4)]
    heldin = [np.array([True, False, True, True, True]), np.array([False, True, True, True])]
    with_heldout = pcr_alignment(averages, readin_dim=2, heldin=heldin)
    # The read-in equals the one fitted on the held-in columns alone; held-out rows are zero.
    alone = pcr_alignment([a[:, h] for a, h in zip(averages, heldin)], readin_dim=2)
    for average, h, full, reference in zip(averages, heldin, with_heldout, alone):
        np.testing.assert_array_equal(full.weight[~h], 0.0)
        np.testing.assert_allclose(full.weight[h], reference.weight, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(full.bias, reference.bias, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(((average * h) @ full.weight + full.bias).mean(0), 0.0, atol=1e-10)
        assert full.activity_map.shape == (2, h.size)
