"""Fitting GFR neurons to processed cells: activation pre-fit, then the full model.

Data use: Long Square and Ramp sweeps train; Noise 1 repeats validate (model selection); Noise 2
repeats test. Neither noise family is ever in a training loss. The loss is the Poisson NLL of the
spike counts per bin (expected count = rate x bin size), averaged over real bins only (padding is
masked out), plus ``C * (|a|_1 + |b|_1)``.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from neurodyn.config import GFR_TEST_STIMULUS as TEST_STIMULUS
from neurodyn.config import GFR_VALIDATION_STIMULUS as VALIDATION_STIMULUS
from neurodyn.config import GfrFitConfig as FitConfig
from neurodyn.config import load_config
from neurodyn.device import resolve_device
from neurodyn.errors import NeurodynError
from neurodyn.gfr.evr import explained_variance_ratio
from neurodyn.gfr.model import ALLOWED_ACTIVATION_BIN_SIZES, GFR, PolynomialActivation, check_bin_size
from neurodyn.gfr.preprocess import BinnedSweep, ProcessedCell, processed_path, read_processed



def load_fit_config(path: str | os.PathLike | None) -> FitConfig:
    """The config at ``path`` (JSON), or the defaults for None; unknown keys name the closest valid one."""
    return FitConfig() if path is None else load_config(path, FitConfig)


def poisson_nll(rates: torch.Tensor, counts: torch.Tensor, mask: torch.Tensor, bin_size: float) -> torch.Tensor:
    """Mean Poisson NLL per real bin for each neuron (the one place GFR's likelihood lives).

    rates (sweeps, time, neurons) in spikes/ms; counts and mask (sweeps, time). Returns (neurons,).
    The ``log n!`` constant is left out, as in torch's default and the published loss values.
    """
    expected = rates * bin_size
    nll = F.poisson_nll_loss(expected, counts.unsqueeze(-1).expand_as(expected), log_input=False,
                             full=False, reduction="none")
    weights = mask.unsqueeze(-1).to(nll.dtype)
    return (nll * weights).sum((0, 1)) / weights.sum()


@dataclass
class SweepBatch:
    """Sweeps padded to one length: current (pA), counts and mask (1 = real bin), all (sweeps, time)."""

    current: torch.Tensor
    counts: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def from_sweeps(cls, sweeps: list[BinnedSweep], bin_size: int, device: torch.device) -> "SweepBatch":
        length = max(len(s.current) for s in sweeps)
        current, counts, mask = (np.zeros((len(sweeps), length)) for _ in range(3))
        for i, s in enumerate(sweeps):
            current[i, :len(s.current)] = s.current
            counts[i, :len(s.rate)] = np.round(s.rate * bin_size)
            mask[i, :len(s.current)] = 1
        as_tensor = lambda x: torch.as_tensor(x, dtype=torch.float32, device=device)  # noqa: E731
        return cls(as_tensor(current), as_tensor(counts), as_tensor(mask))


def repeats_array(sweeps: list[BinnedSweep]) -> tuple[np.ndarray, np.ndarray]:
    """Current and rate of repeats of one stimulus as (repeats, time), cut to the shortest repeat."""
    length = min(len(s.current) for s in sweeps)
    return (np.stack([s.current[:length] for s in sweeps]), np.stack([s.rate[:length] for s in sweeps]))


def stimulus_onset_points(sweeps: list[BinnedSweep], bin_size: int) -> tuple[np.ndarray, np.ndarray]:
    """One ``(current, count)`` point per Long Square sweep: the first bin after the step onset.

    The onset is the first bin whose |current| reaches half the sweep's largest |current|, so a small
    test pulse before the step is skipped. Returns currents (pA) and spike counts, each (points,).
    """
    currents, counts = [], []
    for s in sweeps:
        peak = np.abs(s.current).max(initial=0.0)
        if peak == 0:
            continue
        onset = int(np.argmax(np.abs(s.current) >= 0.5 * peak))
        currents.append(s.current[onset])
        counts.append(round(s.rate[onset] * bin_size))
    return np.asarray(currents, dtype=float), np.asarray(counts, dtype=float)


def scale_updates_per_row(params: list[torch.Tensor], before: list[torch.Tensor], row_scale: torch.Tensor) -> None:
    """Rescale the last optimiser update of each row (neuron) of every parameter by ``row_scale``.

    Adam's update does not depend on the parameter value, so scaling row r's update by
    ``lr_r / lr`` is Adam with learning rate ``lr_r`` for that row: independent runs with different
    learning rates share one batched time loop.
    """
    with torch.no_grad():
        for p, old in zip(params, before):
            scale = row_scale.view(-1, *([1] * (p.dim() - 1)))
            p.copy_(old + scale * (p - old))


def fit_activation(points: tuple[np.ndarray, np.ndarray], max_current: float, max_firing_rate: float,
                   degree: int, bin_size: int, config: FitConfig, device: torch.device,
                   rng: np.random.Generator) -> tuple[PolynomialActivation, float]:
    """Fit g to onset points: restarts run as a batch, the lowest final NLL wins.

    The threshold starts at the smallest onset current that evoked a spike. Returns the
    single-neuron activation and its mean NLL per point.
    """
    currents, counts = points
    if not np.any(counts > 0):
        raise NeurodynError("no Long Square sweep evokes a spike in the first activation bin after its onset")
    restarts = config.activation_restarts
    g = PolynomialActivation(restarts, degree, bin_size).to(device)
    with torch.no_grad():
        g.poly_coeff.copy_(torch.as_tensor(rng.uniform(0.1, 1.5, g.poly_coeff.shape), dtype=torch.float32))
        g.threshold.fill_(float(currents[counts > 0].min()))
        g.max_current.fill_(max_current)
        g.max_firing_rate.fill_(max_firing_rate)
    x = torch.as_tensor(currents, dtype=torch.float32, device=device)[None, :, None].expand(1, -1, restarts)
    y = torch.as_tensor(counts, dtype=torch.float32, device=device)[None]
    mask = torch.ones_like(y)
    optimizer = torch.optim.Adam(g.parameters(), lr=config.activation_lr)
    for _ in range(config.activation_epochs):
        optimizer.zero_grad()
        poisson_nll(g(x), y, mask, bin_size).sum().backward()
        optimizer.step()
    with torch.no_grad():
        losses = poisson_nll(g(x), y, mask, bin_size)
    best = int(torch.argmin(torch.nan_to_num(losses, nan=float("inf"))))
    single = PolynomialActivation(1, degree, bin_size).to(device)
    single.load_state_dict({k: v[best:best + 1] for k, v in g.state_dict().items()})
    return single, float(losses[best])


def evr_of_model(model: GFR, repeats: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """EVR of each neuron (run) of a batched model on repeats (current, rate), shape (neurons,)."""
    current, rate = repeats
    with torch.no_grad():
        x = torch.as_tensor(current, dtype=torch.float32, device=model.a.device)
        predicted = model(x.unsqueeze(-1).expand(-1, -1, model.n_neurons)).cpu().numpy()
    return np.array([explained_variance_ratio(rate, predicted[..., i]) for i in range(model.n_neurons)])


def l1_penalty(model: GFR) -> torch.Tensor:
    """``|a|_1 + |b|_1`` per neuron, shape (neurons,)."""
    return model.a.abs().sum(-1) + model.b.abs().sum(-1)


@dataclass
class FitResult:
    """A fitted cell: the seed dataset's record fields plus whether it passed the acceptance filter."""

    cell_id: int
    cre_line: str
    bin_size: int
    actv_bin_size: int
    val_evr: float
    test_evr: float
    train_loss: float
    test_loss: float
    params: dict
    accepted: bool
    reason: str = ""

    def record(self) -> dict:
        """The record of ``gfr_dataset.json``."""
        return {"cell_id": self.cell_id, "cre-line": self.cre_line or None, "bin_size": self.bin_size,
                "actv_bin_size": self.actv_bin_size, "val_evr": self.val_evr, "test_evr": self.test_evr,
                "train_loss": self.train_loss, "test_loss": self.test_loss, "params": self.params}


def split_cell(cell: ProcessedCell, bin_size: int, train_stimuli: list[str], source: str):
    """Training sweeps, Noise 1 repeats and Noise 2 repeats at ``bin_size``, or a NeurodynError."""
    sweeps = cell.sweeps_at(bin_size, source=source)
    present = sorted({s.stimulus_name for s in sweeps})
    split = {}
    for name in (VALIDATION_STIMULUS, TEST_STIMULUS):
        split[name] = [s for s in sweeps if s.stimulus_name == name]
        if not split[name]:
            raise NeurodynError(f"{source}: no '{name}' sweeps at {bin_size} ms (has {present}); GFR fitting needs "
                                "Noise 1 (validation) and Noise 2 (test) sweeps")
    train = [s for s in sweeps if s.stimulus_name in train_stimuli]
    if not train:
        raise NeurodynError(f"{source}: no training sweeps {train_stimuli} at {bin_size} ms (has {present})")
    return train, repeats_array(split[VALIDATION_STIMULUS]), repeats_array(split[TEST_STIMULUS])


def fit_cell(cell: ProcessedCell | str | os.PathLike, bin_size: int = 20, activation_bin_size: int = 20,
             degree: int = 1, C: float = 0.0, config: FitConfig | None = None, cre_line: str = "") -> FitResult:
    """Fit one cell (a ProcessedCell or the path of its processed h5 file)."""
    config = config or FitConfig()
    bin_size = check_bin_size(bin_size)
    activation_bin_size = check_bin_size(activation_bin_size, ALLOWED_ACTIVATION_BIN_SIZES, "activation bin size")
    if C < 0:
        raise NeurodynError(f"C must be >= 0 (an L1 penalty weight), got {C}")
    source = str(cell) if not isinstance(cell, ProcessedCell) else f"cell {cell.cell_id}"
    if not isinstance(cell, ProcessedCell):
        cell = read_processed(cell)
    if cell.max_firing_rate <= 0 or cell.max_current <= 0:
        raise NeurodynError(f"{source}: max_firing_rate {cell.max_firing_rate} and max_current {cell.max_current} "
                            "must be positive (the cell never fired two spikes in a sweep?)")
    train, val, test = split_cell(cell, bin_size, config.train_stimuli, source)
    device = resolve_device(config.device)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)

    points = stimulus_onset_points(cell.sweeps_at(activation_bin_size, "Long Square", source), activation_bin_size)
    try:
        g, _ = fit_activation(points, cell.max_current, cell.max_firing_rate, degree, activation_bin_size,
                              config, device, rng)
    except NeurodynError as error:
        raise NeurodynError(f"{source}: {error}")

    runs = len(config.learning_rates)
    model = GFR(runs, bin_size, degree, activation_bin_size).to(device)
    model.g.load_state_dict({k: v.expand(runs, *v.shape[1:]).clone() for k, v in g.state_dict().items()})
    if not config.learn_feedback:
        model.b.requires_grad_(False)
    batch = SweepBatch.from_sweeps(train, bin_size, device)
    x = batch.current.unsqueeze(-1).expand(-1, -1, runs)
    params = [p for p in model.parameters() if p.requires_grad]
    base_lr = max(config.learning_rates)
    row_scale = torch.as_tensor(config.learning_rates, device=device) / base_lr
    optimizer = torch.optim.Adam(params, lr=base_lr)

    best_evr = np.full(runs, -np.inf)
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    for epoch in range(1, config.epochs + 1):
        optimizer.zero_grad()
        loss = poisson_nll(model(x), batch.counts, batch.mask, bin_size) + C * l1_penalty(model)
        loss.sum().backward()  # runs are independent, so each gets its own gradient
        before = [p.detach().clone() for p in params]
        optimizer.step()
        scale_updates_per_row(params, before, row_scale)
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            evr = np.nan_to_num(evr_of_model(model, val), nan=-np.inf)
            improved = evr > best_evr
            best_evr = np.where(improved, evr, best_evr)
            for key, value in model.state_dict().items():
                if key != "ds":  # every other entry has one row per run
                    best_state[key][improved] = value[improved]

    winner = int(np.argmax(best_evr))
    final = GFR(1, bin_size, degree, activation_bin_size).to(device)
    final.load_state_dict({k: (v if k == "ds" else v[winner:winner + 1]) for k, v in best_state.items()})
    return evaluate_fit(final, cell, train, val, test, bin_size, activation_bin_size, config, cre_line)


