"""Real recordings shipped with neurodyn, for the examples and tests.

``mc_maze_small/``: the Neural Latents Benchmark's MC_Maze_Small tensors as nlb_tools makes them
(``mc_maze_small_train.h5``: 75 training-phase trials of 107 held-in and 35 held-out neurons, 140 + 40
forward bins of 5 ms, hand velocity; ``mc_maze_small_eval_input.h5``: the 25 evaluation trials'
held-in neurons). Macaque M1 and PMd during delayed centre-out maze reaching, monkey J, Churchland and
Kaufman (Shenoy lab); DANDI archive, dandiset 000140; licence CC-BY-4.0 (see NOTICE at the project's
root). Cite: M. Churchland and M. Kaufman (2022), "MC_Maze_Small: macaque primary motor and dorsal
premotor cortex spiking activity during delayed reaching", DANDI archive; and F. Pei, J. Ye et al.,
"Neural Latents Benchmark '21", NeurIPS Datasets and Benchmarks 2021.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def mc_maze_small_files() -> tuple[Path, Path]:
    """The shipped MC_Maze_Small tensor files: ``(train, eval_input)`` paths (see the module docstring)."""
    folder = Path(str(files("neurodyn.datasets") / "mc_maze_small"))
    return folder / "mc_maze_small_train.h5", folder / "mc_maze_small_eval_input.h5"
