"""The LFADS sequential variational autoencoder.

Data flow for a batch ``(B, T, N)`` (encoder input, unobserved entries already zero-filled):
dropout -> IC encoder (BiGRU) -> IC posterior N(mean, std) -> sample -> generator initial state;
CI encoder (BiGRU, lagged) -> controller -> inferred inputs -> generator -> factors -> readout ->
observation-model parameters per neuron and time. Measured inputs ``ext_input`` ``(B, T, E)`` (e.g.
a stimulus; ``ext_input_dim`` E > 0) go to the generator only, beside the inferred inputs.
Held-out neurons and the last ``forward_bins`` bins of a trial (forward prediction) are zeroed at
the encoders' input (``encoder_mask``) but still generated and read out.

This module holds one model's weights, in the shapes and under the names its checkpoints carry;
the mathematics is ``lfads.stacked.StackedLfads``'s, shared with the PBT population, which sees the
weights as a worker axis of one.

A stitched model (``session_neurons`` with two or more sessions) adds a per-session read-in
before the encoders (``neurodyn.lfads.stitching``); each trial then comes with its session index.
"""

from __future__ import annotations

import torch
from torch import nn

from neurodyn.config import LfadsConfig
from neurodyn.errors import NeurodynError
from neurodyn.lfads.priors import AutoregressivePrior, InitialConditionPrior
from neurodyn.lfads.stacked import EncoderReading, LfadsOutput, StackedLfads, ic_std_from_log_var
from neurodyn.lfads.stitching import SessionReadin
from neurodyn.observation.base import ObservationModel


class BidirectionalEncoder(nn.Module):
    """The weights of a bidirectional GRU encoder: ``nn.GRU``'s and a trainable initial state ``(2, 1, H)``
    (forward, backward); run by ``StackedLfads._bidirectional``."""

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.gru = nn.GRU(input_dim, hidden_dim, batch_first=True, bidirectional=True)
        self.initial_state = nn.Parameter(torch.zeros(2, 1, hidden_dim))


class NormalisedLinear(nn.Module):
    """The factors' weight ``(F, G)``, its rows L2-normalised wherever it is used (``normalised_factor_weight``)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.normal_(self.weight, std=in_dim ** -0.5)


class Decoder(nn.Module):
    """The weights of the generator GRU (input ``[co_t, ext_t]``: ``co_dim`` inferred then ``ext_input_dim``
    measured inputs; a generator without inputs still gets one, a constant zero), the factors, and with
    a controller its GRU (input ``[ci_t, factors_{t-1}]``), initial state and output layer (mean and
    log variance of the inferred inputs). States are clipped to +-``cell_clip_value`` after each step."""

    def __init__(self, gen_dim: int, factors_dim: int, co_dim: int, con_dim: int, ci_dim: int, ext_input_dim: int):
        super().__init__()
        self.generator = nn.GRU(max(co_dim + ext_input_dim, 1), gen_dim, batch_first=True)
        self.factors = NormalisedLinear(gen_dim, factors_dim)
        if co_dim > 0:
            self.controller = nn.GRU(ci_dim + factors_dim, con_dim, batch_first=True)
            self.controller_initial_state = nn.Parameter(torch.zeros(1, con_dim))
            self.controller_output = nn.Linear(con_dim, 2 * co_dim)


class LFADS(StackedLfads):
    """LFADS for ``num_neurons`` neurons with the given observation model; sizes from ``config``."""

    def __init__(self, config: LfadsConfig, num_neurons: int, observation: ObservationModel):
        super().__init__()
        self.num_neurons = num_neurons
        self.ic_dim = config.ic_dim
        self.co_dim = config.controller_dim
        self.ext_input_dim = config.ext_input_dim
        self.ci_lag = config.ci_lag
        self.ic_prior_var = config.ic_prior_var
        self.ic_post_var_min = config.ic_post_var_min
        self.co_prior_df = float(config.co_prior_df) if config.co_prior == "student_t" else None
        self.learnable_ic_prior = config.ic_prior == "learnable"
        self.dropout_p = 1.0 - config.keep_prob
        self.cell_clip_value = config.cell_clip_value
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
        if self.learnable_ic_prior:
            self.ic_prior = InitialConditionPrior(config.ic_dim, config.ic_prior_var)
        if config.uses_controller:
            self.ci_encoder = BidirectionalEncoder(encoder_input_dim, config.ci_enc_dim)
            self.co_prior = AutoregressivePrior(config.controller_dim, config.co_prior_tau, config.co_prior_nvar)
        self.decoder = Decoder(gen_dim=config.gen_dim, factors_dim=config.factors_dim, co_dim=config.controller_dim,
                               con_dim=config.con_dim, ci_dim=2 * config.ci_enc_dim, ext_input_dim=config.ext_input_dim)
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
        self.dropout_p = 1.0 - keep_prob

    def _stacked(self, name: str) -> torch.Tensor:
        """The parameter or buffer ``name`` as a worker axis of one (a view)."""
        try:
            return self.get_parameter(name).unsqueeze(0)
        except AttributeError:
            return self.get_buffer(name).unsqueeze(0)

    def _noise(self, rng: torch.Generator | None, batch: int, num_steps: int, sample: bool,
               like: torch.Tensor):
        """This pass's random numbers (``StackedLfads.draw_noise``): dropout only in training mode."""
        dropout = self.training and self.dropout_p > 0.0
        if not (dropout or sample):
            return None
        return self.draw_noise([rng], [self.dropout_p] if dropout else None, batch, num_steps, sample, like)

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
        noise = self._noise(rng, batch, num_steps, sample_posteriors, encoder_input)
        override = None if ic_posterior_override is None else tuple(t.unsqueeze(0) for t in ic_posterior_override)
        output = self.stacked_forward(
            encoder_input.unsqueeze(0), sample_posteriors, _stacked_or_none(encoder_visible), noise,
            _stacked_or_none(ext_input), self._session(session), override, _stacked_or_none(controller_inputs_override))
        return output.worker(0)

    def encode(self, encoder_input: torch.Tensor, encoder_visible: torch.Tensor | None = None,
               session: torch.Tensor | None = None, rng: torch.Generator | None = None) -> EncoderReading:
        """Read the trials through both encoders once, without running the generator. Arguments as in
        ``forward``; the reading's parts can be handed back to ``forward`` as ``ic_posterior_override``
        and ``controller_inputs_override`` (at inference, where the encoders draw nothing at random,
        a trial read once serves all its posterior samples)."""
        batch, num_steps, _ = encoder_input.shape
        noise = self._noise(rng, batch, num_steps, False, encoder_input)
        return self.stacked_encode(encoder_input.unsqueeze(0), _stacked_or_none(encoder_visible),
                                   self._session(session), noise).worker(0)

    def _session(self, session: torch.Tensor | None) -> torch.Tensor | None:
        if not self.is_stitched:
            return None
        if session is None:
            raise NeurodynError("a stitched model needs each trial's session index")
        return session.unsqueeze(0)

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


def _stacked_or_none(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.unsqueeze(0)