def evaluate_fit(model: GFR, cell: ProcessedCell, train, val, test, bin_size: int, activation_bin_size: int,
                 config: FitConfig, cre_line: str = "") -> FitResult:
    """Scores of a single-neuron model and the acceptance decision."""
    device = model.a.device
    with torch.no_grad():
        batch = SweepBatch.from_sweeps(train, bin_size, device)
        train_loss = float(poisson_nll(model(batch.current.unsqueeze(-1)), batch.counts, batch.mask, bin_size)[0])
        test_current, test_rate = test
        test_batch = SweepBatch.from_sweeps(
            [BinnedSweep(0, TEST_STIMULUS, c, r) for c, r in zip(test_current, test_rate)], bin_size, device)
        test_loss = float(poisson_nll(model(test_batch.current.unsqueeze(-1)), test_batch.counts,
                                      test_batch.mask, bin_size)[0])
    val_evr, test_evr = float(evr_of_model(model, val)[0]), float(evr_of_model(model, test)[0])
    reasons = []
    if not val_evr > config.min_val_evr:
        reasons.append(f"validation EVR {val_evr:.3f} <= {config.min_val_evr}")
    if not train_loss < config.max_train_loss:
        reasons.append(f"training loss {train_loss:.3f} >= {config.max_train_loss}")
    return FitResult(cell.cell_id, cre_line or cell.cre_line, bin_size, activation_bin_size, val_evr, test_evr,
                     train_loss, test_loss, model.get_params(), not reasons, "; ".join(reasons))


