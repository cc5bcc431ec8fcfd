// LFADS's recurrent loops, forward and hand-written backward, each in one compiled call.
//
// gru_sequence_*: a single-layer GRU over a sequence, from its precomputed input projection, in
//   either direction, states optionally clipped (nn.GRU for the encoders; the autonomous generator).
// decoder_*: the controller + generator loop, same mathematics as Decoder._controlled_python in
//   decoder.py (factors read from the dropped-out generator state feed the controller's next step).
//   The generator's input bias is either its constant bias (3G) or a per-step bias (T,B,3G) that
//   also holds the measured inputs' projection W_ext ext_t + b (computed outside the loop).
// Both use PyTorch's GRU gate order (r, z, n) and state clipping to +-clip after every update.
// PyTorch issues ~30 small operations per step and autograd twice that on the way back; here each
// step is a few matrix products plus one fused pass over the gate values, and each weight gradient
// is one matrix product over all steps.
//
// Layout: time-major. T steps, B trials, H units (C controller, G generator), F factors, K
// inferred inputs. Tensors are contiguous.

#include <torch/extension.h>

#include <cmath>
#include <vector>

namespace {

template <typename scalar_t>
inline scalar_t sigmoid(scalar_t x) {
  return scalar_t(1) / (scalar_t(1) + std::exp(-x));
}

// One GRU update from the input projection gx (B,3H) and hidden projection gh (B,3H), both with
// their biases. Writes gates (B,3H) = [r, z, n], gh_n (B,H), the unclipped new state (B,H) and the
// clipped new state (B,H).
template <typename scalar_t>
void gru_update_forward(const scalar_t* gx, const scalar_t* gh, const scalar_t* h, scalar_t* gates,
                        scalar_t* gh_n, scalar_t* unclipped, scalar_t* h_new, int64_t B, int64_t H,
                        scalar_t clip) {
  for (int64_t b = 0; b < B; ++b) {
    const scalar_t* gxb = gx + b * 3 * H;
    const scalar_t* ghb = gh + b * 3 * H;
    const scalar_t* hb = h + b * H;
    scalar_t* gb = gates + b * 3 * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const scalar_t r = sigmoid(gxb[j] + ghb[j]);
      const scalar_t z = sigmoid(gxb[H + j] + ghb[H + j]);
      const scalar_t hn = ghb[2 * H + j];
      const scalar_t n = std::tanh(gxb[2 * H + j] + r * hn);
      const scalar_t u = n + z * (hb[j] - n);
      gb[j] = r;
      gb[H + j] = z;
      gb[2 * H + j] = n;
      gh_n[b * H + j] = hn;
      unclipped[b * H + j] = u;
      h_new[b * H + j] = u < -clip ? -clip : (u > clip ? clip : u);
    }
  }
}

// Backward of gru_update_forward for the gradient dh_new (B,H) of the clipped new state. Writes the
// gradients of gx and gh (B,3H each) and overwrites dh_new with the direct part of the gradient of
// the previous state (the part through gh is added by the caller: dgh @ W_hh).
template <typename scalar_t>
void gru_update_backward(scalar_t* dh, const scalar_t* h_prev, const scalar_t* gates, const scalar_t* gh_n,
                         const scalar_t* unclipped, scalar_t* dgx, scalar_t* dgh, int64_t B, int64_t H,
                         scalar_t clip) {
  for (int64_t b = 0; b < B; ++b) {
    const scalar_t* gb = gates + b * 3 * H;
    scalar_t* dgxb = dgx + b * 3 * H;
    scalar_t* dghb = dgh + b * 3 * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const int64_t i = b * H + j;
      const scalar_t u = unclipped[i];
      const scalar_t du = (u >= -clip && u <= clip) ? dh[i] : scalar_t(0);  // clamp passes its bounds
      const scalar_t r = gb[j], z = gb[H + j], n = gb[2 * H + j];
      const scalar_t dn = du * (scalar_t(1) - z);
      const scalar_t dz = du * (h_prev[i] - n);
      const scalar_t da_n = dn * (scalar_t(1) - n * n);
      const scalar_t da_r = da_n * gh_n[i] * r * (scalar_t(1) - r);
      const scalar_t da_z = dz * z * (scalar_t(1) - z);
      dgxb[j] = da_r;
      dgxb[H + j] = da_z;
      dgxb[2 * H + j] = da_n;
      dghb[j] = da_r;
      dghb[H + j] = da_z;
      dghb[2 * H + j] = da_n * r;
      dh[i] = du * z;
    }
  }
}

