"""Offline stand-in for the Allen recordings: noise-driven adaptive exponential integrate-and-fire cells.

Each simulated cell gets the four GFR sweep families with currents scaled to its rheobase:
Long Square steps, one Ramp, and Noise 1 / Noise 2 (pink-noise segments around 1, 1.5 and 2.5 x
the steady-state rheobase), each noise sweep repeated with identical stimulus current. Repeats differ only by an
intrinsic noise current, so the data have a repeatable part the EVR can measure.
Units: mV, ms, pF, nS, pA.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from neurodyn.errors import NeurodynError
from neurodyn.gfr.preprocess import RawSweep, bin_sweep


@dataclass(frozen=True)
class AdExParams:
    """Adaptive exponential integrate-and-fire parameters."""

    capacitance_pf: float
    leak_ns: float
    rest_mv: float
    threshold_mv: float  # V_T, where the exponential upswing starts
    slope_mv: float  # Delta_T
    adapt_coupling_ns: float  # subthreshold adaptation a
    adapt_tau_ms: float
    adapt_jump_pa: float  # spike-triggered adaptation b
    reset_mv: float
    peak_mv: float = 0.0

    def rheobase_pa(self) -> float:
        """Steady-state rheobase estimate ``(g_L + a)(V_T - E_L - Delta_T)``."""
        return (self.leak_ns + self.adapt_coupling_ns) * (self.threshold_mv - self.rest_mv - self.slope_mv)


#: Firing patterns in the spirit of Naud et al. (2008): tonic, adapting, initial burst, bursting.
CELL_TYPES = {
    "tonic": AdExParams(200, 10, -70, -50, 2, 2, 30, 0, -58),
    "adapting": AdExParams(200, 12, -70, -50, 2, 2, 300, 60, -58),
    "initial_burst": AdExParams(130, 18, -58, -50, 2, 4, 150, 120, -50),
    "bursting": AdExParams(200, 10, -58, -50, 2, 2, 120, 100, -46),
}


@dataclass(frozen=True)
class Protocol:
    """Stimulus families, with amplitudes as multiples of the cell's rheobase."""

    long_square_multiples: tuple = (-0.5, 0.5, 0.9, 1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0)
    long_square_s: tuple = (0.1, 1.0, 0.4)  # baseline, step, after
    ramp_top_multiple: float = 4.0
    ramp_s: tuple = (0.1, 4.0, 0.2)  # baseline, ramp, after
    noise_multiples: tuple = (1.0, 1.5, 2.5)
    noise_segment_s: float = 2.0
    noise_gap_s: float = 0.5
    noise_relative_std: float = 0.4
    noise_repeats: int = 3
    intrinsic_noise_relative_std: float = 0.15
    intrinsic_noise_tau_ms: float = 5.0
    sampling_rate_hz: float = 10000.0


def pink_noise(n_samples: int, sampling_rate_hz: float, rng: np.random.Generator,
               band_hz: tuple = (1.0, 100.0)) -> np.ndarray:
    """Zero-mean, unit-std noise with a 1/f power spectrum inside ``band_hz``."""
    freqs = np.fft.rfftfreq(n_samples, 1.0 / sampling_rate_hz)
    amplitude = np.where((freqs >= band_hz[0]) & (freqs <= band_hz[1]), 1.0 / np.sqrt(np.maximum(freqs, 1e-9)), 0.0)
    spectrum = amplitude * (rng.standard_normal(len(freqs)) + 1j * rng.standard_normal(len(freqs)))
    noise = np.fft.irfft(spectrum, n_samples)
    return (noise - noise.mean()) / noise.std()


