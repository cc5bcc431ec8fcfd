"""Binning, the processed h5 format, cell-id CSVs and their errors."""

import h5py
import numpy as np
import pytest

from neurodyn.errors import NeurodynError
from neurodyn.gfr.preprocess import (RawSweep, bin_sweep, max_firing_rate, process_cell, read_cell_ids,
                                     read_processed, write_processed)


def test_bin_sweep_hand_calculation_at_20_ms():
    # 2 kHz: 40 samples per 20 ms bin; 100 samples -> 2 whole bins (the last 20 samples are dropped).
    current = np.concatenate([np.full(40, 10.0), np.full(40, 30.0), np.full(20, 99.0)])
    sweep = RawSweep(5, "Ramp", current, 2000.0, np.array([0.001, 0.0199, 0.021, 0.045]))
    binned = bin_sweep(sweep, 20)
    np.testing.assert_allclose(binned.current, [10.0, 30.0])
    np.testing.assert_allclose(binned.rate, [2 / 20, 1 / 20])  # the spike at 45 ms is past the last bin


def test_unknown_bin_size_is_rejected():
    with pytest.raises(NeurodynError, match="unknown bin size 25"):
        bin_sweep(RawSweep(1, "Ramp", np.zeros(10), 1000.0, np.zeros(0)), 25)


def test_max_firing_rate_is_max_inverse_isi():
    sweeps = [RawSweep(1, "Ramp", np.zeros(1), 1.0, np.array([0.1, 0.125, 0.2])),
              RawSweep(2, "Ramp", np.zeros(1), 1.0, np.array([0.5, 0.51]))]
    assert max_firing_rate(sweeps) == pytest.approx(1 / 10)  # 10 ms ISI
    assert max_firing_rate([RawSweep(1, "Ramp", np.zeros(1), 1.0, np.array([0.3]))]) == 0.0


def test_processed_file_round_trip(tmp_path):
    sweeps = [RawSweep(3, "Long Square", np.linspace(0, 100, 1000), 1000.0, np.array([0.2, 0.21, 0.5])),
              RawSweep(4, "Noise 1", np.full(1000, -20.0), 1000.0, np.zeros(0))]
    cell = process_cell(99, sweeps, cre_line="Pvalb-IRES-Cre", bin_sizes=(10, 100))
    write_processed(tmp_path / "c.h5", cell)
    back = read_processed(tmp_path / "c.h5")
    assert (back.cell_id, back.cre_line, back.max_current) == (99, "Pvalb-IRES-Cre", 100.0)
    assert back.max_firing_rate == pytest.approx(0.1)
    for b in (10, 100):
        for a, c in zip(cell.sweeps[b], back.sweeps[b]):
            assert (a.sweep_number, a.stimulus_name) == (c.sweep_number, c.stimulus_name)
            np.testing.assert_array_equal(a.current, c.current)
            np.testing.assert_array_equal(a.rate, c.rate)
    with pytest.raises(NeurodynError, match="no sweeps binned at 20 ms"):
        back.sweeps_at(20)


def test_corrupt_and_incomplete_processed_files(tmp_path):
    (tmp_path / "bad.h5").write_bytes(b"garbage")
    with pytest.raises(NeurodynError, match="bad.h5: not a readable processed-cell h5"):
        read_processed(tmp_path / "bad.h5")
    with h5py.File(tmp_path / "partial.h5", "w") as f:
        f.attrs.update(cell_id=1, max_firing_rate=0.1, max_current=5.0)
        f.create_dataset("bin_20/sweep_1/current", data=np.zeros(3))
    with pytest.raises(NeurodynError, match="'bin_20/sweep_1' needs datasets 'current', 'rate'"):
        read_processed(tmp_path / "partial.h5")
    with pytest.raises(NeurodynError, match="not found"):
        read_processed(tmp_path / "missing.h5")


def test_read_cell_ids_variants(tmp_path):
    (tmp_path / "a.csv").write_text("cell_id,cre_line\n5,Sst\n6,\n")
    assert read_cell_ids(tmp_path / "a.csv") == ([5, 6], {5: "Sst"})
    (tmp_path / "b.csv").write_text("474626527\n566517779\n")
    assert read_cell_ids(tmp_path / "b.csv")[0] == [474626527, 566517779]
    (tmp_path / "c.csv").write_text("cell_id\n12\nabc\n")
    with pytest.raises(NeurodynError, match="row 3 of column 'cell_id' is 'abc'"):
        read_cell_ids(tmp_path / "c.csv")
