"""A RADICaL run end to end: AutoLFADS with the zero-inflated gamma model on a sub-frame 2p file."""

import h5py
import numpy as np
import pytest
import yaml

from neurodyn.cli.main import main
from neurodyn.data.seed_format import write_dataset
from neurodyn.synth.lorenz_2p import make_lorenz_2p

from pbt_helpers import TINY_RUN


def test_radical_run_writes_rates_and_zig_parameters_and_maps_to_latents(tmp_path, capsys):
    pytest.importorskip("oasis")  # the synthetic 2-photon events are deconvolved with OASIS
    dataset = make_lorenz_2p(num_neurons=10, num_frames=6, subframe_bins=2, num_conditions=3,
                             trials_per_condition=4, seed=2)
    write_dataset(tmp_path / "tiny2p_data.h5", dataset)
    config = {**TINY_RUN, "run_name": "tiny2p", "observation": "zig", "batch_size": 4}
    (tmp_path / "radical.yaml").write_text(yaml.safe_dump(config))
    # --data left out: <run_name>_data.h5 beside the config is used
    assert main(["run", str(tmp_path / "radical.yaml"), "--out", str(tmp_path / "res"), "--no-progress"]) == 0
    best = tmp_path / "res" / "pbt_best_model"
    with h5py.File(best / "valid_output.h5") as f:
        n = len(f["trial_idx"][()])
        for key in ("rates", "q", "alpha", "beta"):
            assert f[key].shape == (10, 12, n) and np.isfinite(f[key][()]).all(), key
        q, alpha, beta, rates = (f[k][()] for k in ("q", "alpha", "beta", "rates"))
    assert ((q > 0) & (q < 1)).all() and (alpha > 0).all() and (beta > 0).all()
    resolved = yaml.safe_load((best / "hyperparameters.yaml").read_text())["config"]
    s_min = resolved["s_min"]
    # event_delay_bins: auto -> the file's event delay in its 16 ms sub-bins, recorded with the rates
    delay = round(dataset.attrs["event_delay_ms"] / dataset.attrs["bin_ms"])
    assert delay == 2 and resolved["event_delay_bins"] == delay
    with h5py.File(best / "valid_output.h5") as f:
        assert f.attrs["event_delay_bins"] == delay
    observed = dataset.data[~np.isnan(dataset.data)]
    assert 0 < s_min < observed[observed > 0].min()  # 'auto' resolved below the smallest event
    # single posterior samples average to the rates, whose per-sample mean is q (alpha / beta + s_min)
    assert rates.min() > 0
    assert main(["map-to-latents", str(tmp_path / "res"), "--data", str(tmp_path / "tiny2p_data.h5")]) == 0
    assert "R^2 overall" in capsys.readouterr().out
