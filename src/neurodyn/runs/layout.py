"""Names of the files and folders a run writes: the one place that builds a run path.

A ``neurodyn train`` folder (``TrainLayout``)::

    OUT/run.json                what the run was made with (config, data file hash) and its status
    OUT/config.yaml             the resolved config (every key, values derived from the data included)
    OUT/train_log.csv           one row per epoch
    OUT/checkpoint.safetensors  the trained model (best weights) and the trainer state
    OUT/resume.safetensors      the state an interrupted run continues from (removed when it finishes)
    OUT/<split>_output.h5       inferred outputs per split (train, valid, and test when the file names one)
    OUT/continuous_output.h5    a continuous session's windows merged into one series (its data file made by
                                'neurodyn prepare continuous')
    OUT/<session>/<split>_output.h5   instead, for several data files (stitching): one folder per session,
                                named by its file's stem

A ``neurodyn run`` results folder (``PbtLayout``)::

    RESULTS/run.json                      what the run was made with and its status
    RESULTS/pbt_best_model/               <split>_output.h5, checkpoint.safetensors, hyperparameters.yaml
    RESULTS/<run_name>/                   worker_XX/ (train_log.csv, hp_history.csv, checkpoint.safetensors),
                                          pbt_log.csv, pbt_progress.png, run.log, .state/
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RUN_INFO_FILE = "run.json"
CONFIG_FILE = "config.yaml"
TRAIN_LOG_FILE = "train_log.csv"
CHECKPOINT_FILE = "checkpoint.safetensors"
RESUME_FILE = "resume.safetensors"
HYPERPARAMETERS_FILE = "hyperparameters.yaml"
BEST_MODEL_DIR = "pbt_best_model"
PBT_LOG_FILE = "pbt_log.csv"
PBT_PROGRESS_FIGURE = "pbt_progress.png"
RUN_LOG_FILE = "run.log"
HP_HISTORY_FILE = "hp_history.csv"
STATE_DIR = ".state"
PBT_STATE_FILE = "pbt_state.json"
EVALUATION_JSON = "evaluation.json"
EVALUATION_FIGURE = "evaluation.png"
EVALUATION_SUMMARY_FIGURE = "evaluation_summary.png"
LOCK_FILE = ".neurodyn.lock"
LATENTS_JSON = "map_to_latents.json"
LATENTS_FIGURE = "map_to_latents.png"
# A continuous session's outputs merged into one series (data files made by 'neurodyn prepare continuous').
CONTINUOUS_OUTPUT_FILE = "continuous_output.h5"
TENSORBOARD_DIR = "tensorboard"
# The checkpoint name of neurodyn 0.1 (a pickle): recognised only to refuse it with a clear message.
LEGACY_CHECKPOINT_FILE = "checkpoint.pt"

SPLITS = ("train", "valid", "test")


def output_file_name(split: str) -> str:
    """``<split>_output.h5``, the inferred outputs of one split."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return f"{split}_output.h5"


@dataclass(frozen=True)
class TrainLayout:
    """The files of one trained model in ``root`` (a ``neurodyn train`` folder or ``pbt_best_model/``)."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def run_info(self) -> Path:
        return self.root / RUN_INFO_FILE

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def train_log(self) -> Path:
        return self.root / TRAIN_LOG_FILE

    @property
    def checkpoint(self) -> Path:
        return self.root / CHECKPOINT_FILE

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD_DIR

    @property
    def resume(self) -> Path:
        return self.root / RESUME_FILE

    @property
    def hyperparameters(self) -> Path:
        return self.root / HYPERPARAMETERS_FILE

    def output(self, split: str) -> Path:
        return self.root / output_file_name(split)

    @property
    def continuous_output(self) -> Path:
        """The merged series of a continuous session (``runs.continuous_output``)."""
        return self.root / CONTINUOUS_OUTPUT_FILE

    def session(self, name: str) -> "TrainLayout":
        """The folder of one session's outputs (a model of several data files)."""
        return TrainLayout(self.root / name)

    def owned_entries(self, session_names: tuple[str, ...] | list[str] = ()) -> list[Path]:
        """Everything a run writes here (what ``--overwrite`` removes; nothing else is touched), the
        folders of the sessions ``session_names`` included."""
        return [*(self.root / name for name in session_names), self.run_info, self.config, self.train_log, self.checkpoint, self.resume, self.hyperparameters,
                self.root / LEGACY_CHECKPOINT_FILE, self.root / EVALUATION_JSON, self.root / EVALUATION_FIGURE,
                self.root / EVALUATION_SUMMARY_FIGURE,
                self.root / LATENTS_JSON, self.root / LATENTS_FIGURE, *(self.output(s) for s in SPLITS),
                self.continuous_output, self.tensorboard]