template <typename scalar_t>
const scalar_t* ptr(const torch::Tensor& t) {
  return t.data_ptr<scalar_t>();
}
template <typename scalar_t>
scalar_t* mptr(torch::Tensor& t) {
  return t.data_ptr<scalar_t>();
}

// One GRU step on tensors: gh = b_hh + h W_hh^T into the scratch ``gh`` (B,3H), then the fused
// update into step t's slices of the saved buffers (views, hence taken by value).
template <typename scalar_t>
void gru_step_forward(const torch::Tensor& gx, const torch::Tensor& h, const torch::Tensor& w_hh_t,
                      const torch::Tensor& b_hh, torch::Tensor& gh, torch::Tensor gates, torch::Tensor gh_n,
                      torch::Tensor unclipped, torch::Tensor h_new, scalar_t clip) {
  torch::addmm_out(gh, b_hh, h, w_hh_t);
  gru_update_forward<scalar_t>(ptr<scalar_t>(gx), ptr<scalar_t>(gh), ptr<scalar_t>(h), mptr<scalar_t>(gates),
                               mptr<scalar_t>(gh_n), mptr<scalar_t>(unclipped), mptr<scalar_t>(h_new), h.size(0),
                               h.size(1), clip);
}

// Backward of gru_step_forward: ``dh`` (B,H) holds the gradient of the new state on entry and that
// of the previous state on exit; step t's dgx and dgh (B,3H) are written.
template <typename scalar_t>
void gru_step_backward(torch::Tensor& dh, const torch::Tensor& h_prev, const torch::Tensor& gates,
                       const torch::Tensor& gh_n, const torch::Tensor& unclipped, const torch::Tensor& w_hh,
                       torch::Tensor dgx, torch::Tensor dgh, scalar_t clip) {
  gru_update_backward<scalar_t>(mptr<scalar_t>(dh), ptr<scalar_t>(h_prev), ptr<scalar_t>(gates), ptr<scalar_t>(gh_n),
                                ptr<scalar_t>(unclipped), mptr<scalar_t>(dgx), mptr<scalar_t>(dgh), dh.size(0),
                                dh.size(1), clip);
  dh.addmm_(dgh, w_hh);
}

}  // namespace

// A GRU over T steps (reverse: from step T-1 down to 0) from the input projection x_projection
// (T,B,3H) = W_ih x_t + b_ih and the initial state h0 (B,H). Returns {states (T,B,H) in time order,
// gates (T,B,3H), gh_n (T,B,H), unclipped (T,B,H)}.
std::vector<torch::Tensor> gru_sequence_forward(torch::Tensor x_projection, torch::Tensor h0, torch::Tensor w_hh,
                                                torch::Tensor b_hh, double clip, bool reverse) {
  const int64_t T = x_projection.size(0), B = x_projection.size(1), H = w_hh.size(1);
  auto opts = x_projection.options();
  auto states = torch::empty({T, B, H}, opts), gates = torch::empty({T, B, 3 * H}, opts);
  auto gh_n = torch::empty({T, B, H}, opts), unclipped = torch::empty({T, B, H}, opts);
  auto gh = torch::empty({B, 3 * H}, opts);
  auto w_hh_t = w_hh.t();
  AT_DISPATCH_FLOATING_TYPES(x_projection.scalar_type(), "gru_sequence_forward", [&] {
    const scalar_t clip_value = static_cast<scalar_t>(clip);
    for (int64_t i = 0; i < T; ++i) {
      const int64_t t = reverse ? T - 1 - i : i;
      auto h = i == 0 ? h0 : states[reverse ? t + 1 : t - 1];
      gru_step_forward<scalar_t>(x_projection[t], h, w_hh_t, b_hh, gh, gates[t], gh_n[t], unclipped[t], states[t],
                                 clip_value);
    }
  });
  return {states, gates, gh_n, unclipped};
}