def stimulus_currents(rheobase_pa: float, protocol: Protocol, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """``(stimulus name, current in pA at the protocol's sampling rate)`` for every sweep of a cell.

    Noise 1 and Noise 2 use different noise (drawn once each); their repeats share the current.
    """
    rate = protocol.sampling_rate_hz
    samples = lambda seconds: int(round(seconds * rate))  # noqa: E731 - a unit conversion
    sweeps = []
    before, step, after = protocol.long_square_s
    for multiple in protocol.long_square_multiples:
        current = np.zeros(samples(before + step + after))
        current[samples(before):samples(before + step)] = multiple * rheobase_pa
        sweeps.append(("Long Square", current))
    before, ramp, after = protocol.ramp_s
    current = np.zeros(samples(before + ramp + after))
    current[samples(before):samples(before + ramp)] = np.linspace(0, protocol.ramp_top_multiple * rheobase_pa,
                                                                  samples(ramp))
    sweeps.append(("Ramp", current))
    segment, gap = samples(protocol.noise_segment_s), samples(protocol.noise_gap_s)
    for name in ("Noise 1", "Noise 2"):
        pieces = [np.zeros(gap)]
        for multiple in protocol.noise_multiples:
            mean = multiple * rheobase_pa
            pieces += [mean * (1 + protocol.noise_relative_std * pink_noise(segment, rate, rng)), np.zeros(gap)]
        current = np.concatenate(pieces)
        sweeps += [(name, current)] * protocol.noise_repeats
    return sweeps


def ou_noise(shape: tuple, std: float, tau_ms: float, dt_ms: float, rng: np.random.Generator) -> np.ndarray:
    """Ornstein-Uhlenbeck noise (stationary std ``std``, time constant ``tau_ms``), along the last axis."""
    decay = np.exp(-dt_ms / tau_ms)
    kicks = rng.standard_normal(shape) * std * np.sqrt(1 - decay**2)
    noise = np.empty(shape)
    noise[..., 0] = rng.standard_normal(shape[:-1]) * std
    for t in range(1, shape[-1]):
        noise[..., t] = decay * noise[..., t - 1] + kicks[..., t]
    return noise


def simulate_adex(params: AdExParams, currents: np.ndarray, dt_ms: float) -> list[np.ndarray]:
    """Spike times (s) of one AdEx cell for each row of ``currents`` (sweeps, samples) in pA.

    Forward Euler, all sweeps at once; a spike is the crossing of ``peak_mv``.
    """
    p = params
    n_sweeps, n_samples = currents.shape
    v = np.full(n_sweeps, float(p.rest_mv))
    w = np.zeros(n_sweeps)
    spikes: list[list[float]] = [[] for _ in range(n_sweeps)]
    for t in range(n_samples):
        # Clip the exponent: past the peak the trajectory is reset anyway, so this only avoids overflow.
        upswing = p.leak_ns * p.slope_mv * np.exp(np.minimum((v - p.threshold_mv) / p.slope_mv, 30.0))
        dv = (-p.leak_ns * (v - p.rest_mv) + upswing - w + currents[:, t]) / p.capacitance_pf
        dw = (p.adapt_coupling_ns * (v - p.rest_mv) - w) / p.adapt_tau_ms
        v = v + dt_ms * dv
        w = w + dt_ms * dw
        fired = np.flatnonzero(v >= p.peak_mv)
        if fired.size:
            v[fired] = p.reset_mv
            w[fired] += p.adapt_jump_pa
            for i in fired:
                spikes[i].append((t + 1) * dt_ms / 1000.0)
    return [np.asarray(s) for s in spikes]


def simulate_adex_cell(params: AdExParams, protocol: Protocol = Protocol(), seed: int = 0) -> list[RawSweep]:
    """All sweeps of one AdEx cell, as a recording of it would give them."""
    rng = np.random.default_rng(seed)
    rheobase = params.rheobase_pa()
    stimuli = stimulus_currents(rheobase, protocol, rng)
    length = max(len(c) for _, c in stimuli)
    padded = np.zeros((len(stimuli), length))
    for i, (_, current) in enumerate(stimuli):
        padded[i, :len(current)] = current
    dt_ms = 1000.0 / protocol.sampling_rate_hz
    intrinsic = ou_noise(padded.shape, protocol.intrinsic_noise_relative_std * rheobase,
                         protocol.intrinsic_noise_tau_ms, dt_ms, rng)
    spike_times = simulate_adex(params, padded + intrinsic, dt_ms)
    return [RawSweep(i + 1, name, current, protocol.sampling_rate_hz, spikes[spikes < len(current) * dt_ms / 1000])
            for i, ((name, current), spikes) in enumerate(zip(stimuli, spike_times))]


def jittered(params: AdExParams, rng: np.random.Generator, relative: float = 0.1) -> AdExParams:
    """A cell-to-cell variant: capacitance, leak and adaptation scaled by up to +-``relative``."""
    scale = lambda: 1 + relative * rng.uniform(-1, 1)  # noqa: E731
    return replace(params, capacitance_pf=params.capacitance_pf * scale(), leak_ns=params.leak_ns * scale(),
                   adapt_tau_ms=params.adapt_tau_ms * scale(), adapt_jump_pa=params.adapt_jump_pa * scale())


def adex_population(n_cells: int, cell_types: list[str] | None = None, seed: int = 0) -> list[tuple[int, str, AdExParams]]:
    """``(cell_id, cell type, parameters)`` for ``n_cells`` cells cycling through ``cell_types``."""
    cell_types = cell_types or list(CELL_TYPES)
    unknown = [t for t in cell_types if t not in CELL_TYPES]
    if unknown:
        raise NeurodynError(f"unknown cell type(s) {unknown}: expected some of {list(CELL_TYPES)}")
    rng = np.random.default_rng(seed)
    return [(i + 1, cell_types[i % len(cell_types)], jittered(CELL_TYPES[cell_types[i % len(cell_types)]], rng))
            for i in range(n_cells)]


def simulate_gfr_cell(params: dict, rheobase_pa: float, protocol: Protocol = Protocol(sampling_rate_hz=1000.0),
                      seed: int = 0) -> list[RawSweep]:
    """Sweeps of a cell whose rate follows a known GFR (``get_params()`` dict); spikes are Poisson.

    The GFR runs at its own bin size on the per-bin mean current; spikes are drawn per sample
    (Poisson count with mean rate x sample length) from the piecewise-constant rate.
    """
    from neurodyn.gfr.model import GFR

    model = GFR.from_params(params)
    rng = np.random.default_rng(seed)
    stimuli = stimulus_currents(rheobase_pa, protocol, rng)
    sample_ms = 1000.0 / protocol.sampling_rate_hz
    sweeps = []
    for i, (name, current) in enumerate(stimuli):
        binned = bin_sweep(RawSweep(i + 1, name, current, protocol.sampling_rate_hz, np.empty(0)), model.bin_size)
        rate = model.predict(binned.current)
        per_sample = np.repeat(rate, int(round(model.bin_size / sample_ms)))
        counts = rng.poisson(per_sample * sample_ms)
        spike_times = np.repeat(np.arange(len(per_sample)) * sample_ms / 1000.0, counts)
        sweeps.append(RawSweep(i + 1, name, current[:len(per_sample)], protocol.sampling_rate_hz, spike_times))
    return sweeps


def simulate_dataset(n_cells: int, data_dir, cell_types: list[str] | None = None, seed: int = 0,
                     protocol: Protocol = Protocol(), progress: bool = True) -> list[int]:
    """Simulate AdEx cells and write them in the processed format plus ``{data_dir}/cell_ids.csv``.

    Returns the cell ids (1..n_cells); the cell type is recorded as the cre line.
    """
    from pathlib import Path

    from tqdm import tqdm

    from neurodyn.gfr.preprocess import process_cell, processed_path, write_cell_ids, write_processed

    if n_cells < 1:
        raise NeurodynError(f"n_cells must be >= 1, got {n_cells}")
    population = adex_population(n_cells, cell_types, seed)
    for cell_id, cell_type, params in tqdm(population, desc="simulating cells", disable=not progress):
        sweeps = simulate_adex_cell(params, protocol, seed=seed * 100003 + cell_id)
        write_processed(processed_path(data_dir, cell_id), process_cell(cell_id, sweeps, cre_line=cell_type))
    ids = [cell_id for cell_id, _, _ in population]
    write_cell_ids(Path(data_dir) / "cell_ids.csv", ids, {i: t for i, t, _ in population})
    return ids
