"""Object .npy files (suite2p's ops.npy, stat.npy) are read as plain data, never by running code from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neurodyn.data.safe_npy import UnreadableObject, load_object_npy


class TouchesAFile:
    """What a crafted pickle does: name a function to be called while loading (here: create a file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_suite2p_like_objects_read_as_np_load_reads_them(tmp_path):
    ops = {"fs": np.float64(30.0), "Ly": 512, "Lx": 512, "nplanes": 1, "save_path": "/data/s2p/plane0",
           "meanImg": np.arange(6, dtype=np.float32).reshape(2, 3), "filelist": ["a.tif", "b.tif"]}
    stat = np.array([{"med": [5, 10], "ypix": np.array([4, 5, 6]), "lam": np.array([0.1, 0.2, 0.3], np.float32),
                      "npix": np.int64(3)} for _ in range(3)], dtype=object)
    np.save(tmp_path / "ops.npy", ops, allow_pickle=True)
    np.save(tmp_path / "stat.npy", stat, allow_pickle=True)
    read_ops = load_object_npy(tmp_path / "ops.npy")
    assert read_ops.keys() == ops.keys()
    assert read_ops["fs"] == 30.0 and isinstance(read_ops["fs"], np.float64)
    np.testing.assert_array_equal(read_ops["meanImg"], ops["meanImg"])
    assert read_ops["filelist"] == ops["filelist"] and read_ops["save_path"] == ops["save_path"]
    read_stat = load_object_npy(tmp_path / "stat.npy")
    reference = np.load(tmp_path / "stat.npy", allow_pickle=True)  # our own file: safe to compare with
    assert read_stat.shape == reference.shape == (3,)
    for ours, theirs in zip(read_stat, reference):
        assert ours["med"] == theirs["med"] and ours["npix"] == theirs["npix"]
        np.testing.assert_array_equal(ours["ypix"], theirs["ypix"])
        assert ours["lam"].dtype == np.float32


def test_a_crafted_file_runs_nothing(tmp_path):
    marker = tmp_path / "code_ran"
    np.save(tmp_path / "ops.npy", np.array(TouchesAFile(marker), dtype=object), allow_pickle=True)
    np.save(tmp_path / "stat.npy", np.array([{"med": [1, 2]}, TouchesAFile(marker)], dtype=object), allow_pickle=True)
    assert isinstance(load_object_npy(tmp_path / "ops.npy"), UnreadableObject)
    stat = load_object_npy(tmp_path / "stat.npy")
    assert stat[0] == {"med": [1, 2]} and isinstance(stat[1], UnreadableObject)
    assert not marker.exists()
    # The same file through np.load would have run it: the test's crafted object is real.
    np.load(tmp_path / "ops.npy", allow_pickle=True)
    assert marker.exists()


def test_numeric_files_and_non_npy_files(tmp_path):
    np.save(tmp_path / "F.npy", np.arange(12.0).reshape(3, 4))
    np.testing.assert_array_equal(load_object_npy(tmp_path / "F.npy"), np.arange(12.0).reshape(3, 4))
    (tmp_path / "text.npy").write_text("not numpy")
    with pytest.raises(ValueError):
        load_object_npy(tmp_path / "text.npy")