@dataclass
class FitTask:
    """Everything a worker process needs to fit one cell."""

    path: str
    bin_size: int
    activation_bin_size: int
    degree: int
    C: float
    config: FitConfig
    cre_line: str = ""


def _run_task(task: FitTask) -> FitResult | str:
    """Fit in a worker; a NeurodynError comes back as its message so one bad cell does not stop the rest."""
    try:
        return fit_cell(task.path, task.bin_size, task.activation_bin_size, task.degree, task.C, task.config,
                        task.cre_line)
    except NeurodynError as error:
        return str(error)


def _single_thread_worker() -> None:
    torch.set_num_threads(1)  # one process per core; more threads would only compete


def fit_cells(cell_ids: list[int], data_dir: str | os.PathLike, bin_size: int = 20, activation_bin_size: int = 20,
              degree: int = 1, C: float = 0.0, config: FitConfig | None = None,
              cre_lines: dict[int, str] | None = None, progress: bool = True) -> tuple[list[FitResult], dict[int, str]]:
    """Fit many cells in parallel (``config.workers`` processes) with a progress bar.

    Returns the fit results and, for cells that could not be fitted, the reason per cell id.
    """
    from multiprocessing import get_context

    from tqdm import tqdm

    config = config or FitConfig()
    check_bin_size(bin_size)
    check_bin_size(activation_bin_size, ALLOWED_ACTIVATION_BIN_SIZES, "activation bin size")
    cre_lines = cre_lines or {}
    tasks = {i: FitTask(str(processed_path(data_dir, i)), bin_size, activation_bin_size, degree, C, config,
                        cre_lines.get(i, "")) for i in cell_ids}
    outcomes: dict[int, FitResult | str] = {}
    bar = tqdm(total=len(tasks), desc=f"fitting GFR ({bin_size}/{activation_bin_size} ms)", disable=not progress)
    if config.workers <= 1 or len(tasks) <= 1:
        for cell_id, task in tasks.items():
            outcomes[cell_id] = _run_task(task)
            bar.update()
    else:
        # spawn: a forked child would inherit the parent's torch thread pool state.
        with ProcessPoolExecutor(config.workers, mp_context=get_context("spawn"),
                                 initializer=_single_thread_worker) as pool:
            futures = {pool.submit(_run_task, task): cell_id for cell_id, task in tasks.items()}
            for future in as_completed(futures):
                outcomes[futures[future]] = future.result()
                bar.update()
    bar.close()
    results = [outcomes[i] for i in cell_ids if isinstance(outcomes[i], FitResult)]
    failures = {i: outcomes[i] for i in cell_ids if isinstance(outcomes[i], str)}
    return results, failures


def save_fit_results(save_path: str | os.PathLike, results: list[FitResult], failures: dict[int, str],
                     bin_size: int, activation_bin_size: int) -> dict[str, Path]:
    """Write ``fit_summary_{bin}_{actv}.csv`` (every cell, with its acceptance reason) and merge the
    accepted cells into ``gfr_dataset.json``; both atomically. Returns the paths written."""
    import pandas as pd

    from neurodyn.data.atomic import write_text_atomic
    from neurodyn.gfr.dataset import write_dataset_json

    save_path = Path(save_path)
    rows = [{**{k: v for k, v in r.record().items() if k != "params"}, "accepted": r.accepted, "reason": r.reason}
            for r in results]
    rows += [{"cell_id": i, "bin_size": bin_size, "actv_bin_size": activation_bin_size, "accepted": False,
              "reason": reason} for i, reason in failures.items()]
    summary = save_path / f"fit_summary_{bin_size}_{activation_bin_size}.csv"
    write_text_atomic(summary, pd.DataFrame(rows).to_csv(index=False))
    dataset = save_path / "gfr_dataset.json"
    write_dataset_json(dataset, [r.record() for r in results if r.accepted])
    return {"summary": summary, "dataset": dataset}
