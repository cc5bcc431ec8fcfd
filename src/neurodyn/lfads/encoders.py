"""The two bidirectional GRU encoders of LFADS: initial-condition (IC) and controller-input (CI)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neurodyn.lfads.compiled_rnn import load_compiled_rnn, run_gru_sequence


class BidirectionalEncoder(nn.Module):
    """A bidirectional GRU over the whole trial with a trainable initial state.

    On CPU the GRU runs in the compiled kernel of ``compiled_rnn`` (same maths, nn.GRU's weights).
    ``forward(x)`` with x ``(B, T, N)`` returns the per-step outputs ``(B, T, 2H)`` and the final
    states of both directions concatenated ``(B, 2H)`` (forward at T-1, backward at 0).
    """

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.gru = nn.GRU(input_dim, hidden_dim, batch_first=True, bidirectional=True)
        self.initial_state = nn.Parameter(torch.zeros(2, 1, hidden_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h0 = self.initial_state.expand(2, x.shape[0], self.hidden_dim)
        kernel = load_compiled_rnn() if x.device.type == "cpu" else None
        if kernel is None:
            outputs, final = self.gru(x, h0.contiguous())
            return outputs, torch.cat([final[0], final[1]], dim=-1)
        # The same GRU (nn.GRU's weights) through the compiled kernel: both directions' input
        # projections in one matrix product, then one compiled loop per direction.
        gru = self.gru
        projection = F.linear(x.transpose(0, 1), torch.cat([gru.weight_ih_l0, gru.weight_ih_l0_reverse]),
                              torch.cat([gru.bias_ih_l0, gru.bias_ih_l0_reverse]))
        forward_projection, backward_projection = projection.chunk(2, dim=-1)
        forward = run_gru_sequence(kernel, forward_projection, h0[0], gru.weight_hh_l0, gru.bias_hh_l0)
        backward = run_gru_sequence(kernel, backward_projection, h0[1], gru.weight_hh_l0_reverse,
                                    gru.bias_hh_l0_reverse, reverse=True)
        outputs = torch.cat([forward, backward], dim=-1).transpose(0, 1)
        return outputs, torch.cat([forward[-1], backward[0]], dim=-1)


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
