"""Reading an Allen-style NWB 2 file that the test writes with pynwb."""

from datetime import datetime, timezone

import numpy as np
import pytest

from neurodyn.errors import NeurodynError
from neurodyn.gfr.allen_nwb import preprocess_nwb_cells, read_allen_nwb, stimulus_name
from neurodyn.gfr.preprocess import bin_sweep, processed_path, read_processed

pynwb = pytest.importorskip("pynwb")


def write_allen_like_nwb(path):
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.icephys import CurrentClampSeries, CurrentClampStimulusSeries

    nwb = NWBFile(session_description="test cell", identifier="cell-42",
                  session_start_time=datetime(2020, 1, 1, tzinfo=timezone.utc))
    device = nwb.create_device(name="amplifier")
    electrode = nwb.create_icephys_electrode(name="elec0", description="patch", device=device)
    spikes = nwb.create_processing_module(name="spikes", description="spike times per sweep")
    current_pa = np.arange(60, dtype=float)  # 60 ms at 1 kHz
    for number, description in [(1, "C1LSCOARSE"), (2, "Noise 1"), (3, "C1NSSEED_2"), (4, "C1SSFINEST")]:
        nwb.add_stimulus(CurrentClampStimulusSeries(
            name=f"stim_{number}", data=current_pa * number, electrode=electrode, gain=1.0, rate=1000.0,
            starting_time=10.0 * number, conversion=1e-12, unit="amperes", stimulus_description=description,
            sweep_number=np.uint32(number)))
    spikes.add(TimeSeries(name="Sweep_1", data=np.zeros(4), timestamps=[0.005, 0.012, 0.018, 0.055], unit="n/a"))
    spikes.add(TimeSeries(name="Sweep_2", data=np.zeros(0), timestamps=np.zeros(0), unit="n/a"))
    voltage = np.full(60, -70.0)
    voltage[[21, 22, 41]] = 20.0  # crossings of -20 mV at samples 21 and 41
    nwb.add_acquisition(CurrentClampSeries(name="resp_3", data=voltage, electrode=electrode, gain=1.0, rate=1000.0,
                                           starting_time=30.0, conversion=1e-3, unit="volts", sweep_number=np.uint32(3)))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)


def test_reads_sweeps_in_pa_with_spike_times_and_names(tmp_path):
    path = tmp_path / "42.nwb"
    write_allen_like_nwb(path)
    sweeps = read_allen_nwb(path)
    assert [(s.sweep_number, s.stimulus_name) for s in sweeps] == [(1, "Long Square"), (2, "Noise 1"), (3, "Noise 2")]
    np.testing.assert_allclose(sweeps[0].current_pa, np.arange(60.0))
    np.testing.assert_allclose(sweeps[2].current_pa, 3 * np.arange(60.0))
    assert sweeps[0].sampling_rate_hz == 1000.0
    np.testing.assert_allclose(sweeps[0].spike_times_s, [0.005, 0.012, 0.018, 0.055])
    assert len(sweeps[1].spike_times_s) == 0
    np.testing.assert_allclose(sweeps[2].spike_times_s, [0.021, 0.041])  # detected from the voltage

    binned = bin_sweep(sweeps[0], 10)
    # 10 samples per bin of 0..59 pA: bin k averages 10k .. 10k+9 = 10k + 4.5.
    np.testing.assert_allclose(binned.current, 10 * np.arange(6) + 4.5)
    np.testing.assert_allclose(binned.rate, np.array([1, 2, 0, 0, 0, 1]) / 10.0)


def test_preprocess_writes_processed_files(tmp_path):
    write_allen_like_nwb(tmp_path / "42.nwb")
    assert preprocess_nwb_cells(tmp_path, tmp_path / "data", progress=False) == [42]
    cell = read_processed(processed_path(tmp_path / "data", 42))
    # max 1/ISI: the shortest ISI is 6 ms (0.012 -> 0.018), so 1/6 spikes/ms.
    assert cell.max_firing_rate == pytest.approx(1 / 6)
    assert cell.max_current == pytest.approx(3 * 59)
    assert sorted(cell.sweeps) == [10, 20, 50, 100]
    assert (tmp_path / "data" / "cell_ids.csv").read_text().splitlines() == ["cell_id,cre_line", "42,"]


def test_stimulus_codes_and_names():
    assert stimulus_name("C1LSFINEST150112") == "Long Square"
    assert stimulus_name("c1rp25pr1s141203") == "Ramp"
    assert stimulus_name("C1NSSEED_1150216") == "Noise 1"
    assert stimulus_name("noise 2") == "Noise 2"
    assert stimulus_name("C1SSFINEST") is None


def test_corrupt_nwb_file_is_a_clear_error(tmp_path):
    path = tmp_path / "7.nwb"
    path.write_bytes(b"this is not hdf5")
    with pytest.raises(NeurodynError, match="7.nwb: not a readable NWB"):
        read_allen_nwb(path)
    with pytest.raises(NeurodynError, match="no NWB file for cell 8"):
        preprocess_nwb_cells(tmp_path, tmp_path / "data", [8], progress=False)
