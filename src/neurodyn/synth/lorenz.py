"""The Lorenz system: a chaotic 3-D flow used as the hidden dynamics of synthetic datasets.

    dx/dt = sigma (y - x),   dy/dt = x (rho - z) - y,   dz/dt = x y - beta z

Time is in the system's own (dimensionless) units; the datasets map it onto bins.
"""

from __future__ import annotations

import numpy as np

SIGMA = 10.0
RHO = 28.0
BETA = 8.0 / 3.0


def lorenz_derivative(states: np.ndarray, sigma: float = SIGMA, rho: float = RHO, beta: float = BETA) -> np.ndarray:
    """Time derivative of ``states`` ``(..., 3)`` (columns x, y, z); returns the same shape."""
    x, y, z = states[..., 0], states[..., 1], states[..., 2]
    return np.stack([sigma * (y - x), x * (rho - z) - y, x * y - beta * z], axis=-1)


def rk4_step(states: np.ndarray, dt: float, sigma: float = SIGMA, rho: float = RHO, beta: float = BETA) -> np.ndarray:
    """Advance ``states`` ``(n, 3)`` by one classical fourth-order Runge-Kutta step of size ``dt``."""
    k1 = lorenz_derivative(states, sigma, rho, beta)
    k2 = lorenz_derivative(states + 0.5 * dt * k1, sigma, rho, beta)
    k3 = lorenz_derivative(states + 0.5 * dt * k2, sigma, rho, beta)
    k4 = lorenz_derivative(states + dt * k3, sigma, rho, beta)
    return states + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def integrate_lorenz(
    initial_states: np.ndarray,
    num_steps: int,
    dt: float,
    sigma: float = SIGMA,
    rho: float = RHO,
    beta: float = BETA,
) -> np.ndarray:
    """Integrate many trajectories at once with fixed-step RK4.

    initial_states: ``(n, 3)``; returns ``(n, num_steps, 3)`` float64 where index 0 is the
    initial state and index ``k`` is the state at time ``k * dt``.
    """
    states = np.asarray(initial_states, dtype=np.float64)
    if states.ndim != 2 or states.shape[1] != 3:
        raise ValueError(f"initial_states must have shape (n, 3); got {states.shape}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1; got {num_steps}")
    trajectory = np.empty((states.shape[0], num_steps, 3))
    trajectory[:, 0] = states
    for step in range(1, num_steps):
        states = rk4_step(states, dt, sigma, rho, beta)
        trajectory[:, step] = states
    return trajectory


def fixed_points(sigma: float = SIGMA, rho: float = RHO, beta: float = BETA) -> np.ndarray:
    """The three equilibria ``(3, 3)``: the origin and the two centres of the wings (rho > 1)."""
    r = np.sqrt(beta * (rho - 1.0))
    return np.array([[0.0, 0.0, 0.0], [r, r, rho - 1.0], [-r, -r, rho - 1.0]])
