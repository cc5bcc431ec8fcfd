"""NWB ophys (RoiResponseSeries + PlaneSegmentation) -> the same 2p pipeline as suite2p."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

pynwb = pytest.importorskip("pynwb")
pytest.importorskip("oasis")

from pynwb.ophys import Fluorescence, ImageSegmentation, OpticalChannel, RoiResponseSeries  # noqa: E402
from test_data_suite2p import (  # noqa: E402
    DECAY_S,
    FRAME_RATE,
    LINES,
    ROI_LINES,
    SETTINGS,
    TRIAL_FRAMES,
    TRIAL_STARTS,
    simulate_recording,
    write_suite2p_folder,
)

from neurodyn.cli.main import main  # noqa: E402
from neurodyn.data.nwb_ophys import read_nwb_ophys, read_nwb_trial_starts  # noqa: E402
from neurodyn.data.prepare_2p import prepare_two_photon  # noqa: E402
from neurodyn.data.seed_format import read_dataset  # noqa: E402
from neurodyn.data.suite2p import read_suite2p_plane  # noqa: E402
from neurodyn.errors import NeurodynError  # noqa: E402

WIDTH = 80


def write_ophys_nwb(path, fluorescence, neuropil=None, masks="image", lines_first=False, timestamps=None,
                    extra_series=False, with_trials=True):
    """``fluorescence``/``neuropil`` ``(rois, frames)``; ROI n spans 4 pixels on line ROI_LINES[n]."""
    rois, frames = fluorescence.shape
    nwbfile = pynwb.NWBFile(session_description="ophys test", identifier=str(path),
                            session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))
    device = nwbfile.create_device(name="Microscope")
    channel = OpticalChannel(name="OpticalChannel", description="green", emission_lambda=510.0)
    plane = nwbfile.create_imaging_plane(name="ImagingPlane", optical_channel=channel, imaging_rate=FRAME_RATE,
                                         description="plane", device=device, excitation_lambda=920.0,
                                         indicator="GCaMP6f", location="V1")
    module = nwbfile.create_processing_module(name="ophys", description="processed 2p")
    segmentation = ImageSegmentation()
    module.add(segmentation)
    table = segmentation.create_plane_segmentation(name="PlaneSegmentation", description="ROIs", imaging_plane=plane)
    for n in range(rois):
        line, columns = int(ROI_LINES[n]), range(10 + 5 * n, 14 + 5 * n)
        if masks == "image":
            mask = np.zeros((LINES, WIDTH) if lines_first else (WIDTH, LINES))  # schema: (x, y), lines along y
            for column in columns:
                mask[(line, column) if lines_first else (column, line)] = 1.0
            table.add_roi(image_mask=mask)
        else:
            table.add_roi(pixel_mask=[(column, line, 1.0) for column in columns])
    region = table.create_roi_table_region(region=list(range(rois)), description="all ROIs")
    timing = {"timestamps": timestamps} if timestamps is not None else {"rate": FRAME_RATE, "starting_time": 0.0}
    container = Fluorescence()
    module.add(container)  # in the file before its series, so their ROI region shares an ancestor with the table
    named = {"RoiResponseSeries": fluorescence, "Neuropil": neuropil, "Other": fluorescence if extra_series else None}
    for name, values in named.items():
        if values is not None:
            container.add_roi_response_series(
                RoiResponseSeries(name=name, data=values.T, rois=region, unit="a.u.", **timing))
    if with_trials:
        for start in TRIAL_STARTS:
            nwbfile.add_trial(start_time=start, stop_time=start + 3.0)
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)


@pytest.fixture(scope="module")
def arrays():
    fluorescence, neuropil, _ = simulate_recording(3)
    return fluorescence[:4].astype(np.float32), neuropil[:4].astype(np.float32)


def test_nwb_and_suite2p_give_the_same_prepared_data(tmp_path, arrays):
    fluorescence, neuropil = arrays
    write_ophys_nwb(tmp_path / "ophys.nwb", fluorescence, neuropil)
    from_nwb = read_nwb_ophys(tmp_path / "ophys.nwb", neuropil_series="Neuropil")
    assert from_nwb.lines_per_frame == LINES and from_nwb.frame_rate_hz == FRAME_RATE
    np.testing.assert_allclose(from_nwb.roi_lines, ROI_LINES[:4])
    np.testing.assert_array_equal(from_nwb.roi_indices, [0, 1, 2, 3])

    # the same traces as a suite2p folder (a fifth, non-cell ROI is dropped there)
    write_suite2p_folder(tmp_path / "plane0", np.vstack([fluorescence, fluorescence[:1]]),
                         np.vstack([neuropil, neuropil[:1]]))
    from_suite2p = read_suite2p_plane(tmp_path / "plane0")
    starts = read_nwb_trial_starts(tmp_path / "ophys.nwb")
    np.testing.assert_allclose(starts, TRIAL_STARTS)
    nwb_data = prepare_two_photon(from_nwb, starts, SETTINGS)
    s2p_data = prepare_two_photon(from_suite2p, TRIAL_STARTS, SETTINGS)
    np.testing.assert_allclose(nwb_data.data, s2p_data.data, rtol=1e-6, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(nwb_data.attrs["scan_offsets"], s2p_data.attrs["scan_offsets"])


def test_pixel_masks_need_lines_per_frame(tmp_path, arrays):
    fluorescence, _ = arrays
    write_ophys_nwb(tmp_path / "pix.nwb", fluorescence, masks="pixel")
    with pytest.raises(NeurodynError, match=r"pix\.nwb: .*pixel masks only.*--lines-per-frame"):
        read_nwb_ophys(tmp_path / "pix.nwb")
    traces = read_nwb_ophys(tmp_path / "pix.nwb", lines_per_frame=LINES)
    np.testing.assert_allclose(traces.roi_lines, ROI_LINES[:4])
    assert traces.neuropil is None


def test_line_axis_x_for_masks_stored_lines_first(tmp_path, arrays):
    fluorescence, _ = arrays
    write_ophys_nwb(tmp_path / "rows.nwb", fluorescence, lines_first=True)
    traces = read_nwb_ophys(tmp_path / "rows.nwb", line_axis="x")
    np.testing.assert_allclose(traces.roi_lines, ROI_LINES[:4])
    assert traces.lines_per_frame == LINES


def test_timestamps_give_frame_times(tmp_path, arrays):
    fluorescence, _ = arrays
    stamps = 100.0 + np.arange(fluorescence.shape[1]) / FRAME_RATE
    write_ophys_nwb(tmp_path / "ts.nwb", fluorescence, timestamps=stamps)
    traces = read_nwb_ophys(tmp_path / "ts.nwb")
    np.testing.assert_allclose(traces.frame_times_s, stamps)
    assert traces.frame_rate_hz == pytest.approx(FRAME_RATE)


def test_series_choice_and_missing_pieces(tmp_path, arrays):
    fluorescence, neuropil = arrays
    write_ophys_nwb(tmp_path / "two.nwb", fluorescence, neuropil, extra_series=True)
    with pytest.raises(NeurodynError, match=r"two\.nwb: 3 RoiResponseSeries; name one with --series \(available: "
                                            r"Fluorescence/Neuropil, Fluorescence/Other, Fluorescence/RoiResponseSeries"):
        read_nwb_ophys(tmp_path / "two.nwb")
    assert read_nwb_ophys(tmp_path / "two.nwb", series="Other").fluorescence.shape == fluorescence.shape
    with pytest.raises(NeurodynError, match=r"no RoiResponseSeries named 'Missing'"):
        read_nwb_ophys(tmp_path / "two.nwb", series="Missing")

    nwbfile = pynwb.NWBFile(session_description="empty", identifier="empty",
                            session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))
    with pynwb.NWBHDF5IO(str(tmp_path / "empty.nwb"), "w") as io:
        io.write(nwbfile)
    with pytest.raises(NeurodynError, match=r"empty\.nwb: no RoiResponseSeries"):
        read_nwb_ophys(tmp_path / "empty.nwb")
    with pytest.raises(NeurodynError, match=r"empty\.nwb: no trials table"):
        read_nwb_trial_starts(tmp_path / "empty.nwb")


def test_cli_prepare_2p_from_nwb(tmp_path, arrays, capsys):
    fluorescence, neuropil = arrays
    write_ophys_nwb(tmp_path / "ophys.nwb", fluorescence, neuropil)
    code = main(["prepare", "2p", str(tmp_path / "ophys.nwb"), str(tmp_path / "run_data.h5"), "--neuropil-series",
                 "Neuropil", "--trial-frames", str(TRIAL_FRAMES), "--decay-s", str(DECAY_S)])
    assert code == 0
    assert f"4 trials x {TRIAL_FRAMES * 4} sub-frame bins" in capsys.readouterr().out
    dataset = read_dataset(tmp_path / "run_data.h5")
    np.testing.assert_allclose(dataset.attrs["align_times_s"], np.array([30, 151, 271, 405]) / FRAME_RATE)
    assert main(["prepare", "2p", str(tmp_path / "ophys.nwb"), str(tmp_path / "x.h5"), "--trial-frames", "10",
                 "--neuropil-series", "Neuropil", "--align", "cue_time"]) == 2
    assert "trials table has no column 'cue_time'" in capsys.readouterr().err