@dataclass(frozen=True)
class PbtLayout:
    """The files of an AutoLFADS results folder ``root`` for the run called ``run_name``."""

    root: Path
    run_name: str

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def run_info(self) -> Path:
        return self.root / RUN_INFO_FILE

    @property
    def best_model(self) -> TrainLayout:
        return TrainLayout(self.root / BEST_MODEL_DIR)

    @property
    def run_dir(self) -> Path:
        return self.root / self.run_name

    @property
    def state_dir(self) -> Path:
        return self.run_dir / STATE_DIR

    @property
    def state_file(self) -> Path:
        return self.state_dir / PBT_STATE_FILE

    @property
    def pbt_log(self) -> Path:
        return self.run_dir / PBT_LOG_FILE

    @property
    def progress_figure(self) -> Path:
        return self.run_dir / PBT_PROGRESS_FIGURE

    @property
    def tensorboard(self) -> Path:
        return self.run_dir / TENSORBOARD_DIR

    @property
    def run_log(self) -> Path:
        return self.run_dir / RUN_LOG_FILE

    def worker_dir(self, worker: int) -> Path:
        return self.run_dir / f"worker_{worker:02d}"

    def worker_files(self, worker: int) -> TrainLayout:
        return TrainLayout(self.worker_dir(worker))

    def hp_history(self, worker: int) -> Path:
        return self.worker_dir(worker) / HP_HISTORY_FILE

    @staticmethod
    def generation_dir_name(generation: int) -> str:
        """Folder (under ``.state/``) of the worker states that start generation ``generation``."""
        return f"gen_{generation:04d}"

    @staticmethod
    def worker_state_name(generation: int, worker: int) -> str:
        """A worker's state file, relative to ``.state/``."""
        return f"{PbtLayout.generation_dir_name(generation)}/worker_{worker:02d}.safetensors"

    @staticmethod
    def best_state_name(generation: int) -> str:
        """The best worker's state after ``generation`` generations, relative to ``.state/``."""
        return f"best_gen_{generation:04d}.safetensors"

    def owned_entries(self) -> list[Path]:
        """Everything a run writes in ``root`` (what ``--overwrite`` removes)."""
        return [self.run_info, self.root / BEST_MODEL_DIR, self.run_dir, self.root / LATENTS_JSON,
                self.root / LATENTS_FIGURE, self.root / EVALUATION_JSON, self.root / EVALUATION_FIGURE,
                self.root / EVALUATION_SUMMARY_FIGURE]


def report_dir(run_dir: str | Path, output_dir: str | Path) -> Path:
    """Where ``evaluate`` and ``map-to-latents`` write for the outputs in ``output_dir`` (``find_output_dir``):
    a session's own folder for a model of several sessions, else the run (or results) folder."""
    run_dir, output_dir = Path(run_dir), Path(output_dir)
    if output_dir != run_dir and output_dir.name != BEST_MODEL_DIR:
        return output_dir
    return run_dir


def _self_or_best_model(path: Path, marker: str) -> Path:
    """``path`` when it holds ``marker`` (a file name), else its ``pbt_best_model/`` when there is one."""
    if not (path / marker).exists() and (path / BEST_MODEL_DIR).is_dir():
        return path / BEST_MODEL_DIR
    return path


def find_model_dir(path: str | Path) -> Path:
    """The folder holding a run's model (``checkpoint.safetensors``): ``path`` itself, or its ``pbt_best_model/``."""
    return _self_or_best_model(Path(path), CHECKPOINT_FILE)


def find_output_dir(path: str | Path, data_path: str | Path | None = None) -> Path:
    """The folder holding a run's output files: ``path`` itself, or its ``pbt_best_model/``; for a model
    of several sessions, the folder of the session of ``data_path`` (named by its file's stem) in there."""
    path = _self_or_best_model(Path(path), output_file_name("valid"))
    if data_path is not None and not (path / output_file_name("valid")).exists():
        session = path / Path(data_path).stem
        if (session / output_file_name("valid")).exists():
            return session
    return path
