"""What a run folder holds and whether a command may start, continue or must refuse.

``run.json`` records the command kind (``train`` or ``run``), the config the run was made with, the
data file's path and the SHA-256 of its content, and the run's status (``running``,
``interrupted``, ``finished``). Re-running the same command on the same data continues an
interrupted run or reports that it has finished; a folder holding another run (another config,
another data file, or a data file whose content changed since) is refused unless ``--overwrite``
is given, and then only the files a run owns are removed (``layout``).

``decide_start`` is the decision as a pure function; ``open_run_folder`` reads the folder, applies it
and writes ``run.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

from neurodyn.data.atomic import write_text_atomic
from neurodyn.errors import NeurodynError
from neurodyn.runs.layout import LOCK_FILE, RUN_INFO_FILE

# Keys that change where or how fast a run computes, not what it computes: a run may continue with
# other values.
RUNTIME_KEYS = frozenset({"device", "batch_threads", "max_processes", "ray_address", "engine"})

Status = Literal["running", "interrupted", "finished"]
Action = Literal["start", "continue", "finished"]


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 22) -> str:
    """SHA-256 of a file's content (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class RunIdentity:
    """What makes two runs the same run: command, config (runtime keys left out) and data content."""

    kind: str
    config: dict[str, Any]
    data_path: str
    data_sha256: str
    # Each config key's default: a run recorded before a key existed is read as having had its default.
    # Not recorded in run.json.
    defaults: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, kind: str, config: dict[str, Any], data_path: str | Path | list[str | Path],
           defaults: dict[str, Any] | None = None) -> "RunIdentity":
        """The identity of a run of ``config`` on one data file, or on several (stitched sessions, in order:
        their paths joined by ' + ', the SHA-256 of their SHA-256s); ``defaults`` are the config keys'
        default values."""
        kept, defaults = (_comparable(values) for values in (config, defaults or {}))
        paths = [data_path] if isinstance(data_path, (str, Path)) else list(data_path)
        if len(paths) == 1:
            return cls(kind, kept, str(Path(paths[0])), file_sha256(paths[0]), defaults)
        combined = hashlib.sha256("\n".join(file_sha256(path) for path in paths).encode()).hexdigest()
        return cls(kind, kept, join_data_paths(paths), combined, defaults)


# How run.json and checkpoints name the data files of a run of several sessions: their paths, in order.
DATA_PATH_SEPARATOR = " + "


def join_data_paths(paths: Iterable[str | Path]) -> str:
    """One data file's path, or several files' paths joined by ``DATA_PATH_SEPARATOR``."""
    return DATA_PATH_SEPARATOR.join(str(Path(path)) for path in paths)


def split_data_paths(text: str) -> list[str]:
    """The paths ``join_data_paths`` joined."""
    return text.split(DATA_PATH_SEPARATOR)


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The config without its runtime keys, through JSON, so that a value read back from run.json
    compares equal (tuples -> lists, ...)."""
    return json.loads(json.dumps({k: v for k, v in config.items() if k not in RUNTIME_KEYS}, default=str))


@dataclass(frozen=True)
class StartDecision:
    action: Action
    message: str = ""        # what to tell the user (empty when there is nothing to say)
    remove_existing: bool = False


def _config_differences(old: dict[str, Any], new: dict[str, Any], limit: int = 4) -> str:
    keys = sorted(set(old) | set(new))
    changed = [k for k in keys if old.get(k) != new.get(k)]
    shown = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in changed[:limit])
    return shown + (f" and {len(changed) - limit} more" if len(changed) > limit else "")


def decide_start(folder: str, recorded: dict[str, Any] | None, has_run_files: bool, identity: RunIdentity,
                 overwrite: bool) -> StartDecision:
    """Start, continue, report finished, or refuse (NeurodynError) — from what the folder holds.

    ``recorded`` is the folder's ``run.json`` (None when absent); ``has_run_files`` whether any file
    a run owns is there.
    """
    if overwrite:
        return StartDecision("start", f"--overwrite: replacing the run in {folder}" if has_run_files else "",
                             remove_existing=has_run_files)
    if recorded is None:
        if has_run_files:
            raise NeurodynError(f"{folder} holds results of an earlier run without its {RUN_INFO_FILE}; use "
                                "--overwrite to replace them, or another output folder")
        return StartDecision("start")
    replace = "use --overwrite to replace it, or another output folder"
    if recorded.get("kind") != identity.kind:
        raise NeurodynError(f"{folder} holds a 'neurodyn {recorded.get('kind')}' run, not a 'neurodyn "
                            f"{identity.kind}' run; {replace}")
    if recorded.get("data_sha256") != identity.data_sha256:
        if Path(recorded.get("data_path", "")).resolve() == Path(identity.data_path).resolve():
            raise NeurodynError(f"{folder} holds a run made with {identity.data_path}, whose content has changed "
                                f"since (SHA-256 differs); {replace}")
        raise NeurodynError(f"{folder} holds a run made with another data file ({recorded.get('data_path')}); "
                            f"{replace}")
    # Keys added to neurodyn after the run was recorded: it was made with their defaults.
    recorded_config = {**{k: v for k, v in identity.defaults.items() if k in identity.config},
                       **recorded.get("config", {})}
    if recorded_config != identity.config:
        raise NeurodynError(f"{folder} holds a run made with another config: "
                            f"{_config_differences(recorded_config, identity.config)}; {replace}")
    if recorded.get("status") == "finished":
        return StartDecision("finished", f"the run in {folder} has finished; nothing to do (use --overwrite to "
                                         "start it anew)")
    return StartDecision("continue", f"continuing the unfinished run in {folder}")


def read_run_info(path: str | Path) -> dict[str, Any] | None:
    """A folder's ``run.json`` (None when absent), with a clear error for a damaged one."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as error:
        raise NeurodynError(f"{path}: damaged run record ({error}); use --overwrite to start the run anew") from None
    if not isinstance(info, dict):
        raise NeurodynError(f"{path}: damaged run record (not a JSON object); use --overwrite to start anew")
    return info


