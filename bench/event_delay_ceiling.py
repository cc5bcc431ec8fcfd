"""How far can perfect event rates go? Latent R^2 ceilings of sub-frame and frame-rate estimates; prints a table.

Noise-free: for each condition of the synthetic 2p design (``synth.lorenz_2p`` defaults, data
seed 0), the expected deconvolved event of every neuron at every time is the true spike rate
filtered by the event kernel ``w`` (``data.event_timing.event_kernel``: AR(1) deconvolution of a
GCaMP6f-like indicator, the linear part of OASIS). Two perfect estimators are scored with
``map_to_latents`` (ridge fit on 4 of 5 conditions, R^2 on the held-out fifth):

* sub-frame: the expected event rate at every sub-bin (what RADICaL estimates, at best);
* frame-rate: each neuron's expected event at its own scan time, one per frame, placed at the frame
  centre and interpolated linearly (what frame-rate AutoLFADS estimates, at best, as the
  RADICaL benchmark scores it).

Each is scored as stored and moved earlier by the event delay (``event_delay_bins: auto``: 4
sub-bins, 1 frame). As stored, the sub-frame ceiling falls below the frame-rate one at fast
dynamics: every sub-frame rate trails the latents by the same ~32 ms, while the frame-rate
estimate mixes neurons scanned early and late in the frame, whose different delays a ridge map
can combine. With the delay removed both ceilings rise to 0.97-1.0 and are nearly equal, so what
separates the models is how close each gets to its ceiling from noisy, sparse events.

    python bench/event_delay_ceiling.py [--speeds 4 6 8]     (~1 min)
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.signal import lfilter

from neurodyn.data.event_timing import event_delay_ms, event_kernel
from neurodyn.data.subframe import frames_to_subframes
from neurodyn.evaluate.metrics import map_to_latents
from neurodyn.synth.lorenz_2p import stratified_scan_steps
from neurodyn.synth.lorenz_spikes import lorenz_population

FRAME_RATE_HZ, K, STEPS_PER_SUBBIN, FRAMES, LEAD_FRAMES = 31.25, 4, 8, 32, 16
RISE_S, DECAY_S, CONDITIONS, NEURONS = 0.020, 0.300, 65, 100


def ceilings(speed: float, seed: int = 0) -> dict[str, float]:
    ic_rng, readout_rng, scan_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)[:3])
    frame_steps = K * STEPS_PER_SUBBIN
    step_s = 1.0 / (FRAME_RATE_HZ * frame_steps)
    total_steps = (LEAD_FRAMES + FRAMES) * frame_steps
    population = lorenz_population(ic_rng, readout_rng, CONDITIONS, total_steps, speed * step_s, 1, 3.0, 10.0,
                                   NEURONS, 2.0 * step_s, 60.0 * step_s)
    kernel = event_kernel(np.arange(0.0, 0.4, step_s) + step_s, 1.0 / FRAME_RATE_HZ, DECAY_S, RISE_S)
    expected_events = lfilter(kernel, [1.0], population.rates, axis=1)[:, LEAD_FRAMES * frame_steps:]
    latents = population.latents[:, LEAD_FRAMES * frame_steps:].reshape(CONDITIONS, FRAMES * K, STEPS_PER_SUBBIN, 3)
    latents = latents.mean(2)

    sub_frame = expected_events[:, STEPS_PER_SUBBIN // 2::STEPS_PER_SUBBIN]  # mid sub-bin
    scan = stratified_scan_steps(scan_rng, NEURONS, frame_steps)
    per_frame = np.stack([expected_events[:, scan[n]::frame_steps, n] for n in range(NEURONS)], -1)
    frame_rate = frames_to_subframes(per_frame, K)

    delay = round(event_delay_ms(1000.0 / FRAME_RATE_HZ, 1000.0 * DECAY_S, 1000.0 * RISE_S) * FRAME_RATE_HZ * K
                  / 1000.0)
    held_out = np.arange(CONDITIONS) % 5 == 0

    def score(rates: np.ndarray, shift: int) -> float:
        rates, truth = rates[:, shift:], latents[:, :latents.shape[1] - shift]
        return map_to_latents(rates[~held_out], truth[~held_out], rates[held_out], truth[held_out]).r2

    return {"sub-frame": score(sub_frame, 0), "frame-rate": score(frame_rate, 0),
            "sub-frame, delay removed": score(sub_frame, delay), "frame-rate, delay removed": score(frame_rate, K)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speeds", type=float, nargs="+", default=[4.0, 6.0, 8.0], help="Lorenz units per second")
    args = parser.parse_args()
    names = ["sub-frame", "frame-rate", "sub-frame, delay removed", "frame-rate, delay removed"]
    print(f"{'speed':>5} {'frames/cycle':>12} " + " ".join(f"{name:>26}" for name in names))
    for speed in args.speeds:
        table = ceilings(speed)
        frames_per_cycle = 0.75 / speed * FRAME_RATE_HZ
        print(f"{speed:>5g} {frames_per_cycle:>12.1f} " + " ".join(f"{table[name]:>26.3f}" for name in names))


if __name__ == "__main__":
    main()
