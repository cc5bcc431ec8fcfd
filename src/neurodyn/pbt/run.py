"""``neurodyn run``: an AutoLFADS population-based training run, resumable after a kill.

Results folder layout::

    RESULTS/pbt_best_model/      train_output.h5, valid_output.h5, checkpoint.pt, hyperparameters.yaml
    RESULTS/<run_name>/          worker_XX/ (train_log.csv, hp_history.csv, checkpoint.pt), pbt_log.csv,
                                 pbt_progress.png, run.log, .state/ (what a resumed run continues from)

A generation is committed by writing ``.state/pbt_state.json`` (atomically) after every worker's
new state is on disk; a killed run re-run with the same command continues from the last committed
generation. ``pbt_best_model`` is built in a temporary folder and renamed into place, and the run
log ends with ``Done.`` only once it is complete.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from neurodyn.config import LfadsConfig, RunConfig
from neurodyn.data.atomic import atomic_path, write_text_atomic
from neurodyn.data.seed_format import data_file_name, split_trials
from neurodyn.errors import NeurodynError
from neurodyn.lfads.model import LFADS
from neurodyn.observation.registry import make_observation_model
from neurodyn.pbt.engines import EmbeddedEngine, RayEngine, WorkerJob, default_max_processes, state_from_bytes
from neurodyn.pbt.population import StoppingRule, best_worker, binary_tournament, truncation
from neurodyn.pbt.search_space import as_config_value, explore, initial_values
from neurodyn.train.outputs import save_checkpoint
from neurodyn.train.run import history_to_csv, read_model_dataset, write_model_outputs

BEST_DIR = "pbt_best_model"
STATE_FILE = "pbt_state.json"


def resolve_data_path(config_path: str | Path, run_name: str, data: str | Path | None) -> Path:
    """``--data`` if given, else ``<run_name>_data.h5`` beside the config (the AutoLFADS convention)."""
    if data is not None:
        return Path(data)
    folder = Path(config_path).resolve().parent
    candidate = folder / data_file_name(run_name)
    if not candidate.is_file():
        present = sorted(p.name for p in folder.glob("*.h5"))
        listing = ", ".join(present) if present else "none"
        raise NeurodynError(f"no --data given and {candidate.name} (run_name '{run_name}' + '_data.h5') is not "
                            f"in {folder}; h5 files there: {listing}")
    return candidate


@dataclass
class WorkerRecord:
    hyperparameters: dict[str, float]
    start_state: str | None = None      # file (relative to .state/) this worker continues from
    copied_from: int | None = None      # whom it copied before the coming generation
    metric: float = math.nan


@dataclass
class PbtState:
    """Everything a resumed run needs (JSON)."""

    config_digest: str
    generation: int = 0
    workers: list[WorkerRecord] = field(default_factory=list)
    log_rows: list[dict[str, Any]] = field(default_factory=list)
    stopping: dict[str, Any] = field(default_factory=dict)
    best_metric: float = math.inf
    best_generation: int = -1
    best_worker: int = -1
    best_hyperparameters: dict[str, float] = field(default_factory=dict)
    best_file: str | None = None        # state of the best worker so far, relative to .state/
    elapsed_seconds: float = 0.0
    generation_seconds: list[float] = field(default_factory=list)
    rng_state: dict[str, Any] = field(default_factory=dict)
    finished: str | None = None         # why the run ended (None while running)
    exported: bool = False

    def to_json(self) -> str:
        data = self.__dict__.copy()
        data["workers"] = [w.__dict__ for w in self.workers]
        return json.dumps(data, indent=1, default=float)

    @classmethod
    def from_json(cls, text: str) -> "PbtState":
        data = json.loads(text)
        data["workers"] = [WorkerRecord(**w) for w in data["workers"]]
        return cls(**data)


@dataclass
class PbtResult:
    results_dir: Path
    best_metric: float
    best_hyperparameters: dict[str, float]
    generations: int
    finished: str


class RunLog:
    """Lines to ``run.log`` (flushed at once) and to the terminal."""

    def __init__(self, path: Path, echo: Callable[[str], None]):
        self.path, self.echo = path, echo

    def __call__(self, line: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.path, "a") as handle:
            handle.write(f"{stamp} {line}\n")
        self.echo(line)


def _digest(run_config: RunConfig, data_path: Path) -> str:
    payload = json.dumps({"config": run_config.model_dump(), "data": str(data_path.resolve())}, sort_keys=True,
                         default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _worker_config(run_config: RunConfig, worker: int, hyperparameters: dict[str, float]) -> dict[str, Any]:
    values = run_config.model.model_dump()
    values.update({k: as_config_value(k, v) for k, v in hyperparameters.items()})
    values["seed"] = run_config.model.seed + worker  # distinct initial weights per worker
    return LfadsConfig(**values).model_dump()


class PbtRun:
    """One AutoLFADS run in ``results_dir``; ``execute()`` starts or resumes it."""

    def __init__(self, run_config: RunConfig, data_path: str | Path, results_dir: str | Path,
                 ray_address: str | None = None, progress: bool = True,
                 echo: Callable[[str], None] = print):
        self.config = run_config
        self.settings = run_config.pbt
        self.data_path = Path(data_path)
        self.results_dir = Path(results_dir)
        self.run_dir = self.results_dir / run_config.model.run_name
        self.state_dir = self.run_dir / ".state"
        self.ray_address = ray_address or self.settings.ray_address
        self.progress = progress
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log = RunLog(self.run_dir / "run.log", echo)
        # Each worker's training-log lineage (the epochs behind its current state), kept in memory so
        # the logs need no reload of every state each generation; rebuilt from the states on resume.
        self.histories: dict[int, list[dict[str, float]]] = {}
        self.lineage_source: dict[int, int] = {}  # worker -> whose state it continues from
        self.last_plot = -math.inf

    # -- the run ----------------------------------------------------------------------------------
    def execute(self) -> PbtResult:
        dataset, model = read_model_dataset(self.data_path, self.config.model)
        if model != self.config.model:
            self.config = self.config.model_copy(update={"model": model})
        self.train_idx, self.valid_idx = split_trials(dataset.num_trials, self.config.model.valid_ratio,
                                                      self.config.model.seed, dataset.condition)
        self.dataset = dataset
        state = self._load_or_start()
        if state.finished is None:
            state = self._train_generations(state)
        if not state.exported:
            self._export_best(state)
            state.exported = True
            self._commit(state)
        self.log("Done.")
        return PbtResult(self.results_dir, state.best_metric, state.best_hyperparameters, state.generation,
                         state.finished)

    def _load_or_start(self) -> PbtState:
        digest = _digest(self.config, self.data_path)
        state_file = self.state_dir / STATE_FILE
        if state_file.is_file():
            state = PbtState.from_json(state_file.read_text())
            if state.config_digest != digest:
                raise NeurodynError(f"{self.run_dir} holds a run with a different config or data file; use another "
                                    "--out folder or delete that run to start anew")
            self._remove_uncommitted(state)
            if state.finished:
                self.log(f"run already finished ({state.finished}) after {state.generation} generation{'s' if state.generation != 1 else ''}")
            else:
                self.log(f"resuming after generation {state.generation} (best smoothed validation NLL "
                         f"{state.best_metric:.5f})")
            return state
        rng = np.random.default_rng(self.config.model.seed)
        n = self.settings.num_workers
        samples = {key: initial_values(spec, n, rng) for key, spec in self.config.search_space.items()}
        workers = [WorkerRecord({key: samples[key][w] for key in samples}) for w in range(n)]
        state = PbtState(config_digest=digest, workers=workers,
                         stopping={"patience": self.settings.num_no_best_to_stop,
                                   "percent_change": self.settings.percent_change_to_stop},
                         rng_state=rng.bit_generator.state)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._commit(state)
        self.log(f"AutoLFADS run '{self.config.model.run_name}': {n} workers, "
                 f"{self.settings.epochs_per_generation} epochs per generation, up to "
                 f"{self.settings.max_generations} generations; searching {', '.join(self.config.search_space)}; "
                 f"data {self.data_path} ({len(self.train_idx)} train / {len(self.valid_idx)} valid trials)"
                 + (f"; event delay of {self.config.model.event_delay_bins} bin(s) removed (event_delay_bins)"
                    if self.config.model.event_delay_bins else ""))
        return state

    def _make_engine(self):
        train, valid = self.dataset.data[self.train_idx], self.dataset.data[self.valid_idx]
        if self.ray_address or self.settings.engine == "ray":
            engine = RayEngine(train, valid, self.settings.max_processes, self.ray_address)
            at_once = engine.max_processes
            self.log(f"engine: Ray cluster {self.ray_address or '(local)'}, {at_once} worker{'s' if at_once != 1 else ''} "
                     "at once")
        else:
            processes = min(self.settings.max_processes or default_max_processes(), self.settings.num_workers)
            engine = EmbeddedEngine(train, valid, processes)
            self.log(f"engine: embedded, {processes} worker process{'es' if processes != 1 else ''} x {engine.threads} "
                     f"thread{'s' if engine.threads != 1 else ''}")
        return engine

    def _train_generations(self, state: PbtState) -> PbtState:
        from tqdm.auto import tqdm

        settings = self.settings
        rng = np.random.default_rng()
        rng.bit_generator.state = state.rng_state
        stopping = StoppingRule(**state.stopping)
        engine = self._make_engine()
        session_start = time.perf_counter() - state.elapsed_seconds
        bar = tqdm(total=settings.max_generations, initial=state.generation, desc="PBT", unit="gen",
                   disable=not self.progress, dynamic_ncols=True)
        try:
            while state.generation < settings.max_generations:
                elapsed = time.perf_counter() - session_start
                if settings.Duration is not None and state.generation_seconds:
                    expected = float(np.mean(state.generation_seconds[-3:]))
                    if elapsed + expected > settings.Duration * 60:
                        state.finished = (f"Duration of {settings.Duration:g} min reached after {state.generation} "
                                          f"generations ({elapsed / 60:.1f} min; another would take "
                                          f"~{expected / 60:.1f} min)")
                        self.log(state.finished + ": exporting the best model so far")
                        break
                generation_start = time.perf_counter()
                self._run_generation(state, engine, rng, stopping)
                state.generation_seconds.append(time.perf_counter() - generation_start)
                state.elapsed_seconds = time.perf_counter() - session_start
                state.rng_state = rng.bit_generator.state
                state.stopping = {k: getattr(stopping, k) for k in
                                  ("patience", "percent_change", "best", "generations_without_best", "history")}
                if stopping.should_stop:
                    patience = settings.num_no_best_to_stop
                    state.finished = (f"no improvement of more than {settings.percent_change_to_stop}% for "
                                      f"{patience} generation{'s' if patience != 1 else ''}")
                elif state.generation >= settings.max_generations:
                    state.finished = f"max_generations ({settings.max_generations}) reached"
                self._commit(state)
                self._write_reports(state)
                bar.update(1)
                left = ""
                if settings.Duration is not None:
                    left = f"{max(0.0, settings.Duration - state.elapsed_seconds / 60):.1f} min left"
                bar.set_postfix_str(f"best {state.best_metric:.5f}" + (f", {left}" if left else ""))
                if state.finished:
                    self.log(f"stopping: {state.finished}")
                    break
            if state.finished is None:  # loop ended by max_generations on resume
                state.finished = f"max_generations ({settings.max_generations}) reached"
                self._commit(state)
            if state.log_rows:  # the final picture, whatever the last report drew
                from neurodyn.pbt.plots import plot_pbt_progress

                plot_pbt_progress(state.log_rows, self.config.search_space, self.run_dir / "pbt_progress.png")
        finally:
            bar.close()
            engine.close()
        return state

    def _run_generation(self, state: PbtState, engine, rng: np.random.Generator, stopping: StoppingRule) -> None:
        generation = state.generation
        jobs = []
        for w, record in enumerate(state.workers):
            start = (self.state_dir / record.start_state).read_bytes() if record.start_state else None
            jobs.append(WorkerJob(w, generation, _worker_config(self.config, w, record.hyperparameters), start,
                                  self.settings.epochs_per_generation, self.config.model.seed))
        new_dir = self.state_dir / f"gen_{generation + 1:04d}"
        new_dir.mkdir(parents=True, exist_ok=True)
        results = {}
        for result in engine.run(jobs):
            with atomic_path(new_dir / f"worker_{result.worker:02d}.pt") as tmp:
                tmp.write_bytes(result.state)
            results[result.worker] = result
        started_from = {w: self._lineage(state, w) for w in range(len(state.workers))}
        self.histories = {w: started_from[w] + results[w].history for w in results}
        metrics = [results[w].metric for w in range(len(state.workers))]
        for w, record in enumerate(state.workers):
            record.metric = metrics[w]
            state.log_rows.append({"generation": generation, "worker": w, **record.hyperparameters,
                                   "metric": metrics[w], "copied_from": "" if record.copied_from is None
                                   else record.copied_from, "seconds": round(results[w].seconds, 2)})
        leader = best_worker(metrics)
        diverged = sum(1 for m in metrics if not math.isfinite(m))
        if leader is not None and metrics[leader] < state.best_metric:
            state.best_metric, state.best_generation, state.best_worker = metrics[leader], generation, leader
            state.best_hyperparameters = dict(state.workers[leader].hyperparameters)
            state.best_file = f"best_gen_{generation + 1:04d}.pt"
            with atomic_path(self.state_dir / state.best_file) as tmp:
                shutil.copyfile(new_dir / f"worker_{leader:02d}.pt", tmp)
        stopping.update(None if leader is None else metrics[leader])
        # Exploit, then explore what was copied.
        if self.settings.exploit_method == "truncation":
            copies = truncation(metrics, rng, self.settings.truncation_fraction)
        else:
            copies = binary_tournament(metrics, rng)
        previous = [dict(r.hyperparameters) for r in state.workers]
        self.lineage_source = {}
        for w, record in enumerate(state.workers):
            source = copies.get(w)
            record.copied_from = source
            record.start_state = f"{new_dir.name}/worker_{(w if source is None else source):02d}.pt"
            self.lineage_source[w] = w if source is None else source
            if source is not None:
                record.hyperparameters = {key: explore(value, self.config.search_space[key], rng)
                                          for key, value in previous[source].items()}
        state.generation = generation + 1
        self.log(f"generation {generation}: best {metrics[leader] if leader is not None else math.nan:.5f} "
                 f"(worker {leader}), overall best {state.best_metric:.5f} (generation {state.best_generation}); "
                 f"{len(copies)} worker{'s' if len(copies) != 1 else ''} copied another"
                 + (f"; {diverged} diverged and were replaced" if diverged else ""))

    # -- files --------------------------------------------------------------------------------
    def _commit(self, state: PbtState) -> None:
        """Write the state (the commit point), then drop generation folders it no longer needs."""
        write_text_atomic(self.state_dir / STATE_FILE, state.to_json())
        keep = {Path(w.start_state).parent.name for w in state.workers if w.start_state}
        keep |= {f"gen_{state.generation:04d}"}
        for folder in self.state_dir.glob("gen_*"):
            if folder.name not in keep:
                shutil.rmtree(folder, ignore_errors=True)
        for best in self.state_dir.glob("best_gen_*.pt"):
            if best.name != state.best_file:
                best.unlink(missing_ok=True)

    def _remove_uncommitted(self, state: PbtState) -> None:
        """A killed run may have left states of a generation it never committed: drop them."""
        for folder in self.state_dir.glob("gen_*"):
            if int(folder.name.split("_")[1]) > state.generation:
                shutil.rmtree(folder, ignore_errors=True)
        for best in self.state_dir.glob("best_gen_*.pt"):
            if best.name != state.best_file:
                best.unlink(missing_ok=True)
        for leftover in self.run_dir.rglob(".*.tmp"):
            leftover.unlink(missing_ok=True)

    def _lineage(self, state: PbtState, worker: int) -> list[dict[str, float]]:
        """The log rows behind the state ``worker`` starts the coming generation from."""
        record = state.workers[worker]
        if record.start_state is None:
            return []
        source = self.lineage_source.get(worker)
        if source is not None and source in self.histories:
            return list(self.histories[source])
        # After a resume: read it from the state file once.
        return list(state_from_bytes((self.state_dir / record.start_state).read_bytes())["history"])

    def _write_reports(self, state: PbtState) -> None:
        """pbt_log.csv, each worker's folder (of the last generation) and the progress figure."""
        from neurodyn.pbt.plots import plot_pbt_progress

        write_text_atomic(self.run_dir / "pbt_log.csv", _rows_to_csv(state.log_rows))
        last_dir = self.state_dir / f"gen_{state.generation:04d}"
        for w in range(len(state.workers)):
            folder = self.run_dir / f"worker_{w:02d}"
            folder.mkdir(exist_ok=True)
            source = last_dir / f"worker_{w:02d}.pt"
            with atomic_path(folder / "checkpoint.pt") as tmp:
                tmp.unlink()
                os.link(source, tmp)  # the same bytes as the committed state, without a second copy
            write_text_atomic(folder / "train_log.csv", history_to_csv(self.histories[w]))
            write_text_atomic(folder / "hp_history.csv",
                              _rows_to_csv([r for r in state.log_rows if r["worker"] == w]))
        # Drawing takes about a second: at most once a minute while running (and once at the end,
        # by _train_generations).
        if time.monotonic() - self.last_plot > 60:
            plot_pbt_progress(state.log_rows, self.config.search_space, self.run_dir / "pbt_progress.png")
            self.last_plot = time.monotonic()

    def _export_best(self, state: PbtState) -> None:
        """Posterior sample-and-average outputs of the best worker, written to pbt_best_model/ at once."""
        if state.best_generation < 0:
            raise NeurodynError(f"every worker diverged (NaN loss) in every generation; nothing to export. "
                                f"See {self.run_dir / 'pbt_log.csv'}")
        trainer_state = state_from_bytes((self.state_dir / state.best_file).read_bytes())
        config = LfadsConfig(**trainer_state["config"])
        num_neurons = self.dataset.num_neurons
        observation = make_observation_model(config.observation, num_neurons,
                                             **trainer_state.get("observation_options", {}))
        model = LFADS(config, num_neurons, observation)
        model.load_state_dict(trainer_state["model"])
        final = self.results_dir / BEST_DIR
        staging = Path(tempfile.mkdtemp(prefix=f".{BEST_DIR}.", dir=self.results_dir))
        try:
            write_model_outputs(staging, model, self.dataset, self.train_idx, self.valid_idx, config)
            # Save weights as they were at the best generation (not the trainer's early-stopping copy).
            trainer_state["best_model_state"] = None
            save_checkpoint(staging / "checkpoint.pt", {
                "trainer": trainer_state, "num_neurons": num_neurons, "train_idx": self.train_idx,
                "valid_idx": self.valid_idx, "data_path": str(self.data_path)})
            write_text_atomic(staging / "hyperparameters.yaml", yaml.safe_dump({
                "best_smoothed_valid_nll": float(state.best_metric), "generation": state.best_generation,
                "worker": state.best_worker, "hyperparameters": state.best_hyperparameters,
                "config": config.model_dump()}, sort_keys=False))
            if final.exists():
                old = final.with_name(f".{BEST_DIR}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.log(f"exported {final}: worker {state.best_worker} of generation {state.best_generation}, smoothed "
                 f"validation NLL {state.best_metric:.5f}")