// Gradients of gru_sequence_forward given the gradient of its states (T,B,H). Returns
// {d x_projection (T,B,3H), d h0 (B,H), d w_hh (3H,H), d b_hh (3H)}.
std::vector<torch::Tensor> gru_sequence_backward(torch::Tensor grad_states, torch::Tensor h0, torch::Tensor w_hh,
                                                 torch::Tensor states, torch::Tensor gates, torch::Tensor gh_n,
                                                 torch::Tensor unclipped, double clip, bool reverse) {
  const int64_t T = grad_states.size(0), B = grad_states.size(1), H = w_hh.size(1);
  auto opts = grad_states.options();
  auto dgx = torch::empty({T, B, 3 * H}, opts), dgh = torch::empty({T, B, 3 * H}, opts);
  auto dh = torch::zeros({B, H}, opts);
  // previous[t] = the state step t started from.
  auto previous = reverse ? torch::cat({states.narrow(0, 1, T - 1), h0.unsqueeze(0)})
                          : torch::cat({h0.unsqueeze(0), states.narrow(0, 0, T - 1)});
  AT_DISPATCH_FLOATING_TYPES(grad_states.scalar_type(), "gru_sequence_backward", [&] {
    const scalar_t clip_value = static_cast<scalar_t>(clip);
    for (int64_t i = T - 1; i >= 0; --i) {
      const int64_t t = reverse ? T - 1 - i : i;
      dh.add_(grad_states[t]);
      gru_step_backward<scalar_t>(dh, previous[t], gates[t], gh_n[t], unclipped[t], w_hh, dgx[t], dgh[t], clip_value);
    }
  });
  auto dgh_rows = dgh.reshape({T * B, 3 * H});
  return {dgx, dh, torch::mm(dgh_rows.t(), previous.reshape({T * B, H})), dgh_rows.sum(0)};
}

// Returns {factors_all (T+1,B,F) [0 = factors of the initial state], co_mean, co_std, co (T,B,K),
//          con_states (T+1,B,C), gen_states (T+1,B,G), kept (T+1,B,G) = gen_states * keep,
//          con_gates (T,B,3C), con_gh_n, con_unclipped (T,B,C), gen_gates (T,B,3G), gen_gh_n,
//          gen_unclipped (T,B,G)}.
std::vector<torch::Tensor> decoder_forward(
    torch::Tensor ci_projection, torch::Tensor gen_init, torch::Tensor con_init, torch::Tensor noise,
    torch::Tensor keep, torch::Tensor w_factor_in, torch::Tensor w_con_hh, torch::Tensor b_con_hh,
    torch::Tensor w_co, torch::Tensor b_co, torch::Tensor w_gen_ih, torch::Tensor gen_input_bias,
    torch::Tensor w_gen_hh, torch::Tensor b_gen_hh, torch::Tensor w_factor, double clip) {
  const int64_t T = ci_projection.size(0), B = ci_projection.size(1);
  const int64_t C = w_con_hh.size(1), G = w_gen_hh.size(1), F = w_factor.size(0), K = noise.size(2);
  const bool per_step_bias = gen_input_bias.dim() == 3;
  auto opts = ci_projection.options();
  auto factors_all = torch::empty({T + 1, B, F}, opts);
  auto co_mean = torch::empty({T, B, K}, opts), co_std = torch::empty({T, B, K}, opts);
  auto co = torch::empty({T, B, K}, opts);
  auto con_states = torch::empty({T + 1, B, C}, opts), gen_states = torch::empty({T + 1, B, G}, opts);
  auto kept = torch::empty({T + 1, B, G}, opts);
  auto con_gates = torch::empty({T, B, 3 * C}, opts), con_gh_n = torch::empty({T, B, C}, opts);
  auto con_unclipped = torch::empty({T, B, C}, opts);
  auto gen_gates = torch::empty({T, B, 3 * G}, opts), gen_gh_n = torch::empty({T, B, G}, opts);
  auto gen_unclipped = torch::empty({T, B, G}, opts);
  auto gx_con = torch::empty({B, 3 * C}, opts), gh_con = torch::empty({B, 3 * C}, opts);
  auto gx_gen = torch::empty({B, 3 * G}, opts), gh_gen = torch::empty({B, 3 * G}, opts);
  auto co_out = torch::empty({B, 2 * K}, opts);
  auto w_factor_in_t = w_factor_in.t(), w_con_hh_t = w_con_hh.t(), w_co_t = w_co.t();
  auto w_gen_ih_t = w_gen_ih.t(), w_gen_hh_t = w_gen_hh.t(), w_factor_t = w_factor.t();

  con_states[0].copy_(con_init);
  gen_states[0].copy_(gen_init);
  auto kept_first = kept[0], factors_first = factors_all[0];
  torch::mul_out(kept_first, gen_states[0], keep[0]);
  torch::mm_out(factors_first, kept_first, w_factor_t);

  AT_DISPATCH_FLOATING_TYPES(ci_projection.scalar_type(), "decoder_forward", [&] {
    const scalar_t clip_value = static_cast<scalar_t>(clip);
    for (int64_t t = 0; t < T; ++t) {
      torch::addmm_out(gx_con, ci_projection[t], factors_all[t], w_factor_in_t);
      auto con_next = con_states[t + 1];
      gru_step_forward<scalar_t>(gx_con, con_states[t], w_con_hh_t, b_con_hh, gh_con, con_gates[t], con_gh_n[t],
                                 con_unclipped[t], con_next, clip_value);

      torch::addmm_out(co_out, b_co, con_next, w_co_t);
      auto mean_t = co_mean[t], std_t = co_std[t], co_t = co[t], noise_t = noise[t];
      const scalar_t* out = ptr<scalar_t>(co_out);
      const scalar_t* eps = ptr<scalar_t>(noise_t);
      scalar_t *m = mptr<scalar_t>(mean_t), *s = mptr<scalar_t>(std_t), *c = mptr<scalar_t>(co_t);
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t k = 0; k < K; ++k) {
          const scalar_t mean = out[b * 2 * K + k];
          const scalar_t sd = std::exp(scalar_t(0.5) * out[b * 2 * K + K + k]);
          m[b * K + k] = mean;
          s[b * K + k] = sd;
          c[b * K + k] = mean + sd * eps[b * K + k];
        }
      }

      torch::addmm_out(gx_gen, per_step_bias ? gen_input_bias[t] : gen_input_bias, co_t, w_gen_ih_t);
      auto gen_next = gen_states[t + 1];
      gru_step_forward<scalar_t>(gx_gen, gen_states[t], w_gen_hh_t, b_gen_hh, gh_gen, gen_gates[t], gen_gh_n[t],
                                 gen_unclipped[t], gen_next, clip_value);
      auto kept_next = kept[t + 1];
      torch::mul_out(kept_next, gen_next, keep[t + 1]);
      auto factors_next = factors_all[t + 1];
      torch::mm_out(factors_next, kept_next, w_factor_t);
    }
  });
  return {factors_all, co_mean, co_std, co, con_states, gen_states, kept,
          con_gates, con_gh_n, con_unclipped, gen_gates, gen_gh_n, gen_unclipped};
}

