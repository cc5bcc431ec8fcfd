"""MATLAB .mat -> seed h5: orientation (v5 and v7.3 agree), optional variables, cells, clear errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.io

from neurodyn.cli.main import main
from neurodyn.data.matlab import MatVariables, convert_mat_file, read_mat_dataset
from neurodyn.data.seed_format import read_dataset
from neurodyn.errors import NeurodynError

NEURONS, SAMPLES, TRIALS, LATENTS = 4, 6, 5, 3


def save_mat_v73(path, variables: dict) -> None:
    """Write ``variables`` as MATLAB v7.3 does: HDF5 behind a 512-byte MAT header, column-major.

    Column-major storage means a MATLAB array of size (a, b, c) is an HDF5 dataset that h5py
    reads as (c, b, a): its transpose. Lists become cell arrays (row vectors) via object references.
    """
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in variables.items():
            if isinstance(value, list):
                refs_group = f.require_group("#refs#")
                refs = []
                for index, item in enumerate(value):
                    cell = refs_group.create_dataset(f"{name}_{index}", data=np.asarray(item, dtype=np.float64).T)
                    cell.attrs["MATLAB_class"] = np.bytes_("double")
                    refs.append(cell.ref)
                # a 1 x K cell in MATLAB is (K, 1) to h5py
                dataset = f.create_dataset(name, data=np.array(refs, dtype=h5py.ref_dtype).reshape(len(refs), 1))
                dataset.attrs["MATLAB_class"] = np.bytes_("cell")
            else:
                array = np.asarray(value, dtype=np.float64)
                if array.ndim == 1:
                    array = array.reshape(1, -1)  # MATLAB has no 1-D arrays: a row vector
                dataset = f.create_dataset(name, data=array.T)
                dataset.attrs["MATLAB_class"] = np.bytes_("double")
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .".ljust(116, b" ")
    with open(path, "r+b") as f:
        f.write(header + b"\x00" * 8 + b"\x00\x02IM")


def matlab_arrays(seed: int = 0) -> dict:
    """Distinct values everywhere, MATLAB size neurons x samples x trials."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.1, 3.0, (NEURONS, SAMPLES, TRIALS))
    return {
        "data": rng.poisson(truth).astype(np.float64) + np.arange(NEURONS)[:, None, None] * 10,
        "truth": truth,
        "latents": rng.standard_normal((LATENTS, SAMPLES, TRIALS)),
        "cond": np.array([[1, 1, 2, 2, 3]]),
    }


ALL_VARIABLES = MatVariables(data="data", truth="truth", latents="latents", condition="cond")


def read_file_layout(path) -> dict:
    with h5py.File(path, "r") as f:
        return {key: f[key][()] for key in f}


def test_v5_file_matches_matlab_dimensions(tmp_path):
    arrays = matlab_arrays()
    scipy.io.savemat(tmp_path / "in.mat", arrays)
    convert_mat_file(tmp_path / "in.mat", tmp_path / "out_data.h5", ALL_VARIABLES, bin_ms=10)
    written = read_file_layout(tmp_path / "out_data.h5")
    # The seed's num_neurons x num_samples x num_trials is exactly the h5 layout as h5py reads it.
    np.testing.assert_array_equal(written["data"], arrays["data"].astype(np.float32))
    np.testing.assert_array_equal(written["truth"], arrays["truth"].astype(np.float32))
    np.testing.assert_array_equal(written["latents"], arrays["latents"].astype(np.float32))
    np.testing.assert_array_equal(written["condition"], [1, 1, 2, 2, 3])
    dataset = read_dataset(tmp_path / "out_data.h5")
    assert dataset.data.shape == (TRIALS, SAMPLES, NEURONS)
    assert dataset.data[3, 2, 1] == arrays["data"][1, 2, 3]
    assert dataset.attrs["bin_ms"] == 10.0


