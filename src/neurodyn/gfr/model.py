"""The GFR (generalised firing-rate) neuron and its polynomial activation.

Parameter convention (the one of the published code and dataset, kept so that its parameters
reproduce its predictions exactly). With bin size ``dt`` in ms, current ``I`` in pA and rate ``f``
in spikes/ms, each of the ``n`` timescales steps as

    h_t^(i) = (1 - lambda_i) h_{t-1}^(i) + a_i I_t + 1000 b_i f_{t-1}
    f_t     = g(mean_i h_t^(i))

which is the seed's ``h_t = (1 - lambda) h_{t-dt} + dt alpha I_t + dt beta f_{t-dt}`` with
``alpha_i = a_i / dt`` and ``beta_i = 1000 b_i / dt`` (``1000 f`` is the rate in Hz).

All modules here are batched over independent neurons: parameters carry a leading ``neurons`` axis
so that many cells (or many restarts of one cell) run in one time loop.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from neurodyn.device import resolve_device
from neurodyn.errors import NeurodynError

#: Time constants (ms) of the fixed decays; a bin size keeps those at least as long as itself.
TIMESCALES_MS = (10, 20, 50, 100, 200, 500, 1000, 2000)
ALLOWED_BIN_SIZES = (10, 20, 50, 100)
ALLOWED_ACTIVATION_BIN_SIZES = (20, 100)
#: The published feedback acts on the rate in Hz: ``1000 * f`` with ``f`` in spikes/ms.
FEEDBACK_SCALE = 1000.0


def check_bin_size(bin_size: int, allowed: Sequence[int] = ALLOWED_BIN_SIZES, what: str = "bin size") -> int:
    """Return ``bin_size`` as an int, or raise a NeurodynError naming the allowed values."""
    if isinstance(bin_size, bool) or not isinstance(bin_size, (int, np.integer, float)) or bin_size not in allowed:
        raise NeurodynError(f"unknown {what} {bin_size!r} ms: expected one of {', '.join(map(str, allowed))}")
    return int(bin_size)


def decay_rates(bin_size: int) -> np.ndarray:
    """Decay rates ``lambda`` for a bin size (ms): ``[1] + [1 - exp(-dt / tau) for tau >= dt]``.

    The leading 1 is a memory-less timescale (the current bin only). Shape ``(n,)`` with
    n = 9, 8, 7, 6 for dt = 10, 20, 50, 100 ms.
    """
    dt = check_bin_size(bin_size)
    return np.array([1.0] + [1.0 - math.exp(-dt / tau) for tau in TIMESCALES_MS if tau >= dt])


class PolynomialActivation(nn.Module):
    """``g(x) = gamma * relu(tanh(sum_k a_k^2 ((x - b) / sigma)^k))`` for a batch of neurons.

    Trainable: ``poly_coeff`` (neurons, degree + 1) and ``threshold`` b (neurons,) in pA.
    Fixed buffers: ``max_current`` sigma (pA) and ``max_firing_rate`` gamma (spikes/ms).
    ``bin_size`` is the activation bin size (ms) the function was fitted at.
    """

    def __init__(self, n_neurons: int = 1, degree: int = 1, bin_size: int = 20):
        super().__init__()
        if degree < 0:
            raise NeurodynError(f"polynomial degree must be >= 0, got {degree}")
        self.bin_size = int(bin_size)
        self.poly_coeff = nn.Parameter(torch.ones(n_neurons, degree + 1))
        self.threshold = nn.Parameter(torch.zeros(n_neurons))
        self.register_buffer("max_current", torch.ones(n_neurons))
        self.register_buffer("max_firing_rate", torch.ones(n_neurons))

    @property
    def degree(self) -> int:
        return self.poly_coeff.shape[1] - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rates (spikes/ms) for input ``x`` of shape ``(..., neurons)``, same shape out."""
        z = (x - self.threshold) / self.max_current
        powers = z.unsqueeze(-1) ** torch.arange(self.degree + 1, device=z.device, dtype=z.dtype)
        poly = (powers * self.poly_coeff.square()).sum(-1)
        return self.max_firing_rate * torch.relu(torch.tanh(poly))


