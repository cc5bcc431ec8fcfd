"""The demos say where their time went (training, outputs, map to latents), so a user with a time
budget sees what the Duration covered."""

import re

from neurodyn import demo
from neurodyn.cli.main import main


def test_the_radical_demo_prints_its_time_split(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "RADICAL_DATA", {"num_neurons": 12, "num_conditions": 4, "trials_per_condition": 6,
                                               "num_frames": 12, "seed": 0})
    monkeypatch.setattr(demo, "RADICAL_RUN", {**demo.RADICAL_RUN, "num_workers": 2, "max_processes": 1,
                                              "epochs_per_generation": 2, "max_generations": 1, "ic_enc_dim": 8,
                                              "ic_dim": 4, "gen_dim": 8, "factors_dim": 3, "batch_size": 8,
                                              "posterior_samples": 2, "refinement_steps": 2,
                                              "engine": "embedded"})
    assert main(["demo", "--out", str(tmp_path / "demo"), "--no-progress"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    found = re.fullmatch(r"demo finished in (\d+) s: data (\d+) s, training (\d+) s, outputs (\d+) s, "
                         r"map to latents (\d+) s", last)
    assert found, last
    total, *parts = (int(value) for value in found.groups())
    assert sum(parts) <= total + len(parts)  # each part rounded on its own
