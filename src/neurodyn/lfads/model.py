"""The LFADS sequential variational autoencoder.

Data flow for a batch ``(B, T, N)`` (encoder input, unobserved entries already zero-filled):
dropout -> IC encoder (BiGRU) -> IC posterior N(mean, std) -> sample -> generator initial state;
CI encoder (BiGRU, lagged) -> controller -> inferred inputs -> generator -> factors -> readout ->
observation-model parameters per neuron and time. Measured inputs ``ext_input`` ``(B, T, E)`` (e.g.
a stimulus; ``ext_input_dim`` E > 0) go to the generator only, beside the inferred inputs.
Held-out neurons and the last ``forward_bins`` bins of a trial (forward prediction) are zeroed at
the encoders' input (``encoder_mask``) but still generated and read out.

A stitched model (``session_neurons`` with two or more sessions) adds a per-session read-in
before the encoders (``neurodyn.lfads.stitching``); each trial then comes with its session index.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from neurodyn.config import LfadsConfig
from neurodyn.errors import NeurodynError
from neurodyn.lfads.decoder import Decoder
from neurodyn.lfads.dropout import Dropout
from neurodyn.lfads.encoders import BidirectionalEncoder, lag_controller_inputs
from neurodyn.lfads.priors import AutoregressivePrior, kl_diagonal_to_isotropic
from neurodyn.lfads.stitching import SessionReadin
from neurodyn.observation.base import ObservationModel


@dataclass
class LfadsOutput:
    """Everything one forward pass produces.

    readout ``(B, T, N, P)`` (P = observation parameters per neuron); factors ``(B, T, F)``;
    ic_mean/ic_std ``(B, ic_dim)``; co_* ``(B, T, co_dim)`` or None without a controller;
    gen_states ``(B, T, gen_dim)`` the generator states (detached, for outputs).
    """

    readout: torch.Tensor
    factors: torch.Tensor
    ic_mean: torch.Tensor
    ic_std: torch.Tensor
    co_mean: torch.Tensor | None
    co_std: torch.Tensor | None
    co_sample: torch.Tensor | None
    gen_states: torch.Tensor | None = None


@dataclass
class EncoderReading:
    """What the encoders make of a batch of trials: the IC posterior ``ic_mean``/``ic_std``
    ``(B, ic_dim)`` and what the controller reads at each step, the CI encoder's outputs lagged by
    ``ci_lag``, ``controller_inputs`` ``(B, T, 2 * ci_enc_dim)`` (None without a controller)."""

    ic_mean: torch.Tensor
    ic_std: torch.Tensor
    controller_inputs: torch.Tensor | None

    def repeat(self, times: int) -> EncoderReading:
        """The reading of the batch repeated ``times`` times along the trials (as ``Tensor.repeat``:
        the whole batch, then the whole batch again), e.g. for several posterior samples per trial."""
        return EncoderReading(self.ic_mean.repeat(times, 1), self.ic_std.repeat(times, 1),
                              None if self.controller_inputs is None else self.controller_inputs.repeat(times, 1, 1))


def ic_std_from_log_var(log_var: torch.Tensor, var_floor: float) -> torch.Tensor:
    """The IC posterior's standard deviation from the encoder's log variance, with ``var_floor``
    (``ic_post_var_min``) added so a posterior never collapses to a point (``LFADS`` and its stacked
    population share it)."""
    return torch.sqrt(torch.exp(log_var) + var_floor)


def hide_from_encoders(neuron_mask: torch.Tensor, num_steps: int, forward_bins: int) -> torch.Tensor:
    """What the encoders may see of a trial of ``num_steps`` bins: ``neuron_mask`` ``(..., N)`` (0 for
    held-out neurons) repeated over the bins, ``(..., num_steps, N)``, with the last ``forward_bins``
    bins 0 (the forward-prediction window: the generator runs through it, no encoder sees it)."""
    if forward_bins >= num_steps:
        raise NeurodynError(f"forward_bins {forward_bins} is not shorter than the trials ({num_steps} bins): "
                            "the encoders would see nothing")
    in_window = torch.arange(num_steps, device=neuron_mask.device) < num_steps - forward_bins
    return neuron_mask.unsqueeze(-2) * in_window.to(neuron_mask.dtype).unsqueeze(-1)


class LFADS(nn.Module):
    """LFADS for ``num_neurons`` neurons with the given observation model; sizes from ``config``."""

    def __init__(self, config: LfadsConfig, num_neurons: int, observation: ObservationModel):
        super().__init__()
        self.num_neurons = num_neurons
        self.ic_dim = config.ic_dim
        self.co_dim = config.co_dim
        self.ext_input_dim = config.ext_input_dim
        self.ci_lag = config.ci_lag
        self.ic_prior_var = config.ic_prior_var
        self.ic_post_var_min = config.ic_post_var_min
        self.dropout = Dropout(1.0 - config.keep_prob)
        # 'auto' is resolved from the data by the trainer; a model built without data takes it as off.
        self.mask_as_input = config.mask_as_input is True
        encoder_input_dim = num_neurons * (2 if self.mask_as_input else 1)
        self.session_neurons = list(config.session_neurons)
        self.readin = None
        if self.is_stitched:
            if sum(self.session_neurons) != num_neurons:
                raise NeurodynError(f"session_neurons {self.session_neurons} add up to {sum(self.session_neurons)} "
                                    f"neurons, not the model's {num_neurons}")
            readin_dim = config.factors_dim if config.readin_dim == "auto" else int(config.readin_dim)
            self.readin = SessionReadin(encoder_input_dim, readin_dim, len(self.session_neurons))
            encoder_input_dim = readin_dim
        self.ic_encoder = BidirectionalEncoder(encoder_input_dim, config.ic_enc_dim)
        self.ic_posterior = nn.Linear(2 * config.ic_enc_dim, 2 * config.ic_dim)
        self.ic_to_generator = nn.Linear(config.ic_dim, config.gen_dim)
        if config.uses_controller:
            self.ci_encoder = BidirectionalEncoder(encoder_input_dim, config.ci_enc_dim)
            self.co_prior = AutoregressivePrior(config.co_dim, config.co_prior_tau, config.co_prior_nvar)
        self.decoder = Decoder(
            gen_dim=config.gen_dim, factors_dim=config.factors_dim, co_dim=config.co_dim,
            con_dim=config.con_dim, ci_dim=2 * config.ci_enc_dim, cell_clip_value=config.cell_clip_value,
            dropout=self.dropout, ext_input_dim=config.ext_input_dim,
        )
        self.observation = observation
        self.readout = nn.Linear(config.factors_dim, num_neurons * observation.params_per_neuron)
        # Held-out neurons (co-bps) are zeroed at the encoder input but still reconstructed; a buffer,
        # so checkpoints carry it.
        input_mask = torch.ones(num_neurons)
        if config.heldout_neurons:
            if max(config.heldout_neurons) >= num_neurons or min(config.heldout_neurons) < 0:
                raise NeurodynError(f"heldout_neurons {config.heldout_neurons} do not fit {num_neurons} neurons")
            input_mask[config.heldout_neurons] = 0.0
        self.register_buffer("encoder_input_mask", input_mask)
        # Forward prediction (fp-bps): the last forward_bins bins are hidden from the encoders too. A config
        # whose 'auto' no data file resolved ('neurodyn.train.run.read_model_dataset' does) means none.
        self.forward_bins = 0 if config.forward_bins == "auto" else int(config.forward_bins)

    @property
    def is_stitched(self) -> bool:
        """True for a model of several sessions (per-session read-in; each trial needs its session index)."""
        return len(self.session_neurons) > 1

    def set_keep_prob(self, keep_prob: float) -> None:
        """Change the dropout keep probability (PBT explores it between generations)."""
        self.dropout.p = 1.0 - keep_prob

    def forward(self, encoder_input: torch.Tensor, sample_posteriors: bool,
                encoder_visible: torch.Tensor | None = None,
                rng: torch.Generator | None = None, ext_input: torch.Tensor | None = None,
                session: torch.Tensor | None = None,
                ic_posterior_override: tuple[torch.Tensor, torch.Tensor] | None = None,
                controller_inputs_override: torch.Tensor | None = None) -> LfadsOutput:
        """encoder_input ``(B, T, N)`` zero-filled data; encoder_visible ``(B, T, N)`` 1 where it holds an
        observed value (used with ``mask_as_input``; default: everything visible). ``rng``
        drives every random draw (dropout, posterior samples); None = torch's global generator.
        ``ext_input`` ``(B, T, ext_input_dim)``: the measured inputs, fed to the generator at every
        step (required when ``ext_input_dim`` > 0, refused otherwise); never seen by the encoders.
        ``session`` ``(B,)`` int: each trial's session (required by a stitched model, ignored otherwise).
        ``ic_posterior_override``: ``(mean, std)`` ``(B, ic_dim)`` used in place of the IC encoder's posterior
        (a posterior refined per trial, see ``train.posterior_refinement``); the controller still reads
        the data through its own encoder, unless ``controller_inputs_override`` ``(B, T, 2 * ci_enc_dim)``
        hands in what ``encode`` read from these trials before (inference and the refinement, which
        keep the model fixed, read each trial once instead of at every pass)."""
        batch, num_steps, _ = encoder_input.shape
        self.check_ext_input(ext_input, batch, num_steps)
        needs_encoders = ic_posterior_override is None or (self.co_dim > 0 and controller_inputs_override is None)
        x = self._encoder_features(encoder_input, encoder_visible, session, rng) if needs_encoders else None
        ic_mean, ic_std = self._ic_posterior(x, rng) if ic_posterior_override is None else ic_posterior_override
        if sample_posteriors:
            noise = torch.randn(ic_mean.shape, generator=rng, device=ic_mean.device, dtype=ic_mean.dtype)
            ic = ic_mean + ic_std * noise
        else:
            ic = ic_mean
        gen_init = self.dropout(self.ic_to_generator(ic), rng)
        controller_inputs = None
        if self.co_dim > 0:
            controller_inputs = (self._lagged_ci_outputs(x) if controller_inputs_override is None
                                 else controller_inputs_override)
        decoded = self.decoder(gen_init, num_steps, controller_inputs, sample_posteriors, rng, ext_input)
        readout = self.readout(decoded.factors).view(batch, num_steps, self.num_neurons, -1)
        return LfadsOutput(readout, decoded.factors, ic_mean, ic_std,
                           decoded.co_mean, decoded.co_std, decoded.co_sample, decoded.gen_states)

    def encode(self, encoder_input: torch.Tensor, encoder_visible: torch.Tensor | None = None,
               session: torch.Tensor | None = None, rng: torch.Generator | None = None) -> EncoderReading:
        """Read the trials through both encoders once, without running the generator. Arguments as in
        ``forward``; the reading's parts can be handed back to ``forward`` as ``ic_posterior_override``
        and ``controller_inputs_override`` (at inference, where the encoders draw nothing at random,
        a trial read once serves all its posterior samples)."""
        x = self._encoder_features(encoder_input, encoder_visible, session, rng)
        ic_mean, ic_std = self._ic_posterior(x, rng)
        return EncoderReading(ic_mean, ic_std, self._lagged_ci_outputs(x) if self.co_dim > 0 else None)

    def _ic_posterior(self, x: torch.Tensor, rng: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        _, ic_final = self.ic_encoder(x)
        ic_mean, ic_logvar = self.ic_posterior(self.dropout(ic_final, rng)).chunk(2, dim=-1)
        return ic_mean, self.ic_std_of(ic_logvar)

    def _encoder_features(self, encoder_input: torch.Tensor, encoder_visible: torch.Tensor | None,
                          session: torch.Tensor | None, rng: torch.Generator | None) -> torch.Tensor:
        """What both encoders read, ``(B, T, features)``: the data with held-out neurons and forward bins
        hidden, dropout, the visibility mask when ``mask_as_input``, a stitched model's read-in."""
        mask = self.encoder_mask(encoder_input.shape[1])
        x = self.dropout(encoder_input * mask, rng)
        if self.mask_as_input:
            visible = torch.ones_like(encoder_input) if encoder_visible is None else encoder_visible
            x = torch.cat([x, visible * mask], dim=-1)
        if self.readin is not None:
            if session is None:
                raise NeurodynError("a stitched model needs each trial's session index")
            x = self.readin(x, session)
        return x

    def _lagged_ci_outputs(self, x: torch.Tensor) -> torch.Tensor:
        ci_outputs, _ = self.ci_encoder(x)
        return lag_controller_inputs(ci_outputs, self.ci_lag)

    def encoder_mask(self, num_steps: int) -> torch.Tensor:
        """``(num_steps, N)``: 1 where the encoders may see the data, 0 for held-out neurons and for the
        last ``forward_bins`` bins (see ``hide_from_encoders``)."""
        return hide_from_encoders(self.encoder_input_mask, num_steps, self.forward_bins)

    def ic_std_of(self, log_var: torch.Tensor) -> torch.Tensor:
        """The IC posterior's standard deviation from its log variance: ``ic_post_var_min`` is added as a
        floor, so a posterior never collapses to a point."""
        return ic_std_from_log_var(log_var, self.ic_post_var_min)

    def ic_log_var_of(self, std: torch.Tensor) -> torch.Tensor:
        """The log variance ``ic_std_of`` maps to ``std`` (std at the floor gives a very negative value)."""
        return torch.log((std ** 2 - self.ic_post_var_min).clamp_min(1e-12))

    def evidence_mask(self, observed: torch.Tensor) -> torch.Tensor:
        """``observed`` ``(B, T, N)`` (1 = sampled) without the entries that cannot be evidence about a
        trial's latent state: held-out neurons (co-bps) and forward-prediction bins (fp-bps) are never
        encoder input, so inference (empirical Bayes, posterior refinement) does not count them."""
        return observed * self.encoder_mask(observed.shape[1])

    def check_ext_input(self, ext_input: torch.Tensor | None, batch: int, num_steps: int) -> None:
        """Raise NeurodynError unless ``ext_input`` is ``(batch, num_steps, ext_input_dim)`` (None when 0)."""
        expected = (batch, num_steps, self.ext_input_dim)
        if self.ext_input_dim == 0:
            if ext_input is not None:
                raise NeurodynError(f"the model was built without measured inputs (ext_input_dim 0) but got "
                                    f"ext_input of shape {tuple(ext_input.shape)}")
        elif ext_input is None:
            raise NeurodynError(f"the model takes measured inputs: ext_input {expected} = "
                                "(trials, num_samples, ext_input_dim) is missing")
        elif tuple(ext_input.shape) != expected:
            raise NeurodynError(f"ext_input has shape {tuple(ext_input.shape)}; expected {expected} = "
                                "(trials, num_samples, ext_input_dim)")

    def kl_ic(self, output: LfadsOutput) -> torch.Tensor:
        """KL of the IC posterior to its prior, per trial ``(B,)``."""
        return kl_diagonal_to_isotropic(output.ic_mean, output.ic_std, self.ic_prior_var)

    def kl_co(self, output: LfadsOutput) -> torch.Tensor:
        """One-sample KL of the inferred inputs to the AR(1) prior, per trial ``(B,)`` (zeros if autonomous)."""
        if self.co_dim == 0:
            return output.ic_mean.new_zeros(output.ic_mean.shape[0])
        return self.co_prior.kl_one_sample(output.co_mean, output.co_std, output.co_sample)

    def recurrent_l2(self, l2_gen_scale: float, l2_con_scale: float) -> torch.Tensor:
        """sum_k scale_k * 0.5 * ||W_k||^2 / (number of penalised recurrent weights), W_k = recurrent kernels."""
        terms = [(self.decoder.generator.weight_hh_l0, l2_gen_scale)]
        if self.co_dim > 0:
            terms.append((self.decoder.controller.weight_hh_l0, l2_con_scale))
        terms = [(weight, scale) for weight, scale in terms if scale > 0]
        if not terms:
            return self.readout.weight.new_zeros(())
        total = sum(scale * 0.5 * weight.pow(2).sum() for weight, scale in terms)
        return total / sum(weight.numel() for weight, _ in terms)