class GFR(nn.Module):
    """GFR neurons with ``n`` fixed decay timescales, batched over ``n_neurons`` independent neurons.

    Trainable ``alpha`` (stored as ``a``) and ``beta`` (``b``), both (neurons, n), plus the
    activation ``g``. Initialised as a pass-through: ``a = [n, 0, ...]``, ``b = 0`` so that
    ``mean_i h_t = I_t`` and ``f_t = g(I_t)``.
    """

    def __init__(self, n_neurons: int = 1, bin_size: int = 20, degree: int = 1,
                 activation_bin_size: int = 20, device: str = "cpu"):
        super().__init__()
        self.bin_size = check_bin_size(bin_size)
        ds = torch.as_tensor(decay_rates(self.bin_size), dtype=torch.float32)
        n = ds.numel()
        self.register_buffer("ds", ds)
        alpha = torch.zeros(n_neurons, n)
        alpha[:, 0] = n
        self.a = nn.Parameter(alpha)
        self.b = nn.Parameter(torch.zeros(n_neurons, n))
        self.g = PolynomialActivation(n_neurons, degree, activation_bin_size)
        self.to(resolve_device(device))

    @property
    def n_neurons(self) -> int:
        return self.a.shape[0]

    @property
    def n_timescales(self) -> int:
        return self.ds.numel()

    def initial_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero state ``(h, f)``: h (batch, neurons, n), previous rate f (batch, neurons)."""
        h = torch.zeros(batch, self.n_neurons, self.n_timescales, device=self.a.device)
        return h, torch.zeros(batch, self.n_neurons, device=self.a.device)

    def step(self, drive: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        """One bin. ``drive`` = ``a * I_t`` (batch, neurons, n); returns ``f_t`` and the new state."""
        h, f_prev = state
        h = (1.0 - self.ds) * h + drive + FEEDBACK_SCALE * self.b * f_prev.unsqueeze(-1)
        f = self.g(h.mean(-1))
        return f, (h, f)

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        """Rates (spikes/ms) for current (pA) of shape (batch, time, neurons); same shape out.

        The input drive ``a * I_t`` does not depend on the state, so it is computed for all bins in
        one product; only the feedback needs the loop over time.
        """
        drive = current.unsqueeze(-1) * self.a  # (batch, time, neurons, n)
        if current.shape[1] == 0:
            return current.new_zeros(current.shape)
        state = self.initial_state(current.shape[0])
        rates = []
        for t in range(current.shape[1]):
            f, state = self.step(drive[:, t], state)
            rates.append(f)
        return torch.stack(rates, dim=1)

    @torch.no_grad()
    def predict(self, current) -> np.ndarray:
        """Firing rate per bin (spikes/ms) for a 1-D array of mean current per bin (pA).

        Returns shape (time,) for a single neuron, (time, neurons) for a batch of neurons.
        """
        current = np.asarray(current, dtype=np.float32)
        if current.ndim != 1:
            raise NeurodynError(f"predict expects a 1-D array of mean current per bin, got shape {current.shape}")
        x = torch.as_tensor(current, device=self.a.device)[None, :, None].expand(1, -1, self.n_neurons)
        rates = self.forward(x)[0].cpu().numpy()
        return rates[:, 0] if self.n_neurons == 1 else rates

    @torch.no_grad()
    def get_params(self, neuron: int = 0) -> dict:
        """The seed's parameter structure for one neuron (plain Python lists and numbers)."""
        g = self.g
        return {
            "a": self.a[neuron].tolist(),
            "b": self.b[neuron].tolist(),
            "ds": self.ds.tolist(),
            "bin_size": self.bin_size,
            "g": {
                "max_current": float(g.max_current[neuron]),
                "max_firing_rate": float(g.max_firing_rate[neuron]),
                "poly_coeff": g.poly_coeff[neuron].tolist(),
                "b": float(g.threshold[neuron]),
                "bin_size": g.bin_size,
            },
        }

    @classmethod
    def from_params(cls, params: dict | Sequence[dict], device: str = "cpu", source: str = "params") -> "GFR":
        """Build a GFR from one ``get_params()`` dict or a list of them (one neuron each).

        All neurons of a batch must share the bin size, activation bin size and degree.
        """
        records = [params] if isinstance(params, dict) else list(params)
        if not records:
            raise NeurodynError(f"{source}: no neuron parameters given")
        try:
            first = records[0]
            model = cls(len(records), int(first["bin_size"]), len(first["g"]["poly_coeff"]) - 1,
                        int(first["g"]["bin_size"]), device="cpu")
            for key in ("bin_size",):
                if any(int(r[key]) != model.bin_size for r in records):
                    raise NeurodynError(f"{source}: all neurons must share one '{key}'")
            expected_ds = model.ds.numpy()
            with torch.no_grad():
                for i, r in enumerate(records):
                    ds = np.asarray(r["ds"], dtype=float)
                    if ds.shape != expected_ds.shape or not np.allclose(ds, expected_ds, atol=1e-6):
                        raise NeurodynError(f"{source}: neuron {i} has 'ds' {ds.tolist()}, expected the decay "
                                            f"table for bin size {model.bin_size} ms: {expected_ds.tolist()}")
                    g = r["g"]
                    if int(g["bin_size"]) != model.g.bin_size or len(g["poly_coeff"]) != model.g.degree + 1:
                        raise NeurodynError(f"{source}: neuron {i} has a different activation bin size or degree")
                    model.a[i] = torch.as_tensor(r["a"], dtype=torch.float32)
                    model.b[i] = torch.as_tensor(r["b"], dtype=torch.float32)
                    model.g.poly_coeff[i] = torch.as_tensor(g["poly_coeff"], dtype=torch.float32)
                    model.g.threshold[i] = float(g["b"])
                    model.g.max_current[i] = float(g["max_current"])
                    model.g.max_firing_rate[i] = float(g["max_firing_rate"])
        except NeurodynError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise NeurodynError(f"{source}: malformed GFR parameters ({type(error).__name__}: {error}); expected "
                                "keys a, b, ds, bin_size, g{max_current, max_firing_rate, poly_coeff, b, bin_size}")
        return model.to(resolve_device(device))
