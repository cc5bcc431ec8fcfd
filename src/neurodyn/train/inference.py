"""Inference with a trained model: posterior sample-and-average, and the posterior-mean pass."""

from __future__ import annotations

import numpy as np
import torch

from neurodyn.lfads.augmentations import inference_masks
from neurodyn.lfads.model import LFADS


@torch.no_grad()
def infer(model: LFADS, data: np.ndarray, num_samples: int = 50, batch_size: int = 512,
          seed: int = 0) -> dict[str, np.ndarray]:
    """Rates, factors and observation parameters of ``data`` ``(trials, T, N)`` (NaN = unobserved).

    The posteriors (IC and inferred inputs) are sampled ``num_samples`` times with dropout off and the
    results averaged ("posterior sample and average"). Returns trials-first arrays:
    ``rates`` ``(trials, T, N)`` (expected value per bin), ``factors`` ``(trials, T, F)``, each named
    observation parameter ``(trials, T, N)``, and ``rates_posterior_mean`` from one pass at the
    posterior means.
    """
    model.eval()
    device = next(model.parameters()).device
    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        data_t = torch.as_tensor(np.asarray(data, dtype=np.float32), device=device)
        trials_per_pass = max(1, batch_size // num_samples)
        sums: dict[str, list[np.ndarray]] = {}
        for start in range(0, data_t.shape[0], trials_per_pass):
            masks = inference_masks(data_t[start:start + trials_per_pass])
            n = masks.encoder_input.shape[0]
            repeated = masks.encoder_input.repeat(num_samples, 1, 1)
            visible = masks.encoder_visible.repeat(num_samples, 1, 1)
            output = model(repeated, sample_posteriors=True, encoder_visible=visible)
            pieces = {"rates": model.observation.mean(output.readout), "factors": output.factors}
            pieces.update(model.observation.named_params(output.readout))
            for name, value in pieces.items():
                averaged = value.reshape(num_samples, n, *value.shape[1:]).mean(0)
                sums.setdefault(name, []).append(averaged.cpu().numpy())
            mean_output = model(masks.encoder_input, sample_posteriors=False, encoder_visible=masks.encoder_visible)
            sums.setdefault("rates_posterior_mean", []).append(
                model.observation.mean(mean_output.readout).cpu().numpy())
    return {name: np.concatenate(parts, axis=0) for name, parts in sums.items()}