def test_v73_and_v5_give_identical_files(tmp_path):
    arrays = matlab_arrays(1)
    arrays["data"][2, 3, 4] = np.nan  # unsampled point survives both readers
    scipy.io.savemat(tmp_path / "v5.mat", arrays)
    save_mat_v73(tmp_path / "v73.mat", arrays)
    convert_mat_file(tmp_path / "v5.mat", tmp_path / "v5.h5", ALL_VARIABLES)
    convert_mat_file(tmp_path / "v73.mat", tmp_path / "v73.h5", ALL_VARIABLES)
    from_v5, from_v73 = read_file_layout(tmp_path / "v5.h5"), read_file_layout(tmp_path / "v73.h5")
    assert sorted(from_v5) == sorted(from_v73) == ["condition", "data", "latents", "truth"]
    for key in from_v5:
        np.testing.assert_array_equal(from_v5[key], from_v73[key])
    assert np.isnan(from_v73["data"][2, 3, 4])


def test_axes_option_reorders_trials_first_variable(tmp_path):
    arrays = matlab_arrays(2)
    scipy.io.savemat(tmp_path / "in.mat", {"counts": np.transpose(arrays["data"], (2, 1, 0))})
    dataset = read_mat_dataset(tmp_path / "in.mat", MatVariables(data="counts"), axes=("trials", "samples", "neurons"))
    np.testing.assert_array_equal(dataset.data, np.transpose(arrays["data"], (2, 1, 0)).astype(np.float32))


def test_wrong_orientation_is_caught_by_the_condition_vector(tmp_path):
    arrays = matlab_arrays(3)
    # The user's variable is trials x samples x neurons but the default axes are assumed.
    scipy.io.savemat(tmp_path / "in.mat", {"data": np.transpose(arrays["data"], (2, 1, 0)), "cond": arrays["cond"]})
    with pytest.raises(NeurodynError) as error:
        read_mat_dataset(tmp_path / "in.mat", MatVariables(condition="cond"))
    message = str(error.value)
    assert "in.mat" in message and "'cond'" in message and f"({NEURONS},)" in message and "--axes" in message


def test_missing_variable_names_file_variable_and_lists_present(tmp_path):
    scipy.io.savemat(tmp_path / "in.mat", {"spikes": matlab_arrays()["data"]})
    with pytest.raises(NeurodynError) as error:
        read_mat_dataset(tmp_path / "in.mat", MatVariables(data="spikes", truth="rates"))
    message = str(error.value)
    assert "in.mat" in message and "'rates' not found" in message and f"spikes {NEURONS} x {SAMPLES} x {TRIALS}" in message


def test_default_variable_is_data_or_the_only_3d_one(tmp_path):
    arrays = matlab_arrays()
    scipy.io.savemat(tmp_path / "one.mat", {"spikes": arrays["data"], "labels": arrays["cond"]})
    dataset = read_mat_dataset(tmp_path / "one.mat")
    assert dataset.attrs["source_variable"] == "spikes"
    scipy.io.savemat(tmp_path / "two.mat", {"a": arrays["data"], "b": arrays["truth"]})
    with pytest.raises(NeurodynError, match=r"two\.mat: no variable 'data'.*--var"):
        read_mat_dataset(tmp_path / "two.mat")


def test_two_dimensional_variable_is_one_trial(tmp_path):
    single = matlab_arrays()["data"][:, :, 0]  # MATLAB stores N x T x 1 as N x T
    scipy.io.savemat(tmp_path / "v5.mat", {"data": single})
    save_mat_v73(tmp_path / "v73.mat", {"data": single})
    for name in ("v5.mat", "v73.mat"):
        dataset = read_mat_dataset(tmp_path / name)
        assert dataset.data.shape == (1, SAMPLES, NEURONS)
        np.testing.assert_array_equal(dataset.data[0], single.T.astype(np.float32))


def test_wrong_rank_and_mismatched_truth_are_errors(tmp_path):
    arrays = matlab_arrays()
    scipy.io.savemat(tmp_path / "in.mat", {"data": arrays["data"], "truth": arrays["truth"][:, :-1, :],
                                            "stack": np.zeros((2, 2, 2, 2))})
    with pytest.raises(NeurodynError, match=r"in\.mat: variable 'truth' gives shape \(4, 5, 5\).*expected \(4, 6, 5\)"):
        read_mat_dataset(tmp_path / "in.mat", MatVariables(truth="truth"))
    with pytest.raises(NeurodynError, match=r"variable 'stack' has size 2 x 2 x 2 x 2; expected a non-empty "
                                            r"num_neurons x num_samples x num_trials"):
        read_mat_dataset(tmp_path / "in.mat", MatVariables(data="stack"))