// Gradients of decoder_forward given the gradients of its outputs factors_all[1:] (T,B,F), co_mean,
// co_std and co (T,B,K). Returns {d ci_projection, d gen_init, d con_init, d w_factor_in, d w_con_hh,
// d b_con_hh, d w_co, d b_co, d w_gen_ih, d gen_input_bias, d w_gen_hh, d b_gen_hh, d w_factor};
// d gen_input_bias is (T,B,3G) when per_step_bias (the forward's bias was per step), else (3G).
std::vector<torch::Tensor> decoder_backward(
    torch::Tensor grad_factors, torch::Tensor grad_co_mean, torch::Tensor grad_co_std, torch::Tensor grad_co,
    torch::Tensor noise, torch::Tensor keep, torch::Tensor w_factor_in, torch::Tensor w_con_hh,
    torch::Tensor w_co, torch::Tensor w_gen_ih, torch::Tensor w_gen_hh, torch::Tensor w_factor,
    torch::Tensor factors_all, torch::Tensor co_std, torch::Tensor co, torch::Tensor con_states,
    torch::Tensor gen_states, torch::Tensor kept, torch::Tensor con_gates, torch::Tensor con_gh_n,
    torch::Tensor con_unclipped, torch::Tensor gen_gates, torch::Tensor gen_gh_n, torch::Tensor gen_unclipped,
    double clip, bool per_step_bias) {
  const int64_t T = grad_factors.size(0), B = grad_factors.size(1);
  const int64_t C = w_con_hh.size(1), G = w_gen_hh.size(1), F = w_factor.size(0), K = noise.size(2);
  auto opts = grad_factors.options();
  auto dgx_con = torch::empty({T, B, 3 * C}, opts), dgh_con = torch::empty({T, B, 3 * C}, opts);
  auto dgx_gen = torch::empty({T, B, 3 * G}, opts), dgh_gen = torch::empty({T, B, 3 * G}, opts);
  auto dco_out = torch::empty({T, B, 2 * K}, opts);
  auto dfactors = torch::empty({T + 1, B, F}, opts);
  auto dgen = torch::zeros({B, G}, opts), dcon = torch::zeros({B, C}, opts);
  auto dkept = torch::empty({B, G}, opts), dco = torch::empty({B, K}, opts);

  AT_DISPATCH_FLOATING_TYPES(grad_factors.scalar_type(), "decoder_backward", [&] {
    const scalar_t clip_value = static_cast<scalar_t>(clip);
    for (int64_t t = T - 1; t >= 0; --t) {
      // factors_all[t+1] feeds the output and the controller at step t+1.
      auto df = dfactors[t + 1];
      if (t + 1 < T) {
        torch::addmm_out(df, grad_factors[t], dgx_con[t + 1], w_factor_in);
      } else {
        df.copy_(grad_factors[t]);
      }
      torch::mm_out(dkept, df, w_factor);
      dgen.addcmul_(dkept, keep[t + 1]);

      auto dgx_gen_t = dgx_gen[t];
      gru_step_backward<scalar_t>(dgen, gen_states[t], gen_gates[t], gen_gh_n[t], gen_unclipped[t], w_gen_hh, dgx_gen_t,
                                  dgh_gen[t], clip_value);

      torch::addmm_out(dco, grad_co[t], dgx_gen_t, w_gen_ih);
      const scalar_t* dc = ptr<scalar_t>(dco);
      const scalar_t* gm = ptr<scalar_t>(grad_co_mean[t]);
      const scalar_t* gs = ptr<scalar_t>(grad_co_std[t]);
      const scalar_t* eps = ptr<scalar_t>(noise[t]);
      const scalar_t* sd = ptr<scalar_t>(co_std[t]);
      auto dco_out_t = dco_out[t];
      scalar_t* dout = mptr<scalar_t>(dco_out_t);
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t k = 0; k < K; ++k) {
          const int64_t i = b * K + k;
          dout[b * 2 * K + k] = dc[i] + gm[i];
          dout[b * 2 * K + K + k] = (dc[i] * eps[i] + gs[i]) * scalar_t(0.5) * sd[i];
        }
      }
      dcon.addmm_(dco_out_t, w_co);

      gru_step_backward<scalar_t>(dcon, con_states[t], con_gates[t], con_gh_n[t], con_unclipped[t], w_con_hh,
                                  dgx_con[t], dgh_con[t], clip_value);
    }
  });
  // The initial state's factors feed the controller at step 0.
  auto dfactors_first = dfactors[0];
  torch::mm_out(dfactors_first, dgx_con[0], w_factor_in);
  torch::mm_out(dkept, dfactors_first, w_factor);
  dgen.addcmul_(dkept, keep[0]);

  auto rows = [](const torch::Tensor& x) { return x.reshape({-1, x.size(-1)}); };
  auto previous = [](const torch::Tensor& states) { return states.narrow(0, 0, states.size(0) - 1); };
  auto next = [](const torch::Tensor& states) { return states.narrow(0, 1, states.size(0) - 1); };
  auto dw_factor_in = torch::mm(rows(dgx_con).t(), rows(previous(factors_all)));
  auto dw_con_hh = torch::mm(rows(dgh_con).t(), rows(previous(con_states)));
  auto db_con_hh = rows(dgh_con).sum(0);
  auto dw_co = torch::mm(rows(dco_out).t(), rows(next(con_states)));
  auto db_co = rows(dco_out).sum(0);
  auto dw_gen_ih = torch::mm(rows(dgx_gen).t(), rows(co));
  // A per-step bias gets each step's gradient: that of the generator's input projection itself.
  auto d_gen_input_bias = per_step_bias ? dgx_gen : rows(dgx_gen).sum(0);
  auto dw_gen_hh = torch::mm(rows(dgh_gen).t(), rows(previous(gen_states)));
  auto db_gen_hh = rows(dgh_gen).sum(0);
  auto dw_factor = torch::mm(rows(dfactors).t(), rows(kept));
  return {dgx_con, dgen, dcon, dw_factor_in, dw_con_hh, db_con_hh, dw_co, db_co,
          dw_gen_ih, d_gen_input_bias, dw_gen_hh, db_gen_hh, dw_factor};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  // The GIL is released so that batch shards on several Python threads run in parallel.
  m.def("gru_sequence_forward", &gru_sequence_forward, py::call_guard<py::gil_scoped_release>());
  m.def("gru_sequence_backward", &gru_sequence_backward, py::call_guard<py::gil_scoped_release>());
  m.def("decoder_forward", &decoder_forward, py::call_guard<py::gil_scoped_release>());
  m.def("decoder_backward", &decoder_backward, py::call_guard<py::gil_scoped_release>());
}
