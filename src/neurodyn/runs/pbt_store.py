"""The files of an AutoLFADS run: its committed state, worker states and folders, logs, the best model.

A generation is committed by writing ``.state/pbt_state.json`` (atomically) after every worker's
new state is on disk; a killed run re-run with the same command continues from the last committed
generation. Worker states are neurodyn checkpoints (safetensors + JSON, never pickle).
``pbt_best_model`` is built in a temporary folder and renamed into place.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from neurodyn.data.atomic import atomic_path, write_text_atomic
from neurodyn.errors import NeurodynError
from neurodyn.runs.checkpoint import decode_state
from neurodyn.runs.layout import PbtLayout, TrainLayout
from neurodyn.runs.tables import rows_to_csv


@dataclass
class WorkerRecord:
    hyperparameters: dict[str, float]
    start_state: str | None = None      # file (relative to .state/) this worker continues from
    copied_from: int | None = None      # whom it copied before the coming generation
    metric: float = math.nan


@dataclass
class PbtState:
    """Everything a resumed run needs (JSON)."""

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
    # Whether the best so far comes from a generation after the KL/L2 ramps (pbt.decisions); a new run
    # starts False, and a state written before this key existed reads as True (its best stands).
    best_after_ramps: bool = True

    def to_json(self) -> str:
        data = self.__dict__.copy()
        data["workers"] = [w.__dict__ for w in self.workers]
        return json.dumps(data, indent=1, default=float)

    @classmethod
    def from_json(cls, text: str) -> "PbtState":
        data = json.loads(text)
        data["workers"] = [WorkerRecord(**w) for w in data["workers"]]
        return cls(**data)


class RunLog:
    """Lines to ``run.log`` (flushed at once) and to the terminal."""

    def __init__(self, path: Path, echo: Callable[[str], None]):
        self.path, self.echo = path, echo

    def __call__(self, line: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.path, "a") as handle:
            handle.write(f"{stamp} {line}\n")
        self.echo(line)


def saved_generations(layout: PbtLayout) -> int:
    """How many generations the run in ``layout`` has saved (0: none, or no readable state yet)."""
    try:
        return int(json.loads(layout.state_file.read_text()).get("generation", 0))
    except (OSError, ValueError, AttributeError):
        return 0


class PbtStore:
    """Reads and writes every file of the AutoLFADS run laid out by ``layout``."""

    def __init__(self, layout: PbtLayout):
        self.layout = layout
        layout.run_dir.mkdir(parents=True, exist_ok=True)

    # -- committed state ------------------------------------------------------------------------
    def load(self) -> PbtState | None:
        """The last committed state, with anything a killed run left uncommitted removed (None: new run)."""
        if not self.layout.state_file.is_file():
            return None
        try:
            state = PbtState.from_json(self.layout.state_file.read_text())
        except (ValueError, TypeError, KeyError) as error:
            raise NeurodynError(f"{self.layout.state_file}: damaged run state ({error}); use --overwrite to start "
                                "the run anew") from None
        self._remove_uncommitted(state)
        return state

    def commit(self, state: PbtState) -> None:
        """Write the state (the commit point), then drop generation folders it no longer needs."""
        self.layout.state_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.layout.state_file, state.to_json())
        keep = {Path(w.start_state).parent.name for w in state.workers if w.start_state}
        keep |= {self.layout.generation_dir_name(state.generation)}
        for folder in self.layout.state_dir.glob("gen_*"):
            if folder.name not in keep:
                shutil.rmtree(folder, ignore_errors=True)
        for best in self.layout.state_dir.glob("best_gen_*"):
            if best.name != state.best_file:
                best.unlink(missing_ok=True)

    def _remove_uncommitted(self, state: PbtState) -> None:
        """A killed run may have left states of a generation it never committed: drop them."""
        for folder in self.layout.state_dir.glob("gen_*"):
            if int(folder.name.split("_")[1]) > state.generation:
                shutil.rmtree(folder, ignore_errors=True)
        for best in self.layout.state_dir.glob("best_gen_*"):
            if best.name != state.best_file:
                best.unlink(missing_ok=True)
        for leftover in self.layout.run_dir.rglob(".*.tmp"):
            leftover.unlink(missing_ok=True)

    # -- worker states ----------------------------------------------------------------------------
    def write_worker_state(self, generation: int, worker: int, blob: bytes) -> str:
        """Store a worker's state after ``generation`` generations; returns its name relative to .state/."""
        name = self.layout.worker_state_name(generation, worker)
        with atomic_path(self.layout.state_dir / name) as tmp:
            tmp.write_bytes(blob)
        return name

    def read_state_bytes(self, name: str) -> bytes:
        return (self.layout.state_dir / name).read_bytes()

    def read_state(self, name: str) -> dict[str, Any]:
        path = self.layout.state_dir / name
        return decode_state(path.read_bytes(), str(path))

    def keep_best(self, generation: int, worker_state: str) -> str:
        """Keep a copy of the best worker's state (it survives the generation folders' clean-up)."""
        name = self.layout.best_state_name(generation)
        with atomic_path(self.layout.state_dir / name) as tmp:
            shutil.copyfile(self.layout.state_dir / worker_state, tmp)
        return name

    # -- reports ----------------------------------------------------------------------------------
    def run_log(self, echo: Callable[[str], None]) -> RunLog:
        return RunLog(self.layout.run_log, echo)

    def write_reports(self, state: PbtState, histories: dict[int, list[dict[str, float]]]) -> None:
        """pbt_log.csv and each worker's folder: its current state, training log and hyperparameter history."""
        write_text_atomic(self.layout.pbt_log, rows_to_csv(state.log_rows))
        for w in range(len(state.workers)):
            files = self.layout.worker_files(w)
            files.root.mkdir(exist_ok=True)
            source = self.layout.state_dir / self.layout.worker_state_name(state.generation, w)
            with atomic_path(files.checkpoint) as tmp:
                tmp.unlink()
                os.link(source, tmp)  # the same bytes as the committed state, without a second copy
            write_text_atomic(files.train_log, rows_to_csv(histories[w]))
            write_text_atomic(self.layout.hp_history(w), rows_to_csv([r for r in state.log_rows if r["worker"] == w]))

    # -- the best model ---------------------------------------------------------------------------
    def export_best(self, write_files: Callable[[TrainLayout], None]) -> Path:
        """Build ``pbt_best_model/`` in a temporary folder with ``write_files`` and rename it into place."""
        final = self.layout.best_model.root
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=self.layout.root))
        try:
            write_files(TrainLayout(staging))
            if final.exists():
                old = final.with_name(f".{final.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return final