def test_cell_array_of_unequal_trials_is_nan_padded(tmp_path):
    rng = np.random.default_rng(4)
    lengths = [6, 4, 5]
    trials = [rng.poisson(1.0, (NEURONS, length)).astype(np.float64) for length in lengths]
    scipy.io.savemat(tmp_path / "v5.mat", {"data": np.array(trials + [None], dtype=object)[:-1].reshape(1, -1)})
    save_mat_v73(tmp_path / "v73.mat", {"data": trials})
    for name in ("v5.mat", "v73.mat"):
        dataset = read_mat_dataset(tmp_path / name)
        assert dataset.data.shape == (3, 6, NEURONS)
        assert dataset.attrs["trial_num_samples"] == lengths
        for index, trial in enumerate(trials):
            np.testing.assert_array_equal(dataset.data[index, : lengths[index]], trial.T.astype(np.float32))
            assert np.isnan(dataset.data[index, lengths[index]:]).all()


def test_cell_trials_with_different_neurons_are_an_error(tmp_path):
    cells = np.empty((1, 2), dtype=object)
    cells[0, 0], cells[0, 1] = np.zeros((3, 5)), np.zeros((4, 5))
    scipy.io.savemat(tmp_path / "in.mat", {"data": cells})
    with pytest.raises(NeurodynError, match=r"'data\{2\}' has 4 neurons but 'data\{1\}' has 3"):
        read_mat_dataset(tmp_path / "in.mat")


def test_struct_fields_and_non_numeric_variables(tmp_path):
    arrays = matlab_arrays()
    scipy.io.savemat(tmp_path / "in.mat", {"session": {"counts": arrays["data"], "note": "hello"}})
    dataset = read_mat_dataset(tmp_path / "in.mat", MatVariables(data="session.counts"))
    np.testing.assert_array_equal(dataset.data, np.transpose(arrays["data"], (2, 1, 0)).astype(np.float32))
    with pytest.raises(NeurodynError, match=r"'session' is a struct with fields counts, note"):
        read_mat_dataset(tmp_path / "in.mat", MatVariables(data="session"))
    with pytest.raises(NeurodynError, match=r"'session.note' is not a real numeric array"):
        read_mat_dataset(tmp_path / "in.mat", MatVariables(data="session.note"))


def test_not_a_mat_file(tmp_path):
    (tmp_path / "notes.mat").write_text("not matlab at all")
    with pytest.raises(NeurodynError, match=r"notes\.mat: not a MATLAB \.mat file"):
        read_mat_dataset(tmp_path / "notes.mat")
    with pytest.raises(NeurodynError, match=r"absent\.mat: \.mat file not found"):
        read_mat_dataset(tmp_path / "absent.mat")


def test_cli_convert_writes_and_reports(tmp_path, capsys):
    arrays = matlab_arrays()
    scipy.io.savemat(tmp_path / "in.mat", arrays)
    code = main(["convert", str(tmp_path / "in.mat"), str(tmp_path / "run_data.h5"), "--truth", "truth",
                 "--condition", "cond", "--bin-ms", "20"])
    assert code == 0
    # trials x bins x neurons, the order of every summary line (synth, prepare)
    assert (f"{TRIALS} trials x {SAMPLES} bins of 20 ms x {NEURONS} neurons; with truth, condition"
            in capsys.readouterr().out)
    assert read_dataset(tmp_path / "run_data.h5").attrs["bin_ms"] == 20.0


def test_cli_error_is_one_line_and_leaves_no_file(tmp_path, capsys):
    scipy.io.savemat(tmp_path / "in.mat", {"data": matlab_arrays()["data"]})
    code = main(["convert", str(tmp_path / "in.mat"), str(tmp_path / "out.h5"), "--condition", "labels"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("neurodyn: error:") and "'labels' not found" in err and "\n" not in err
    assert list(tmp_path.iterdir()) == [tmp_path / "in.mat"]
