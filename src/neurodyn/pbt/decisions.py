"""What the population does before its first generation and after each one, as pure functions.

``decide_after_generation`` takes the generation's metrics (smoothed validation NLL, NaN for a
diverged worker), the workers' hyperparameters, the search space, the best result so far, the
stopping rule's state and a random generator, and returns the new best (if any), who copies whom,
the hyperparameters of the next generation (explored where copied), notes on any clipping, and
why the run should stop (None to go on). It reads and writes no file and trains nothing, so it can
be tested with chosen metrics; the driver (``pbt.run``) applies the decision.

Until the KL and L2 ramps are complete (``ramps_complete_after``) the workers train under weaker
regularisation than they will, so their validation NLL is not yet comparable with a later one: as for
one model (``LfadsTrainer``), such generations count towards no patience, and a best taken from them is
provisional, replaced by the first leader after the ramps whatever its metric.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from neurodyn.config import LfadsConfig, PbtSettings, SearchSpec
from neurodyn.pbt.population import StoppingRule, best_worker, binary_tournament, is_bad, truncation
from neurodyn.pbt.search_space import explore, initial_values, keep_valid, limit


@dataclass
class GenerationDecision:
    leader: int | None                         # the generation's best finite worker (None: all diverged)
    new_best: bool                             # the leader beats the best so far
    copies: dict[int, int]                     # copier -> source
    hyperparameters: list[dict[str, float]]    # each worker's values for the next generation
    stopping: StoppingRule                     # the stopping rule after this generation
    stop_reason: str | None = None             # why the run ends now (None: go on)
    notes: list[str] = field(default_factory=list)


def initial_population(search_space: dict[str, SearchSpec], model: LfadsConfig, num_workers: int,
                       start_from_config: bool, rng: np.random.Generator) -> list[dict[str, float]]:
    """Each worker's starting values of the searched keys.

    Every key is drawn as its ``init_sample_mode`` says; with ``start_from_config`` worker 0 instead
    takes the model config's value of each key (clipped to its range; the nearest allowed value of a
    list), the settings one ``neurodyn train`` with this config would use, so the population always
    contains the user's own starting point.
    """
    samples = {key: initial_values(spec, num_workers, rng) for key, spec in search_space.items()}
    workers = [{key: samples[key][w] for key in samples} for w in range(num_workers)]
    if start_from_config and num_workers:
        workers[0] = {key: limit(float(getattr(model, key)), spec) for key, spec in search_space.items()}
    return workers


def ramps_complete_after(generations_done: int, epochs_per_generation: int, model: LfadsConfig) -> bool:
    """Whether the workers' last epoch after ``generations_done`` generations trained with the KL and L2
    ramps complete (epoch index >= ``max(kl_increase_epochs, l2_increase_epochs)``, as ``LfadsTrainer``
    counts)."""
    last_epoch = generations_done * epochs_per_generation - 1
    return last_epoch >= max(model.kl_increase_epochs, model.l2_increase_epochs)


def count_diverged(metrics: list[float]) -> int:
    """Workers whose metric is NaN, infinite or missing (the tournament's notion of diverged)."""
    return sum(1 for m in metrics if is_bad(m))


def decide_after_generation(metrics: list[float], hyperparameters: list[dict[str, float]],
                            search_space: dict[str, SearchSpec], best_metric: float, stopping: StoppingRule,
                            settings: PbtSettings, generations_done: int,
                            rng: np.random.Generator, ramps_complete: bool = True) -> GenerationDecision:
    """The population's decision after ``generations_done`` generations (see the module docstring).

    ``stopping`` is not changed; the returned decision holds its updated copy, which only a generation
    with ``ramps_complete`` advances (pass ``best_metric`` = inf for the first such generation after a
    provisional best).
    """
    leader = best_worker(metrics)
    new_best = leader is not None and metrics[leader] < best_metric
    stopping = copy.deepcopy(stopping)
    if ramps_complete:
        stopping.update(None if leader is None else metrics[leader])
    if settings.exploit_method == "truncation":
        copies = truncation(metrics, rng, settings.truncation_fraction)
    else:
        copies = binary_tournament(metrics, rng)
    notes: list[str] = []
    following: list[dict[str, float]] = []
    for worker, values in enumerate(hyperparameters):
        source = copies.get(worker)
        if source is None:
            following.append(dict(values))
            continue
        explored = {}
        for key, value in hyperparameters[source].items():
            explored[key], note = keep_valid(key, explore(value, search_space[key], rng))
            if note:
                notes.append(f"worker {worker}: {note}")
        following.append(explored)
    stop_reason = None
    if stopping.should_stop:
        patience = settings.num_no_best_to_stop
        stop_reason = (f"no improvement of more than {settings.percent_change_to_stop}% for "
                       f"{patience} generation{'s' if patience != 1 else ''}")
    elif generations_done >= settings.max_generations:
        stop_reason = f"max_generations ({settings.max_generations}) reached"
    return GenerationDecision(leader, new_best, copies, following, stopping, stop_reason, notes)