def write_run_info(path: str | Path, identity: RunIdentity, status: Status, **extra: Any) -> None:
    """Record the run's identity and status (atomically)."""
    recorded = {key: value for key, value in asdict(identity).items() if key != "defaults"}
    write_text_atomic(path, json.dumps({**recorded, "status": status, **extra}, indent=1) + "\n")


def remove_entries(entries: Iterable[Path]) -> None:
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()


def open_run_folder(root: str | Path, owned: list[Path], identity: RunIdentity, overwrite: bool) -> StartDecision:
    """Check ``root`` for the run of ``identity`` and prepare it (see ``decide_start``).

    Creates ``root`` when needed; with ``--overwrite`` removes the files a run owns (``owned``) and
    nothing else; writes ``run.json`` with status ``running`` unless the run has finished.
    """
    root = Path(root)
    require_folder(root)
    info_path = root / RUN_INFO_FILE
    recorded = read_run_info(info_path)
    has_run_files = any(entry.exists() for entry in owned)
    decision = decide_start(str(root), recorded, has_run_files, identity, overwrite)
    if decision.remove_existing:
        remove_entries(owned)
    root.mkdir(parents=True, exist_ok=True)
    if decision.action != "finished":
        write_run_info(info_path, identity, "running")
    return decision


def require_folder(root: Path) -> None:
    """One line when a run's output folder names an existing file."""
    if root.exists() and not root.is_dir():
        raise NeurodynError(f"{root} is a file; the output must be a folder (give a new or existing folder)")


def mark_status(root: str | Path, identity: RunIdentity, status: Status, **extra: Any) -> None:
    write_run_info(Path(root) / RUN_INFO_FILE, identity, status, **extra)


class RunLock:
    """Holds ``root/.neurodyn.lock`` (an exclusive ``flock``) while a run writes its folder, so a second
    process started on the same folder stops with one line instead of writing the same files."""

    def __init__(self, root: str | Path):
        self.path = Path(root) / LOCK_FILE
        self._handle = None
        self._created_folder = False

    def __enter__(self) -> "RunLock":
        import fcntl

        require_folder(self.path.parent)
        self._created_folder = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise NeurodynError(f"{self.path.parent} is in use by another neurodyn run ({holder}); wait for it to "
                                "finish or stop it, or use another output folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is None:
            return
        folder = self.path.parent
        if self._created_folder and [entry.name for entry in folder.iterdir()] == [LOCK_FILE]:
            # A run that stopped before writing anything (bad input) leaves no folder behind. Removed
            # while the lock is held, so no other run can be writing there.
            self.path.unlink(missing_ok=True)
            try:
                folder.rmdir()
            except OSError:  # another run has just started there: the folder is its now
                pass
        self._handle.close()  # closing releases the lock; the file stays (it is empty of meaning)
        self._handle = None
