"""The ``neurodyn gfr`` sub-commands end to end on tiny inputs, and their one-line errors."""

import json

import pytest

from neurodyn.cli.main import main
from neurodyn.gfr.preprocess import read_cell_ids, read_processed, processed_path


def test_simulate_then_fit(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["gfr", "simulate", "--n_cells", "1", "--cell_types", "tonic", "--data_dir", str(data)]) == 0
    assert read_cell_ids(data / "cell_ids.csv") == ([1], {1: "tonic"})
    cell = read_processed(processed_path(data, 1))
    names = [s.stimulus_name for s in cell.sweeps[20]]
    assert names.count("Noise 1") == 3 and names.count("Noise 2") == 3
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"epochs": 2, "activation_epochs": 20, "eval_every": 1, "workers": 1}))
    code = main(["gfr", "fit", str(data / "cell_ids.csv"), "--bin_size", "50", "--activation_bin_size", "100",
                 "--degree", "3", "--C", "0.01", "--save_path", str(tmp_path / "out"), "--config_path", str(config),
                 "--data_dir", str(data)])
    assert code == 0
    out = capsys.readouterr().out
    assert "simulated 1 cell into" in out and "of 1 cell accepted" in out  # singular for one cell
    assert (tmp_path / "out" / "fit_summary_50_100.csv").exists()
    assert isinstance(json.loads((tmp_path / "out" / "gfr_dataset.json").read_text()), list)


def test_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "ids.csv").write_text("cell_id\n5\n")
    (tmp_path / "config.json").write_text("{\"learning_rate\": 1}")
    code = main(["gfr", "fit", str(tmp_path / "ids.csv"), "--config_path", str(tmp_path / "config.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "unknown key 'learning_rate'" in err
    code = main(["gfr", "preprocess", "--nwb_dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no NWB files" in err


def test_unknown_bin_size_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        main(["gfr", "fit", "ids.csv", "--bin_size", "30"])
    assert "invalid choice: 30" in capsys.readouterr().err


def test_network_command(tmp_path, capsys):
    code = main(["gfr", "network", "--lr", "0.01", "--epochs", "1", "--batch_size", "128", "--n_nodes", "8",
                 "--device", "cpu", "--save_path", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "GFR-RNN" in out and "vanilla RNN" in out
    summary = json.loads((tmp_path / "network_results.json").read_text())
    gfr, rnn = summary["models"]["GFR-RNN"], summary["models"]["vanilla RNN"]
    assert abs(gfr["trainable_parameters"] - rnn["trainable_parameters"]) < 0.1 * gfr["trainable_parameters"]


def test_kebab_case_flags_and_the_published_spellings_parse_alike():
    from neurodyn.cli.main import build_parser

    parser = build_parser()
    kebab = parser.parse_args(["gfr", "fit", "ids.csv", "--bin-size", "50", "--activation-bin-size", "100",
                               "--config-path", "c.json", "--save-path", "out", "--data-dir", "d"])
    snake = parser.parse_args(["gfr", "fit", "ids.csv", "--bin_size", "50", "--activation_bin_size", "100",
                               "--config_path", "c.json", "--save_path", "out", "--data_dir", "d"])
    assert vars(kebab) == vars(snake)
    assert vars(kebab)["bin_size"] == 50 and vars(kebab)["config_path"] == "c.json"
    defaults = parser.parse_args(["gfr", "network"])
    assert defaults.batch_size == 32 and defaults.n_nodes == 65 and defaults.freeze_neurons is False
    assert parser.parse_args(["gfr", "network", "--freeze_neurons"]).freeze_neurons is True


def test_the_help_shows_only_the_kebab_case_spelling(capsys):
    with pytest.raises(SystemExit):
        main(["gfr", "fit", "--help"])
    text = capsys.readouterr().out
    assert "--config-path" in text and "--config_path" not in text and "--bin-size" in text


def test_parser_choices_match_the_model_constants():
    from neurodyn.cli.gfr_commands import ACTIVATION_BIN_SIZES_MS, BIN_SIZES_MS
    from neurodyn.gfr.model import ALLOWED_ACTIVATION_BIN_SIZES, ALLOWED_BIN_SIZES

    assert tuple(BIN_SIZES_MS) == tuple(ALLOWED_BIN_SIZES)
    assert tuple(ACTIVATION_BIN_SIZES_MS) == tuple(ALLOWED_ACTIVATION_BIN_SIZES)
