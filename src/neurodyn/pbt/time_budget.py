"""A run's ``Duration`` as a promise that includes writing the outputs, as pure decisions.

A user who gives a run 30 minutes wants ``pbt_best_model/`` complete at 30 minutes, not training that
ends at 30 minutes followed by an export of unknown length (with refined inference the export can
cost more than many generations). So the run measures what the export costs (``ExportCost``: both
inferences timed on a sample of trials, scaled to every trial) and stops training when another
generation *and* the export would pass the Duration. The machine's speed drifts (other jobs start on
a shared node): the measured cost is scaled by how much slower or faster the latest generations ran
than the generation before the measurement. If, at the end, the configured inference cannot finish
within the promise's grace (``grace_seconds``), the cheaper standard inference is written instead.

Nothing here reads a clock or trains: the driver (``pbt.run``) passes the seconds in.
"""

from __future__ import annotations

from dataclasses import dataclass

# The promise: every output written by Duration + max(GRACE_FRACTION * Duration, GRACE_MIN_SECONDS).
GRACE_FRACTION, GRACE_MIN_SECONDS = 0.1, 60.0
# The standard inference the export falls back to, and the configured inferences that cost more.
STANDARD_INFERENCE = "sample_average"
COSTLY_INFERENCES = ("refined", "empirical_bayes")


def grace_seconds(duration_seconds: float) -> float:
    """Seconds past the Duration by which every output must be written."""
    return max(GRACE_FRACTION * duration_seconds, GRACE_MIN_SECONDS)


@dataclass(frozen=True)
class ExportCost:
    """What writing the best model's outputs costs, measured once during the run.

    Attributes
    ----------
    configured_seconds : float
        The outputs with the configured inference, every trial (s).
    standard_seconds : float
        The same with the standard sample-average inference (s; equal to ``configured_seconds`` when
        that is the configured one).
    generation_seconds : float
        How long the generation before the measurement took (s): the machine's speed at the time.
    """

    configured_seconds: float
    standard_seconds: float
    generation_seconds: float

    def scaled(self, recent_generation_seconds: float) -> "ExportCost":
        """The cost on a machine now running generations in ``recent_generation_seconds`` (a busier
        machine exports slower in proportion; never below the measured cost)."""
        factor = max(1.0, recent_generation_seconds / self.generation_seconds) if self.generation_seconds > 0 else 1.0
        return ExportCost(self.configured_seconds * factor, self.standard_seconds * factor, recent_generation_seconds)


def should_stop_training(elapsed_seconds: float, next_generation_seconds: float, export: ExportCost | None,
                         configured_inference: str, duration_seconds: float) -> bool:
    """Whether to stop before another generation: it and the export would end past the Duration.

    The export counted is the configured inference's when that fits after the generation, else the
    standard one's (``export_inference`` will then choose it); before any measurement, none."""
    after_generation = elapsed_seconds + next_generation_seconds
    if export is None:
        return after_generation > duration_seconds
    inference, _ = export_inference(configured_inference, after_generation, export, duration_seconds)
    cost = export.configured_seconds if inference == configured_inference else export.standard_seconds
    return after_generation + cost > duration_seconds


def export_inference(configured_inference: str, elapsed_seconds: float, export: ExportCost | None,
                     duration_seconds: float) -> tuple[str, str | None]:
    """The inference the export uses now, and a line for the user when it is not the configured one.

    The configured inference is kept unless it is a costly one whose expected cost would pass the
    Duration's grace while the standard inference would not (or costs less)."""
    if export is None or configured_inference not in COSTLY_INFERENCES:
        return configured_inference, None
    left = duration_seconds + grace_seconds(duration_seconds) - elapsed_seconds
    if export.configured_seconds <= left or export.standard_seconds >= export.configured_seconds:
        return configured_inference, None
    return STANDARD_INFERENCE, (
        f"inference: the {configured_inference} outputs would take ~{export.configured_seconds:.0f} s, past the "
        f"Duration ({max(0.0, left):.0f} s left with its grace): writing the standard {STANDARD_INFERENCE} outputs "
        f"(~{export.standard_seconds:.0f} s) instead")
