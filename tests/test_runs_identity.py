"""run.json and the start decision: continue, report finished, refuse or overwrite; one-file outputs."""

import numpy as np
import pytest
import scipy.io

from neurodyn.cli.main import main
from neurodyn.errors import NeurodynError
from neurodyn.runs.identity import RunIdentity, decide_start


def _identity(tmp_path, config=None, content=b"abc"):
    data = tmp_path / "data.h5"
    data.write_bytes(content)
    return RunIdentity.of("train", config or {"gen_dim": 10, "device": "cpu"}, data)


def _recorded(identity, status="interrupted"):
    return {"kind": identity.kind, "config": identity.config, "data_path": identity.data_path,
            "data_sha256": identity.data_sha256, "status": status}


def test_an_empty_folder_starts_and_overwrite_replaces(tmp_path):
    identity = _identity(tmp_path)
    assert decide_start("out", None, False, identity, False).action == "start"
    replaced = decide_start("out", _recorded(identity), True, identity, True)
    assert replaced.action == "start" and replaced.remove_existing


def test_the_same_run_continues_or_reports_finished(tmp_path):
    identity = _identity(tmp_path)
    assert decide_start("out", _recorded(identity), True, identity, False).action == "continue"
    finished = decide_start("out", _recorded(identity, "finished"), True, identity, False)
    assert finished.action == "finished" and "nothing to do" in finished.message


def test_runtime_keys_do_not_make_another_run(tmp_path):
    identity = _identity(tmp_path)
    other_device = _identity(tmp_path, {"gen_dim": 10, "device": "cuda"})
    assert decide_start("out", _recorded(identity), True, other_device, False).action == "continue"


def test_another_config_is_refused_naming_the_keys(tmp_path):
    identity = _identity(tmp_path)
    changed = _identity(tmp_path, {"gen_dim": 20, "device": "cpu"})
    with pytest.raises(NeurodynError, match=r"another config: gen_dim \(10 -> 20\).*--overwrite"):
        decide_start("out", _recorded(identity), True, changed, False)


def test_changed_data_content_and_another_data_file_are_refused(tmp_path):
    identity = _identity(tmp_path)
    changed = _identity(tmp_path, content=b"abd")
    with pytest.raises(NeurodynError, match="content has changed since"):
        decide_start("out", _recorded(identity), True, changed, False)
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(NeurodynError, match="another data file"):
        decide_start("out", _recorded(identity), True, _identity(other, content=b"xyz"), False)


def test_a_moved_data_file_with_the_same_content_is_the_same_run(tmp_path):
    identity = _identity(tmp_path)
    other = tmp_path / "moved"
    other.mkdir()
    assert decide_start("out", _recorded(identity), True, _identity(other), False).action == "continue"


def test_another_command_and_unrecorded_results_are_refused(tmp_path):
    identity = _identity(tmp_path)
    with pytest.raises(NeurodynError, match="'neurodyn run' run"):
        decide_start("out", {**_recorded(identity), "kind": "run"}, True, identity, False)
    with pytest.raises(NeurodynError, match="earlier run without its run.json"):
        decide_start("out", None, True, identity, False)


# -- commands that write one file ------------------------------------------------------------------

def _commands(tmp_path):
    existing = tmp_path / "existing.out"
    existing.write_text("keep me")
    mat = tmp_path / "in.mat"
    scipy.io.savemat(mat, {"data": np.ones((3, 4, 2))})
    anything = str(tmp_path / "missing")
    return existing, [
        ["synth", "lorenz-spikes", str(existing)],
        ["synth", "lorenz-2p", str(existing)],
        ["convert", str(mat), str(existing)],
        ["prepare", "nwb", anything, str(existing), "--bin-ms", "20"],
        ["prepare", "2p", anything, str(existing), "--trial-frames", "10"],
        ["export", "nwb", anything, str(existing), "--data", anything, "--nwb", anything],
        ["export", "nlb", anything, str(existing), "--data", anything, "--dataset", "mc_maze_20"],
    ]


def test_every_file_writing_command_refuses_an_existing_output(tmp_path, capsys):
    existing, commands = _commands(tmp_path)
    for argv in commands:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err == f"neurodyn: error: {existing} exists; use --overwrite to replace it, or another output name"
        assert existing.read_text() == "keep me"


def test_overwrite_replaces_the_file(tmp_path, capsys):
    existing, _ = _commands(tmp_path)
    argv = ["synth", "lorenz-spikes", str(existing), "--conditions", "2", "--trials-per-condition", "2", "--bins", "5"]
    assert main(argv + ["--overwrite"]) == 0
    assert existing.read_bytes()[:4] == b"\x89HDF"


def test_a_run_recorded_before_a_key_existed_counts_as_made_with_its_default(tmp_path):
    data = tmp_path / "data.h5"
    data.write_bytes(b"abc")
    defaults = {"gen_dim": 100, "forward_bins": 0}
    old = RunIdentity.of("train", {"gen_dim": 10}, data, defaults=defaults)
    new = RunIdentity.of("train", {"gen_dim": 10, "forward_bins": 0}, data, defaults=defaults)
    assert decide_start("out", _recorded(old), True, new, False).action == "continue"
    changed = RunIdentity.of("train", {"gen_dim": 10, "forward_bins": 3}, data, defaults=defaults)
    with pytest.raises(NeurodynError, match=r"forward_bins \(0 -> 3\)"):
        decide_start("out", _recorded(old), True, changed, False)


def test_run_json_does_not_record_the_defaults(tmp_path):
    import json

    from neurodyn.runs.identity import write_run_info

    identity = RunIdentity.of("train", {"gen_dim": 10}, _identity(tmp_path).data_path, defaults={"gen_dim": 100})
    write_run_info(tmp_path / "run.json", identity, "running")
    assert "defaults" not in json.loads((tmp_path / "run.json").read_text())
