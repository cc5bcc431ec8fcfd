"""``neurodyn run``: an AutoLFADS population-based training run, resumable after a kill.

The driver (``PbtRun``) receives where workers train (an engine: ``make_engine``, or a fake in
tests) and where the run's files live (a ``runs.pbt_store.PbtStore``). Each generation it hands the
workers' jobs to the engine, stores the states it gets back, applies the population's decision
(``pbt.decisions.decide_after_generation``: best tracking, exploit, explore, stopping) and commits
the state. The folder layout is ``runs.layout.PbtLayout``'s.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import yaml

from neurodyn.config import LfadsConfig, PbtSettings, RunConfig, config_to_yaml, without_controller_search
from neurodyn.data.atomic import write_text_atomic
from neurodyn.data.seed_format import data_file_name
from neurodyn.errors import NeurodynError, RunInterrupted
from neurodyn.pbt.decisions import count_diverged, decide_after_generation, initial_population, ramps_complete_after
from neurodyn.pbt.engines import (EmbeddedEngine, RayEngine, WorkerData, WorkerJob, WorkerResult,
                                  default_max_processes)
from neurodyn.pbt.population import StoppingRule
from neurodyn.pbt.search_space import as_config_value
from neurodyn.pbt.time_budget import STANDARD_INFERENCE, ExportCost, export_inference, should_stop_training
from neurodyn.runs.checkpoint import build_model, save_checkpoint
from neurodyn.runs.identity import (RunIdentity, RunLock, join_data_paths, mark_status, open_run_folder,
                                   remove_entries)
from neurodyn.runs.layout import PbtLayout, TrainLayout
from neurodyn.runs.pbt_store import PbtState, PbtStore, WorkerRecord, saved_generations
from neurodyn.runs.tensorboard_log import PopulationBoard, require_tensorboard
from neurodyn.train.defaults import resolve_data_defaults
from neurodyn.train.run import (as_path_list, checkpoint_state, describe_event_delay, describe_sessions,
                                describe_validation, read_model_data, time_outputs, write_model_outputs)


def resolve_data_path(config_path: str | Path, run_name: str, data) -> Path | list[Path]:
    """``--data`` if given (one file, or a list of several: sessions to stitch), else ``<run_name>_data.h5``
    beside the config (the RADICaL template's convention)."""
    if data is not None and not isinstance(data, (str, Path)):
        paths = [Path(path) for path in data]
        return paths[0] if len(paths) == 1 else paths
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


class Engine(Protocol):
    """Where workers train: runs a generation's jobs and yields their results as they finish."""

    def run(self, jobs: list[WorkerJob]) -> Iterator[WorkerResult]: ...
    def close(self) -> None: ...
    def terminate(self) -> None: ...


EngineFactory = Callable[[WorkerData, Callable[[str], None]], Engine]


@dataclass
class PbtResult:
    results_dir: Path
    best_metric: float
    best_hyperparameters: dict[str, float]
    generations: int
    finished: str
    # Seconds of this command spent on the generations (incl. start-up of the engine) and on writing
    # pbt_best_model/ (0 when nothing was trained or written).
    training_seconds: float = 0.0
    output_seconds: float = 0.0


def run_identity_config(run_config: RunConfig) -> dict[str, Any]:
    """The run's settings as one flat mapping (what ``run.json`` records and compares)."""
    return {**run_config.pbt.model_dump(), **run_config.model.model_dump(),
            "search_space": {key: spec.model_dump() for key, spec in run_config.search_space.items()}}


def _worker_config(run_config: RunConfig, worker: int, hyperparameters: dict[str, float]) -> dict[str, Any]:
    values = run_config.model.model_dump()
    values.update({k: as_config_value(k, v) for k, v in hyperparameters.items()})
    values["seed"] = run_config.model.seed + worker  # distinct initial weights per worker
    return LfadsConfig(**values).model_dump()


# Why a run's workers cannot share one batched population (the one case: PBT never searches sizes).
UNBATCHABLE_REASON = "the search includes batch_size, which a batched population cannot vary"


def workers_share_a_population(searched: set[str] | list[str]) -> bool:
    """Whether a generation's workers can train as one batched population: every worker must use one
    ``batch_size``, so not when the search varies it."""
    return "batch_size" not in searched


def choose_engine(engine: str, ray_address: str | None, searched: set[str] | list[str]) -> tuple[str, str]:
    """The engine a run uses and why: ``(embedded | ray | population, reason)``.

    A config that names an engine gets it, and a Ray address means Ray. ``engine: auto`` (the
    default) trains the population as batched models when its workers can share one (they always
    share an architecture: PBT never searches sizes), that is unless the search includes
    ``batch_size``; then one process per worker. A config that names ``engine: population`` with a
    searched ``batch_size`` is refused (NeurodynError, one line).
    """
    if ray_address:
        return "ray", "a Ray address was given"
    unfit = not workers_share_a_population(searched)
    if engine == "population" and unfit:
        raise NeurodynError("engine: population trains every worker with one batch_size; remove batch_size from the "
                            "search space or use engine: embedded")
    if engine != "auto":
        return engine, "named in the config"
    if unfit:
        return "embedded", f"engine: auto and {UNBATCHABLE_REASON}"
    return "population", "engine: auto and every worker shares one architecture and batch size"


def make_engine_factory(run_config: RunConfig, ray_address: str | None = None) -> EngineFactory:
    """The engine ``choose_engine`` picks for this config, built when the run has its data; the log says
    which ran and why."""
    settings = run_config.pbt
    address = ray_address or settings.ray_address

    def factory(data: WorkerData, log: Callable[[str], None]) -> Engine:
        name, why = choose_engine(settings.engine, address, set(run_config.search_space))
        if name == "ray":
            from neurodyn.pbt.population_engine import train_share_in_task

            batched = workers_share_a_population(run_config.search_space)
            engine = RayEngine(data, settings.max_processes, address, train_share_in_task if batched else None)
            if batched:
                log(f"engine: Ray cluster {address or '(local)'}, the workers dealt out over {engine.max_processes} "
                    f"tasks, each training its share as a batched population on its GPU or CPUs; {why}")
            else:
                log(f"engine: Ray cluster {address or '(local)'}, {engine.max_processes} workers at once, one per task "
                    f"({UNBATCHABLE_REASON}); {why}")
            return engine
        if name == "population":
            from neurodyn.pbt.population_engine import PopulationEngine

            population = PopulationEngine(data, run_config.model.device, settings.num_workers,
                                          max_populations=settings.max_processes, log=log)
            log(f"{population.layout.describe(settings.num_workers)}; {why}")
            return population
        processes = min(settings.max_processes or default_max_processes(), settings.num_workers)
        engine = EmbeddedEngine(data, processes, run_config.model.device)
        on_gpus = sorted({d for d in engine.devices if d})
        log(f"engine: embedded, {processes} worker process{'es' if processes != 1 else ''} x {engine.threads} "
            f"thread{'s' if engine.threads != 1 else ''}" + (f" on {', '.join(on_gpus)}" if on_gpus else "")
            + f"; {why}")
        return engine

    return factory


class PbtRun:
    """One AutoLFADS run; ``execute()`` starts or resumes it."""

    def __init__(self, run_config: RunConfig, data_path, store: PbtStore, engine_factory: EngineFactory,
                 progress: bool = True, echo: Callable[[str], None] = print):
        self.config = run_config
        self.settings = run_config.pbt
        self.data_paths = as_path_list(data_path)
        self.data_path = join_data_paths(self.data_paths)
        self.store = store
        self.layout = store.layout
        self.engine_factory = engine_factory
        self.progress = progress
        self.log = store.run_log(echo)
        # Each worker's training-log lineage (the epochs behind its current state), kept in memory so
        # the logs need no reload of every state each generation; rebuilt from the states on resume.
        self.histories: dict[int, list[dict[str, float]]] = {}
        self.lineage_source: dict[int, int] = {}  # worker -> whose state it continues from
        self.last_plot = -math.inf
        # The Duration's accounting (pbt.time_budget): when this session's clock started (with the
        # seconds of earlier sessions), and what writing the outputs costs, measured once.
        self.session_start: float | None = None
        self.export_cost: ExportCost | None = None
        self.board: PopulationBoard | None = None

    # -- the run ----------------------------------------------------------------------------------
    def execute(self) -> PbtResult:
        self.data = read_model_data(self.data_paths, self.config.model)
        dataset, model = self.data.dataset, self.data.config
        if model != self.config.model:
            self.config = self.config.model_copy(update={"model": model})
        # Test trials (the file's 'split') never reach the workers: no choice may depend on them.
        self.split = self.data.split
        self.dataset = dataset
        # 'auto' settings resolved once from the training trials, so every worker (and worker 0's start
        # from the config) gets the same numbers.
        # The arrays every worker trains on, made once (sample validation's draw included); the defaults are
        # resolved from the training trials' entries, those held out for validation counted as observed.
        self.inputs = self.data.trainer_inputs()
        resolved, self.resolved_notes = resolve_data_defaults(self.config.model, self.inputs["train_data"],
                                                              self.data.bin_ms, self.inputs["sample_validation_data"])
        self.config = self.config.model_copy(update={"model": resolved,
                                                     "search_space": without_controller_search(
                                                         self.config.search_space, resolved)})
        state = self._load_or_start()
        clock = time.perf_counter()
        if state.finished is None:
            state = self._train_generations(state)
        training_seconds, clock = time.perf_counter() - clock, time.perf_counter()
        if not state.exported:
            self._export_best(state)
            state.exported = True
            self.store.commit(state)
        output_seconds = time.perf_counter() - clock
        self.log("Done.")
        return PbtResult(self.layout.root, state.best_metric, state.best_hyperparameters, state.generation,
                         state.finished, training_seconds, output_seconds)

    def _load_or_start(self) -> PbtState:
        state = self.store.load()
        if state is not None:
            if state.finished:
                self.log(f"run already finished ({state.finished}) after {state.generation} "
                         f"generation{'s' if state.generation != 1 else ''}")
            else:
                self.log(f"resuming after generation {state.generation} (best smoothed validation NLL "
                         f"{state.best_metric:.5f})")
            return state
        rng = np.random.default_rng(self.config.model.seed)
        n = self.settings.num_workers
        starts = initial_population(self.config.search_space, self.config.model, n, self.settings.start_from_config,
                                    rng)
        workers = [WorkerRecord(values) for values in starts]
        state = PbtState(workers=workers, stopping={"patience": self.settings.num_no_best_to_stop,
                                                    "percent_change": self.settings.percent_change_to_stop},
                         rng_state=rng.bit_generator.state, best_after_ramps=False)
        self.store.commit(state)
        self.log(f"AutoLFADS run '{self.config.model.run_name}': {n} workers, "
                 f"{self.settings.epochs_per_generation} epochs per generation, up to "
                 f"{self.settings.max_generations} generations; searching {', '.join(self.config.search_space)}"
                 + (" (worker 0 from the config's values)" if self.settings.start_from_config else "") + "; "
                 f"data {self.data_path} ({len(self.split.train)} train / {len(self.split.valid)} valid"
                 + (f" / {len(self.split.test)} test" if len(self.split.test) else "") + " trials)"
                 + (f"; {delay_note}" if (delay_note := describe_event_delay(
                     self.config.model, self.dataset.attrs, str(self.data_path))) else ""))
        if self.data.sessions is not None:
            self.log(describe_sessions(self.data))
        validation_note = describe_validation(self.data)
        for note in ([validation_note] if validation_note else []) + self.resolved_notes:
            self.log(note)
        return state

    def _train_generations(self, state: PbtState) -> PbtState:
        from tqdm.auto import tqdm

        settings = self.settings
        rng = np.random.default_rng()
        rng.bit_generator.state = state.rng_state
        inputs = self.inputs
        data = WorkerData(inputs["train_data"], inputs["valid_data"], inputs["train_ext_input"],
                          inputs["valid_ext_input"], inputs["train_session"], inputs["valid_session"],
                          inputs["train_condition"], inputs["sample_validation_data"])
        engine = self.engine_factory(data, self.log)
        if self.config.model.tensorboard:
            self.board = PopulationBoard(self.layout.tensorboard)
        session_start = self.session_start = time.perf_counter() - state.elapsed_seconds
        bar = tqdm(total=settings.max_generations, initial=state.generation, desc="PBT", unit="gen",
                   disable=not self.progress, dynamic_ncols=True)
        try:
            while state.generation < settings.max_generations:
                elapsed = time.perf_counter() - session_start
                if settings.Duration is not None and state.generation_seconds:
                    expected = _recent_generation_seconds(state)
                    export = None if self.export_cost is None else self.export_cost.scaled(expected)
                    if should_stop_training(elapsed, expected, export, self.config.model.inference,
                                            settings.Duration * 60):
                        state.finished = (f"Duration of {settings.Duration:g} min reached after {state.generation} "
                                          f"generations ({elapsed / 60:.1f} min; another would take "
                                          f"~{expected / 60:.1f} min"
                                          + (f", writing the outputs ~{export.configured_seconds / 60:.1f} min"
                                             if export is not None else "") + ")")
                        self.log(state.finished + ": exporting the best model so far")
                        break
                generation_start = time.perf_counter()
                self._run_generation(state, engine, rng)
                state.generation_seconds.append(time.perf_counter() - generation_start)
                if settings.Duration is not None and self.export_cost is None and state.best_generation >= 0:
                    self.export_cost = self._measure_export(state, state.generation_seconds[-1])
                state.elapsed_seconds = time.perf_counter() - session_start
                state.rng_state = rng.bit_generator.state
                self.store.commit(state)
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
                self.store.commit(state)
            if state.log_rows:  # the final picture, whatever the last report drew
                from neurodyn.pbt.plots import plot_pbt_progress

                plot_pbt_progress(state.log_rows, self.config.search_space, self.layout.progress_figure)
        except KeyboardInterrupt:
            engine.terminate()
            raise RunInterrupted(f"interrupted during generation {state.generation}; the {state.generation} "
                                 "completed generation(s) are saved: run the same command again to continue") from None
        finally:
            bar.close()
            engine.close()
            if self.board is not None:
                self.board.close()
        return state

    def _run_generation(self, state: PbtState, engine: Engine, rng: np.random.Generator) -> None:
        generation = state.generation
        jobs = []
        for w, record in enumerate(state.workers):
            start = self.store.read_state_bytes(record.start_state) if record.start_state else None
            jobs.append(WorkerJob(w, generation, _worker_config(self.config, w, record.hyperparameters), start,
                                  self.settings.epochs_per_generation, self.config.model.seed))
        results, files = {}, {}
        for result in engine.run(jobs):
            files[result.worker] = self.store.write_worker_state(generation + 1, result.worker, result.state)
            results[result.worker] = result
        started_from = {w: self._lineage(state, w) for w in range(len(state.workers))}
        self.histories = {w: started_from[w] + results[w].history for w in results}
        metrics = [results[w].metric for w in range(len(state.workers))]
        for w, record in enumerate(state.workers):
            record.metric = metrics[w]
            state.log_rows.append({"generation": generation, "worker": w, **record.hyperparameters,
                                   "metric": metrics[w], "copied_from": "" if record.copied_from is None
                                   else record.copied_from, "seconds": round(results[w].seconds, 2)})
        ramps_complete = ramps_complete_after(generation + 1, self.settings.epochs_per_generation, self.config.model)
        # A best from before the ramps ended is provisional: the first leader after them replaces it.
        best_so_far = state.best_metric if state.best_after_ramps or not ramps_complete else math.inf
        decision = decide_after_generation(
            metrics, [r.hyperparameters for r in state.workers], self.config.search_space, best_so_far,
            StoppingRule(**state.stopping), self.settings, generation + 1, rng, ramps_complete)
        leader = decision.leader
        if decision.new_best:
            state.best_metric, state.best_generation, state.best_worker = metrics[leader], generation, leader
            state.best_hyperparameters = dict(state.workers[leader].hyperparameters)
            state.best_file = self.store.keep_best(generation + 1, files[leader])
            state.best_after_ramps = ramps_complete
        state.stopping = dataclasses.asdict(decision.stopping)
        self.lineage_source = {}
        for w, record in enumerate(state.workers):
            source = decision.copies.get(w)
            record.copied_from = source
            record.start_state = files[w if source is None else source]
            record.hyperparameters = decision.hyperparameters[w]
            self.lineage_source[w] = w if source is None else source
        for note in decision.notes:
            self.log(f"explore: {note}")
        state.generation = generation + 1
        state.finished = decision.stop_reason
        diverged = count_diverged(metrics)
        self.log(f"generation {generation}: best {metrics[leader] if leader is not None else math.nan:.5f} "
                 f"(worker {leader}), overall best {state.best_metric:.5f} (generation {state.best_generation}); "
                 f"{len(decision.copies)} worker{'s' if len(decision.copies) != 1 else ''} copied another"
                 + (f"; {diverged} diverged and were replaced" if diverged else "")
                 + ("" if ramps_complete else "; the KL/L2 ramps are not complete: this best is provisional and "
                    "no patience is counted"))

    # -- files --------------------------------------------------------------------------------
    def _lineage(self, state: PbtState, worker: int) -> list[dict[str, float]]:
        """The log rows behind the state ``worker`` starts the coming generation from."""
        record = state.workers[worker]
        if record.start_state is None:
            return []
        source = self.lineage_source.get(worker)
        if source is not None and source in self.histories:
            return list(self.histories[source])
        # After a resume: read it from the state file once.
        return list(self.store.read_state(record.start_state)["history"])

    def _write_reports(self, state: PbtState) -> None:
        """pbt_log.csv, each worker's folder (of the last generation) and the progress figure."""
        from neurodyn.pbt.plots import plot_pbt_progress

        self.store.write_reports(state, self.histories)
        if self.board is not None:
            self.board.generation([row for row in state.log_rows if row["generation"] == state.generation - 1],
                                  state.best_metric)
        # Drawing takes about a second: at most once a minute while running (and once at the end,
        # by _train_generations).
        if time.monotonic() - self.last_plot > 60:
            plot_pbt_progress(state.log_rows, self.config.search_space, self.layout.progress_figure)
            self.last_plot = time.monotonic()

    def _measure_export(self, state: PbtState, generation_seconds: float) -> ExportCost:
        """What exporting the best model costs on this machine now (``pbt.time_budget``), logged."""
        model, config = build_model(self.store.read_state(state.best_file), self.dataset.num_neurons)
        configured = time_outputs(model, self.dataset, self.split, config, self.data.sessions)
        standard = configured
        if config.inference != STANDARD_INFERENCE:
            standard = time_outputs(model, self.dataset, self.split, config.model_copy(
                update={"inference": STANDARD_INFERENCE}), self.data.sessions)
        cost = ExportCost(configured, standard, generation_seconds)
        self.log(f"writing the outputs is expected to take ~{configured:.0f} s ({config.inference} inference"
                 + (f"; standard ~{standard:.0f} s" if standard != configured else "")
                 + "): training stops early enough to write them within the Duration")
        return cost

    def _export_best(self, state: PbtState) -> None:
        """The best worker's outputs (inferred as its resolved config says, or with the standard inference
        when that would not fit the Duration: ``pbt.time_budget``), written to pbt_best_model/ at once."""
        if state.best_generation < 0:
            raise NeurodynError(f"every worker diverged (NaN loss) in every generation; nothing to export. "
                                f"See {self.layout.pbt_log}")
        trainer_state = self.store.read_state(state.best_file)
        num_neurons = self.dataset.num_neurons
        model, config = build_model(trainer_state, num_neurons)
        if self.settings.Duration is not None and self.export_cost is not None and self.session_start is not None:
            inference, note = export_inference(config.inference, time.perf_counter() - self.session_start,
                                               self.export_cost.scaled(_recent_generation_seconds(state)),
                                               self.settings.Duration * 60)
            if note:
                self.log(note)
                config = config.model_copy(update={"inference": inference})

        def write_files(files: TrainLayout) -> None:
            write_model_outputs(files.root, model, self.dataset, self.split, config, self.data.sessions)
            # Weights as they were at the best generation (not the trainer's early-stopping copy).
            trainer_state["best_model_state"] = None
            save_checkpoint(files.checkpoint, checkpoint_state(trainer_state, self.data, self.data_paths))
            write_text_atomic(files.config, config_to_yaml(config))
            write_text_atomic(files.hyperparameters, yaml.safe_dump({
                "best_smoothed_valid_nll": float(state.best_metric), "generation": state.best_generation,
                "worker": state.best_worker, "hyperparameters": state.best_hyperparameters,
                "config": config.model_dump()}, sort_keys=False))

        final = self.store.export_best(write_files)
        self.log(f"exported {final}: worker {state.best_worker} of generation {state.best_generation}, smoothed "
                 f"validation NLL {state.best_metric:.5f}")


def _recent_generation_seconds(state: PbtState) -> float:
    """The pace of the run now: the mean seconds of its last three generations (0 before the first)."""
    return float(np.mean(state.generation_seconds[-3:])) if state.generation_seconds else 0.0


def run_pbt(run_config: RunConfig, data_path, results_dir: str | Path, ray_address: str | None = None,
            progress: bool = True, echo: Callable[[str], None] = print, overwrite: bool = False,
            engine_factory: EngineFactory | None = None) -> PbtResult:
    """Start, continue or report the AutoLFADS run of ``run_config`` on ``data_path`` in ``results_dir``.

    Parameters
    ----------
    run_config
        PBT settings, the model's fixed settings and the search space (``config.load_run_config``).
    data_path
        The data file, or a list of several: sessions stitched into one model (each session's
        outputs go to ``pbt_best_model/<file stem>/``).
    results_dir
        The results folder (``pbt_best_model/`` and ``<run_name>/``). A folder holding this run
        continues it (from the last completed generation) or reports that it has finished; a
        folder holding another run is refused unless ``overwrite``.
    ray_address
        Train the workers on this Ray cluster.
    progress
        Show a progress bar.
    echo
        Where lines for the user go (they are also written to ``run.log``).
    overwrite
        Replace a run already in ``results_dir`` (only the files a run owns are removed).
    engine_factory
        Where workers train (default: ``make_engine_factory``); tests hand in a fake.

    Returns
    -------
    PbtResult
        The best smoothed validation NLL, its hyperparameters, generations run and why it ended.
    """
    with RunLock(results_dir):
        return _run_pbt(run_config, data_path, results_dir, ray_address, progress, echo, overwrite, engine_factory)


def _run_pbt(run_config: RunConfig, data_path, results_dir: str | Path, ray_address: str | None,
             progress: bool, echo: Callable[[str], None], overwrite: bool,
             engine_factory: EngineFactory | None) -> PbtResult:
    layout = PbtLayout(results_dir, run_config.model.run_name)
    if run_config.model.tensorboard:
        require_tensorboard()
    identity = RunIdentity.of("run", run_identity_config(run_config), as_path_list(data_path),
                              defaults={**PbtSettings().model_dump(), **LfadsConfig().model_dump()})
    decision = open_run_folder(layout.root, layout.owned_entries(), identity, overwrite)
    if decision.message and decision.action != "continue":
        echo(decision.message)
    factory = engine_factory or make_engine_factory(run_config, ray_address)
    try:
        result = PbtRun(run_config, data_path, PbtStore(layout), factory, progress, echo).execute()
    except RunInterrupted:
        mark_status(layout.root, identity, "interrupted")
        raise
    except NeurodynError:
        # Refused before its first generation was saved (bad data, no Ray cluster): a new run leaves
        # nothing behind (the lock then removes a folder it created), as a refused `train` does.
        if decision.action == "start" and saved_generations(layout) == 0:
            remove_entries(layout.owned_entries())
        raise
    mark_status(layout.root, identity, "finished", generations=result.generations, finished=result.finished)
    return result


__all__ = ["run_pbt", "PbtRun", "PbtResult", "make_engine_factory", "resolve_data_path"]
