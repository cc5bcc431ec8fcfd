"""The Ray engine against a real local Ray instance that this test starts (and stops)."""

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from neurodyn.cli.main import main

from pbt_helpers import check_results, write_config, write_tiny_dataset

ray = pytest.importorskip("ray", reason="the Ray engine test needs Ray (installed by scripts/test.sh)")
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "RAY_USAGE_STATS_ENABLED": "0"}
    ray_cli = Path(sys.executable).parent / "ray"
    temp = tmp_path_factory.mktemp("ray")
    start = [str(ray_cli), "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
             "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"]
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=180)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    yield f"127.0.0.1:{port}"
    if ray.is_initialized():
        ray.shutdown()
    subprocess.run([str(ray_cli), "stop", "--force"], env=env, capture_output=True, timeout=120)


def _metrics(results: Path) -> list[tuple[str, str, float]]:
    rows = csv.DictReader((results / "tiny" / "pbt_log.csv").open())
    return [(row["generation"], row["worker"], float(row["metric"])) for row in rows]


def test_three_workers_two_generations_as_populations_on_a_ray_cluster(tmp_path, ray_cluster):
    """Two tasks (max_processes 2), each training its share (2 and 1 workers) as one batched population;
    the generations are the embedded engine's."""
    data = write_tiny_dataset(tmp_path)
    config = write_config(tmp_path, max_processes=2)
    args = ["run", str(config), "--data", str(data), "--out", str(tmp_path / "res"), "--no-progress",
            "--ray-address", ray_cluster]
    assert main(args) == 0
    check_results(tmp_path / "res", "tiny", num_workers=3, generations=2)
    log = (tmp_path / "res" / "tiny" / "run.log").read_text()
    assert "engine: Ray cluster" in log and "dealt out over 2 tasks" in log and "batched population" in log
    (tmp_path / "embedded").mkdir()
    reference = write_config(tmp_path / "embedded", max_processes=2, engine="embedded")
    assert main(["run", str(reference), "--data", str(data), "--out", str(tmp_path / "embedded" / "res"),
                 "--no-progress"]) == 0
    ray_rows, embedded_rows = _metrics(tmp_path / "res"), _metrics(tmp_path / "embedded" / "res")
    assert [row[:2] for row in ray_rows] == [row[:2] for row in embedded_rows]
    for (_, _, value), (_, _, expected) in zip(ray_rows, embedded_rows):
        assert value == pytest.approx(expected, rel=1e-4)


def test_a_searched_batch_size_runs_one_worker_per_ray_task(tmp_path, ray_cluster):
    data = write_tiny_dataset(tmp_path)
    config = write_config(tmp_path, max_processes=2, max_generations=1,
                          batch_size={"explore_range": [8, 16], "init_sample_mode": "rand"})
    args = ["run", str(config), "--data", str(data), "--out", str(tmp_path / "res"), "--no-progress",
            "--ray-address", ray_cluster]
    assert main(args) == 0
    check_results(tmp_path / "res", "tiny", num_workers=3, generations=1)
    assert "2 workers at once, one per task" in (tmp_path / "res" / "tiny" / "run.log").read_text()


def test_unreachable_ray_cluster_is_a_clear_error(tmp_path, capsys, ray_cluster):
    if ray.is_initialized():
        ray.shutdown()
    data = write_tiny_dataset(tmp_path)
    config = write_config(tmp_path)
    args = ["run", str(config), "--data", str(data), "--out", str(tmp_path / "res"), "--no-progress",
            "--ray-address", f"127.0.0.1:{_free_port()}"]
    assert main(args) == 2
    assert "cannot connect to the Ray cluster" in capsys.readouterr().err
