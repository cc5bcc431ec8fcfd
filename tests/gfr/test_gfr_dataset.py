"""gfr_dataset.json: writing, df_from_json, load_gfr_model and its errors."""

import json

import numpy as np
import pytest
import torch

from neurodyn.errors import NeurodynError
from neurodyn.gfr import GFR, df_from_json, load_gfr_model
from neurodyn.gfr.dataset import read_dataset_json, write_dataset_json


def fitted_like_model(seed, bin_size=10, activation_bin_size=20):
    torch.manual_seed(seed)
    model = GFR(bin_size=bin_size, degree=1, activation_bin_size=activation_bin_size)
    with torch.no_grad():
        model.a.normal_(1.0, 0.3)
        model.b.normal_(0.0, 1e-3)
        model.g.poly_coeff.uniform_(0.2, 1.0)
        model.g.threshold.fill_(60.0)
        model.g.max_current.fill_(350.0)
        model.g.max_firing_rate.fill_(0.12)
    return model


def record(cell_id, model, cre="Sst-IRES-Cre"):
    return {"cell_id": cell_id, "cre-line": cre, "bin_size": model.bin_size, "actv_bin_size": model.g.bin_size,
            "val_evr": 0.8, "test_evr": 0.7, "train_loss": 0.2, "test_loss": 0.3, "params": model.get_params()}


def test_get_params_json_load_round_trip_gives_identical_predictions(tmp_path):
    models = {566517779: fitted_like_model(0), 474626527: fitted_like_model(1),
              123: fitted_like_model(2, bin_size=20, activation_bin_size=100)}
    write_dataset_json(tmp_path / "gfr_dataset.json", [record(i, m) for i, m in models.items()])
    with open(tmp_path / "gfr_dataset.json") as f:
        dataset = df_from_json(json.load(f))
    assert sorted(dataset) == [(10, 20), (20, 100)]
    assert sorted(dataset[(10, 20)]["cell_id"]) == [474626527, 566517779]
    assert {"cell_id", "cre-line", "val_evr", "test_evr", "train_loss", "test_loss", "params"} <= set(dataset[(10, 20)])
    current = np.random.default_rng(0).uniform(0, 500, 80)
    for cell_id, model in models.items():
        loaded = load_gfr_model(dataset, cell_id, model.bin_size, model.g.bin_size)
        np.testing.assert_array_equal(loaded.predict(current), model.predict(current))
        assert loaded.get_params() == model.get_params()


def test_unknown_cell_and_unknown_pair_are_clear_errors():
    dataset = df_from_json([record(7, fitted_like_model(0))])
    with pytest.raises(NeurodynError, match="cell 8 is not in the dataset"):
        load_gfr_model(dataset, 8, 10, 20)
    with pytest.raises(NeurodynError, match=r"bin size 50 ms.*\(10, 20\)"):
        load_gfr_model(dataset, 7, 50, 100)


def test_writing_merges_and_replaces_records_of_the_same_cell_and_pair(tmp_path):
    path = tmp_path / "gfr_dataset.json"
    write_dataset_json(path, [record(1, fitted_like_model(0)), record(2, fitted_like_model(1))])
    newer = record(1, fitted_like_model(3))
    newer["val_evr"] = float("nan")
    written = write_dataset_json(path, [newer])
    assert [r["cell_id"] for r in written] == [1, 2]
    on_disk = read_dataset_json(path)
    assert on_disk[0]["params"] == newer["params"] and on_disk[0]["val_evr"] is None


def test_corrupt_or_malformed_dataset_names_the_problem(tmp_path):
    path = tmp_path / "gfr_dataset.json"
    path.write_text("[{\"cell_id\": 1,")
    with pytest.raises(NeurodynError, match="not valid JSON"):
        read_dataset_json(path)
    with pytest.raises(NeurodynError, match=r"record 0 .*lacks keys \['params'\]"):
        df_from_json([{k: v for k, v in record(1, fitted_like_model(0)).items() if k != "params"}])
    bad = record(1, fitted_like_model(0))
    del bad["params"]["g"]["max_current"]
    with pytest.raises(NeurodynError, match=r"record 0 \(cell 1\): GFR parameter 'g.max_current' is missing"):
        load_gfr_model([bad], 1, 10, 20)