def _rows_to_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if rows:
        fields = list(dict.fromkeys(key for row in rows for key in row))
        writer = csv.DictWriter(buffer, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def run_pbt(run_config: RunConfig, data_path: str | Path, results_dir: str | Path, ray_address: str | None = None,
            progress: bool = True, echo: Callable[[str], None] = print) -> PbtResult:
    """Start or resume the AutoLFADS (population-based training) run of ``run_config``.

    Parameters
    ----------
    run_config : RunConfig
        PBT settings, fixed model settings and search space, e.g. from
        ``neurodyn.config.load_run_config("config.yaml")``.
    data_path : str or Path
        The h5 data file (same format as for ``train_model``).
    results_dir : str or Path
        Results folder. Holds ``pbt_best_model/`` (the exported best worker) and
        ``<run_name>/`` (workers, logs and the state a resumed run continues from). Running again
        with the same config and data continues an interrupted run; a finished run is left as is.
    ray_address : str, optional
        Run the workers on this Ray cluster (``"auto"`` or ``HOST:PORT``) instead of the embedded engine.
    progress : bool, default True
        Show a progress bar.
    echo : callable, default print
        Receives each line of the run's log.

    Returns
    -------
    PbtResult
        ``results_dir``, ``best_metric`` (smoothed validation NLL of the best worker),
        ``best_hyperparameters``, ``generations`` completed, and ``finished`` (why the run stopped).
    """
    return PbtRun(run_config, data_path, results_dir, ray_address, progress, echo).execute()
