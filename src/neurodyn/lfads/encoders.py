"""The two bidirectional GRU encoders of LFADS: initial-condition (IC) and controller-input (CI)."""

from __future__ import annotations

import torch
from torch import nn


class BidirectionalEncoder(nn.Module):
    """A bidirectional GRU over the whole trial with a trainable initial state.

    ``forward(x)`` with x ``(B, T, N)`` returns the per-step outputs ``(B, T, 2H)`` and the final
    states of both directions concatenated ``(B, 2H)`` (forward at T-1, backward at 0).
    """

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.gru = nn.GRU(input_dim, hidden_dim, batch_first=True, bidirectional=True)
        self.initial_state = nn.Parameter(torch.zeros(2, 1, hidden_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h0 = self.initial_state.expand(2, x.shape[0], self.hidden_dim).contiguous()
        outputs, final = self.gru(x, h0)
        return outputs, torch.cat([final[0], final[1]], dim=-1)


def lag_controller_inputs(outputs: torch.Tensor, lag: int) -> torch.Tensor:
    """Lag the CI encoder outputs ``(B, T, 2H)`` so step t sees the forward pass up to t - lag and
    the backward pass from t + lag; padded with zeros. The lag keeps the controller from seeing the
    very bin it is asked to explain."""
    if lag == 0:
        return outputs
    hidden = outputs.shape[-1] // 2
    forward, backward = outputs[..., :hidden], outputs[..., hidden:]
    pad = torch.zeros_like(forward[:, :lag])
    forward = torch.cat([pad, forward[:, :-lag]], dim=1)
    backward = torch.cat([backward[:, lag:], pad], dim=1)
    return torch.cat([forward, backward], dim=-1)
