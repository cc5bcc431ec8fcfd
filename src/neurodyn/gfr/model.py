"""The GFR (generalised firing-rate) neuron and its polynomial activation.

Parameter convention (the one of the published code and dataset, kept so that its parameters
reproduce its predictions exactly). With bin size ``dt`` in ms, current ``I`` in pA and rate ``f``
in spikes/ms, each of the ``n`` timescales steps as

    h_t^(i) = (1 - lambda_i) h_{t-1}^(i) + a_i I_t + 1000 b_i f_{t-1}
    f_t     = g(mean_i h_t^(i))

which is the seed's ``h_t = (1 - lambda) h_{t-dt} + dt alpha I_t + dt beta f_{t-dt}`` with
``alpha_i = a_i / dt`` and ``beta_i = 1000 b_i / dt`` (``1000 f`` is the rate in Hz).

Parameter dicts (``GFR.get_params()``, the ``params`` of a ``gfr_dataset.json`` record) use the
published layout: ``a``, ``b`` and ``g.poly_coeff`` nested once (shapes (1, n) and (1, degree + 1)),
``g.max_current``, ``g.max_firing_rate`` and ``g.b`` one-element lists. :func:`parse_params` also reads
the flat layout neurodyn wrote before (plain lists and numbers).

All modules here are batched over independent neurons: parameters carry a leading ``neurons`` axis
so that many cells (or many restarts of one cell) run in one time loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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
        """One neuron's parameters in the published layout (what the published ``get_params()`` returns).

        ``a`` and ``b`` are nested lists of shape (1, n), ``ds`` a list of n decay rates,
        ``g.poly_coeff`` a nested list of shape (1, degree + 1), ``g.max_current`` (pA),
        ``g.max_firing_rate`` (spikes/ms) and the threshold ``g.b`` (pA) one-element lists; the two bin
        sizes are ints (ms). :func:`parse_params` reads it back (and the flat form) as plain vectors.
        """
        g = self.g
        return {
            "a": [self.a[neuron].tolist()],
            "b": [self.b[neuron].tolist()],
            "ds": self.ds.tolist(),
            "bin_size": self.bin_size,
            "g": {
                "max_current": [float(g.max_current[neuron])],
                "max_firing_rate": [float(g.max_firing_rate[neuron])],
                "poly_coeff": [g.poly_coeff[neuron].tolist()],
                "b": [float(g.threshold[neuron])],
                "bin_size": g.bin_size,
            },
        }

    @classmethod
    def from_params(cls, params: dict | Sequence[dict], device: str = "cpu", source: str = "params") -> "GFR":
        """Build a GFR from one ``get_params()`` dict or a list of them (one neuron each).

        Each dict may be in the published layout or the flat one (see :func:`parse_params`). All
        neurons of a batch must share the bin size, activation bin size and degree. A malformed dict
        raises a NeurodynError naming ``source``, the neuron and the key.
        """
        single = isinstance(params, dict)
        records = [params] if single else list(params)
        if not records:
            raise NeurodynError(f"{source}: no neuron parameters given")
        cells = [parse_params(r, source if single else f"{source}: neuron {i}") for i, r in enumerate(records)]
        first = cells[0]
        for i, cell in enumerate(cells):
            for what, value, expected in (("bin_size", cell.bin_size, first.bin_size),
                                          ("g.bin_size", cell.activation_bin_size, first.activation_bin_size),
                                          ("degree", cell.degree, first.degree)):
                if value != expected:
                    raise NeurodynError(f"{source}: neuron {i} has {what} {value}, neuron 0 has {expected}; "
                                        "neurons of one batch must share it")
        model = cls(len(cells), first.bin_size, first.degree, first.activation_bin_size, device="cpu")

        def stacked(name: str) -> torch.Tensor:
            return torch.as_tensor(np.stack([getattr(c, name) for c in cells]), dtype=torch.float32)

        with torch.no_grad():
            model.a.copy_(stacked("a"))
            model.b.copy_(stacked("b"))
            model.g.poly_coeff.copy_(stacked("poly_coeff"))
            model.g.threshold.copy_(stacked("threshold"))
            model.g.max_current.copy_(stacked("max_current"))
            model.g.max_firing_rate.copy_(stacked("max_firing_rate"))
        return model.to(resolve_device(device))


@dataclass(frozen=True)
class CellParams:
    """One neuron's parameters as plain NumPy values, whatever layout they were read from.

    ``a``, ``b``, ``ds``: (n,); ``poly_coeff``: (degree + 1,); ``threshold`` (the activation's ``b``)
    and ``max_current`` in pA, ``max_firing_rate`` in spikes/ms; bin sizes in ms.
    """

    a: np.ndarray
    b: np.ndarray
    ds: np.ndarray
    bin_size: int
    poly_coeff: np.ndarray
    threshold: float
    max_current: float
    max_firing_rate: float
    activation_bin_size: int

    @property
    def degree(self) -> int:
        return len(self.poly_coeff) - 1

    def published(self) -> dict:
        """The published layout: nested (1, n) / (1, degree + 1) lists and one-element lists."""
        return {
            "a": [self.a.tolist()],
            "b": [self.b.tolist()],
            "ds": self.ds.tolist(),
            "bin_size": self.bin_size,
            "g": {"max_current": [self.max_current], "max_firing_rate": [self.max_firing_rate],
                  "poly_coeff": [self.poly_coeff.tolist()], "b": [self.threshold],
                  "bin_size": self.activation_bin_size},
        }

    def flat(self) -> dict:
        """The flat layout neurodyn wrote before: plain lists and numbers."""
        return {
            "a": self.a.tolist(), "b": self.b.tolist(), "ds": self.ds.tolist(), "bin_size": self.bin_size,
            "g": {"max_current": self.max_current, "max_firing_rate": self.max_firing_rate,
                  "poly_coeff": self.poly_coeff.tolist(), "b": self.threshold,
                  "bin_size": self.activation_bin_size},
        }


class _Reader:
    """Reads the keys of one parameter dict; every complaint is one line naming the source and the key."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, problem: str) -> NeurodynError:
        return NeurodynError(f"{self.source}: GFR parameter '{key}' {problem}")

    def get(self, mapping, key: str, path: str):
        if not isinstance(mapping, dict):
            parent = path.rpartition(".")[0] or "params"
            raise self.fail(parent, f"is {type(mapping).__name__}, expected an object with key '{key}'")
        if key not in mapping:
            raise self.fail(path, f"is missing; expected keys {PARAM_KEYS_TEXT}")
        return mapping[key]

    def numbers(self, value, key: str, expected: str) -> np.ndarray:
        try:
            array = np.asarray(value)
        except (ValueError, TypeError):  # ragged nesting
            raise self.fail(key, f"is not a rectangular list of numbers; expected {expected}")
        if array.dtype.kind not in "iuf":
            raise self.fail(key, f"holds non-numbers ({_short(value)}); expected {expected}")
        array = array.astype(float)
        if not np.all(np.isfinite(array)):
            raise self.fail(key, f"holds a non-finite value ({_short(value)}); expected {expected}")
        return array

    def vector(self, value, key: str, expected: str, length: int | None = None) -> np.ndarray:
        """A list of numbers, flat (k,) or nested once as the published (1, k)."""
        array = self.numbers(value, key, expected)
        if array.ndim == 2 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != 1 or array.size == 0 or (length is not None and array.size != length):
            raise self.fail(key, f"has shape {array.shape}; expected {expected}")
        return array

    def scalar(self, value, key: str) -> float:
        """A number, bare or as the published one-element list."""
        expected = "a number or a one-element list [x]"
        array = self.numbers(value, key, expected)
        if array.shape not in ((), (1,)):
            raise self.fail(key, f"has shape {array.shape}; expected {expected}")
        return float(array.reshape(()))

    def integer(self, value, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not float(value).is_integer() or value <= 0:
            raise self.fail(key, f"is {_short(value)}; expected a positive integer number of ms")
        return int(value)


PARAM_KEYS_TEXT = "a, b, ds, bin_size, g{max_current, max_firing_rate, poly_coeff, b, bin_size}"


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def parse_params(params: dict, source: str = "params") -> CellParams:
    """Read one neuron's parameter dict in the published layout or the flat one.

    Published layout (the published code's ``get_params()``, and records of its dataset):
    ``a``, ``b`` nested (1, n); ``g.poly_coeff`` nested (1, degree + 1); ``g.max_current``,
    ``g.max_firing_rate`` and ``g.b`` one-element lists. Flat layout (what neurodyn wrote before):
    ``a``, ``b``, ``poly_coeff`` flat lists and the three activation values bare numbers. Either form is
    accepted key by key. ``ds`` is a flat list of n decay rates that must be the table of ``bin_size``.

    Raises
    ------
    NeurodynError
        One line naming ``source`` (e.g. the cell) and the offending key, e.g.
        ``cell 5: GFR parameter 'g.poly_coeff' has shape (2, 3); expected ...``.
    """
    read = _Reader(source)
    if not isinstance(params, dict):
        raise read.fail("params", f"is {type(params).__name__}, expected an object with keys {PARAM_KEYS_TEXT}")
    bin_size = read.integer(read.get(params, "bin_size", "bin_size"), "bin_size")
    if bin_size not in ALLOWED_BIN_SIZES:
        raise read.fail("bin_size", f"is {bin_size}; expected one of {', '.join(map(str, ALLOWED_BIN_SIZES))} ms")
    expected_ds = decay_rates(bin_size)
    n = len(expected_ds)
    ds = read.vector(read.get(params, "ds", "ds"), "ds", f"the {n} decay rates of bin size {bin_size} ms")
    # float32 tables (the published get_params()) differ from float64 ones by ~1e-8
    if ds.shape != expected_ds.shape or np.max(np.abs(ds - expected_ds)) > 1e-6:
        raise read.fail("ds", f"is {_short(ds.tolist())}; expected the decay table for bin size {bin_size} ms: "
                              f"{_short(expected_ds.tolist())}")
    shape_text = f"{n} numbers, as [[...]] (published, shape (1, {n})) or a flat list"
    a = read.vector(read.get(params, "a", "a"), "a", shape_text, n)
    b = read.vector(read.get(params, "b", "b"), "b", shape_text, n)
    g = read.get(params, "g", "g")
    poly_coeff = read.vector(read.get(g, "poly_coeff", "g.poly_coeff"), "g.poly_coeff",
                             "[[a0, ..., a_degree]] (published, shape (1, degree + 1)) or a flat list")
    max_current = read.scalar(read.get(g, "max_current", "g.max_current"), "g.max_current")
    if max_current <= 0:
        raise read.fail("g.max_current", f"is {max_current}; expected sigma > 0 pA (the cell's max |current|)")
    return CellParams(
        a=a, b=b, ds=ds, bin_size=bin_size, poly_coeff=poly_coeff,
        threshold=read.scalar(read.get(g, "b", "g.b"), "g.b"),
        max_current=max_current,
        max_firing_rate=read.scalar(read.get(g, "max_firing_rate", "g.max_firing_rate"), "g.max_firing_rate"),
        activation_bin_size=read.integer(read.get(g, "bin_size", "g.bin_size"), "g.bin_size"),
    )
