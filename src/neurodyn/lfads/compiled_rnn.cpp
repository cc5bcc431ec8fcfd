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
// Layout: one model's sequences are time-major (T,B,...). T steps, B trials, H units (C controller,
// G generator), F factors, K inferred inputs. Tensors are contiguous.
//
// Stacked workers (the PBT population engine): every kernel also takes W models of one architecture
// at once, told apart by the rank of the recurrent weight: (W,3H,H) instead of (3H,H). Then every
// weight and bias has a leading W, states (W,B,H), and every sequence is worker-major, (W,T,B,...):
// the population computes its input projections per worker (a batched product gives them in that
// layout, so they pass in without a copy), each step is the (W,B,...) view select(1, t), and each
// weight gradient is one batched product over a worker's T*B rows. The matrix products are batched
// over workers (bmm/baddbmm) and the fused gate passes run over each worker's block of B rows.
// Worker k's numbers are exactly those of the single-model call on its slice.

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

// One step's activations are (B,X) for one model and (W,B,X) stacked, where each worker's block of B
// rows is contiguous but the blocks may lie apart (a step of a worker-major (W,T,B,X) sequence). The
// gate passes run block by block.
inline int64_t blocks_of(const torch::Tensor& t) { return t.dim() == 3 ? t.size(0) : 1; }
inline void check_block_rows(const torch::Tensor& t) {
  TORCH_CHECK(t.stride(-1) == 1 && (t.size(-2) == 1 || t.stride(-2) == t.size(-1)),
              "compiled_rnn: a step's rows must be contiguous within each worker's block");
}
template <typename scalar_t>
const scalar_t* block(const torch::Tensor& t, int64_t w) {
  check_block_rows(t);
  return t.data_ptr<scalar_t>() + (t.dim() == 3 ? w * t.stride(0) : 0);
}
template <typename scalar_t>
scalar_t* mblock(torch::Tensor& t, int64_t w) {
  check_block_rows(t);
  return t.data_ptr<scalar_t>() + (t.dim() == 3 ? w * t.stride(0) : 0);
}

// The matrix products, for one model (weights 2-D) or stacked workers (weights 3-D, one per worker).
// out = bias + a @ w_t; a (B,I) and w_t (I,O), or a (W,B,I) and w_t (W,I,O); the bias is broadcast
// over the rows ((O) for one model, (W,O) stacked).
inline void affine_out(torch::Tensor out, const torch::Tensor& bias, const torch::Tensor& a, const torch::Tensor& w_t) {
  if (w_t.dim() == 2) {
    torch::addmm_out(out, bias, a, w_t);
  } else {
    torch::baddbmm_out(out, bias.dim() == 2 ? bias.unsqueeze(1) : bias, a, w_t);
  }
}
// out = a @ w_t.
inline void product_out(torch::Tensor out, const torch::Tensor& a, const torch::Tensor& w_t) {
  if (w_t.dim() == 2) {
    torch::mm_out(out, a, w_t);
  } else {
    torch::bmm_out(out, a, w_t);
  }
}
// acc += a @ w.
inline void add_product_(torch::Tensor& acc, const torch::Tensor& a, const torch::Tensor& w) {
  if (w.dim() == 2) {
    acc.addmm_(a, w);
  } else {
    acc.baddbmm_(a, w);
  }
}
// A weight's transpose (the last two axes, per worker when stacked). One model's stays a view (BLAS
// reads it transposed); stacked weights are copied once per call, because a batched product over a
// transposed view would copy it at every step.
inline torch::Tensor transposed(const torch::Tensor& w) {
  return w.dim() == 2 ? w.t() : w.transpose(1, 2).contiguous();
}

// A time-major activation (T,B,X) of one model as rows (T*B,X).
inline torch::Tensor model_rows(const torch::Tensor& x) { return x.reshape({-1, x.size(-1)}); }
// Gradient of a weight from its output gradients and inputs over all steps and trials: the sum over
// rows of grad_out^T input, (O,I) for one model's (T,B,...) sequences, (W,O,I) for stacked worker-major
// (W,T,B,...) ones, where each worker's rows over all steps form one block: one (batched) product.
// With more outputs than inputs the product is taken as (input^T grad_out)^T: BLAS runs the long
// reduction over rows faster with the narrow operand transposed (on an AVX-512 Xeon at the reference
// workload: 300 outputs x 4 inputs over 6400 rows 3.0 -> 1.4 ms for one model, 5.0 -> 1.3 ms for 4
// stacked; 300 x 100: 12.9 -> 11.3 and 18.4 -> 13.4 ms).
inline torch::Tensor weight_gradient(const torch::Tensor& grad_out, const torch::Tensor& input, bool stacked) {
  const int64_t W = stacked ? grad_out.size(0) : 1;
  auto g = grad_out.reshape({W, -1, grad_out.size(-1)}), x = input.reshape({W, -1, input.size(-1)});
  const bool transposed = g.size(-1) > x.size(-1);
  const auto& a = transposed ? x : g;
  const auto& b = transposed ? g : x;
  auto product = stacked ? torch::bmm(a.transpose(1, 2), b) : torch::mm(a[0].t(), b[0]);
  return transposed ? product.transpose(-2, -1).contiguous() : product;
}
// Gradient of a bias: (O) or (W,O).
inline torch::Tensor bias_gradient(const torch::Tensor& grad_out, bool stacked) {
  return stacked ? grad_out.sum({1, 2}) : model_rows(grad_out).sum(0);
}

// One GRU step on tensors: gh = b_hh + h W_hh^T into the scratch ``gh`` (B,3H; stacked (W,B,3H)), then
// the fused update into step t's slices of the saved buffers (views, hence taken by value).
template <typename scalar_t>
void gru_step_forward(const torch::Tensor& gx, const torch::Tensor& h, const torch::Tensor& w_hh_t,
                      const torch::Tensor& b_hh, torch::Tensor& gh, torch::Tensor gates, torch::Tensor gh_n,
                      torch::Tensor unclipped, torch::Tensor h_new, scalar_t clip) {
  affine_out(gh, b_hh, h, w_hh_t);
  const int64_t B = h.size(-2), H = h.size(-1);
  for (int64_t w = 0; w < blocks_of(h); ++w) {
    gru_update_forward<scalar_t>(block<scalar_t>(gx, w), block<scalar_t>(gh, w), block<scalar_t>(h, w),
                                 mblock<scalar_t>(gates, w), mblock<scalar_t>(gh_n, w), mblock<scalar_t>(unclipped, w),
                                 mblock<scalar_t>(h_new, w), B, H, clip);
  }
}

// Backward of gru_step_forward: ``dh`` (B,H) holds the gradient of the new state on entry and that
// of the previous state on exit; step t's dgx and dgh (B,3H) are written.
template <typename scalar_t>
void gru_step_backward(torch::Tensor& dh, const torch::Tensor& h_prev, const torch::Tensor& gates,
                       const torch::Tensor& gh_n, const torch::Tensor& unclipped, const torch::Tensor& w_hh,
                       torch::Tensor dgx, torch::Tensor dgh, scalar_t clip) {
  const int64_t B = dh.size(-2), H = dh.size(-1);
  for (int64_t w = 0; w < blocks_of(dh); ++w) {
    gru_update_backward<scalar_t>(mblock<scalar_t>(dh, w), block<scalar_t>(h_prev, w), block<scalar_t>(gates, w),
                                  block<scalar_t>(gh_n, w), block<scalar_t>(unclipped, w), mblock<scalar_t>(dgx, w),
                                  mblock<scalar_t>(dgh, w), B, H, clip);
  }
  add_product_(dh, dgh, w_hh);
}

// The shape of a sequence of ``steps`` steps with the batch axes of ``state`` and last axis ``width``:
// time-major (steps,B,width) for one model's state (B,H), worker-major (W,steps,B,width) for stacked
// states (W,B,H).
inline std::vector<int64_t> sequence_shape(int64_t steps, const torch::Tensor& state, int64_t width) {
  if (state.dim() == 3) return {state.size(0), steps, state.size(1), width};
  return {steps, state.size(0), width};
}
// One step's shape: the batch axes of ``state`` ((B) or (W,B)) and ``width``.
inline std::vector<int64_t> batch_shape(const torch::Tensor& state, int64_t width) {
  auto shape = state.sizes().vec();
  shape.back() = width;
  return shape;
}

}  // namespace

// A GRU over T steps (reverse: from step T-1 down to 0) from the input projection x_projection
// (T,B,3H) = W_ih x_t + b_ih and the initial state h0 (B,H). Returns {states (T,B,H) in time order,
// gates (T,B,3H), gh_n (T,B,H), unclipped (T,B,H)}. Stacked: x_projection (W,T,B,3H), h0 (W,B,H),
// w_hh (W,3H,H), b_hh (W,3H), every sequence (W,T,B,...).
std::vector<torch::Tensor> gru_sequence_forward(torch::Tensor x_projection, torch::Tensor h0, torch::Tensor w_hh,
                                                torch::Tensor b_hh, double clip, bool reverse) {
  const bool stacked = w_hh.dim() == 3;
  const int64_t time_axis = stacked ? 1 : 0;
  const int64_t T = x_projection.size(time_axis), H = w_hh.size(-1);
  auto opts = x_projection.options();
  auto states = torch::empty(sequence_shape(T, h0, H), opts), gates = torch::empty(sequence_shape(T, h0, 3 * H), opts);
  auto gh_n = torch::empty(sequence_shape(T, h0, H), opts), unclipped = torch::empty(sequence_shape(T, h0, H), opts);
  auto gh = torch::empty(batch_shape(h0, 3 * H), opts);
  auto w_hh_t = transposed(w_hh);
  AT_DISPATCH_FLOATING_TYPES(x_projection.scalar_type(), "gru_sequence_forward", [&] {
    const scalar_t clip_value = static_cast<scalar_t>(clip);
    for (int64_t i = 0; i < T; ++i) {
      const int64_t t = reverse ? T - 1 - i : i;
      auto h = i == 0 ? h0 : states.select(time_axis, reverse ? t + 1 : t - 1);
      gru_step_forward<scalar_t>(x_projection.select(time_axis, t), h, w_hh_t, b_hh, gh, gates.select(time_axis, t),
                                 gh_n.select(time_axis, t), unclipped.select(time_axis, t),
                                 states.select(time_axis, t), clip_value);
    }
  });
  return {states, gates, gh_n, unclipped};
}

// Gradients of gru_sequence_forward given the gradient of its states (T,B,H). Returns
// {d x_projection (T,B,3H), d h0 (B,H), d w_hh (3H,H), d b_hh (3H)} (stacked: worker-major (W,T,B,...)
// sequences and the W axes of the weights).
std::vector<torch::Tensor> gru_sequence_backward(torch::Tensor grad_states, torch::Tensor h0, torch::Tensor w_hh,
                                                 torch::Tensor states, torch::Tensor gates, torch::Tensor gh_n,
                                                 torch::Tensor unclipped, double clip, bool reverse,
                                                 bool weight_grads) {
  const bool stacked = w_hh.dim() == 3;
  const int64_t time_axis = stacked ? 1 : 0;
  const int64_t T = grad_states.size(time_axis), H = w_hh.size(-1);
  auto opts = grad_states.options();
  auto dgx = torch::empty(gates.sizes(), opts), dgh = torch::empty(gates.sizes(), opts);
  auto dh = torch::zeros_like(h0);
  // previous[t] = the state step t started from.
  auto first = h0.unsqueeze(time_axis);
  auto previous = reverse ? torch::cat({states.narrow(time_axis, 1, T - 1), first}, time_axis)
                          : torch::cat({first, states.narrow(time_axis, 0, T - 1)}, time_axis);
  AT_DISPATCH_FLOATING_TYPES(grad_states.scalar_type(), "gru_sequence_backward", [&] {
    const scalar_t clip_value = static_cast<scalar_t>(clip);
    for (int64_t i = T - 1; i >= 0; --i) {
      const int64_t t = reverse ? T - 1 - i : i;
      dh.add_(grad_states.select(time_axis, t));
      gru_step_backward<scalar_t>(dh, previous.select(time_axis, t), gates.select(time_axis, t),
                                  gh_n.select(time_axis, t), unclipped.select(time_axis, t), w_hh,
                                  dgx.select(time_axis, t), dgh.select(time_axis, t), clip_value);
    }
  });
  // Without weight_grads (weights that need no gradient, as in the per-trial posterior refinement)
  // the weight and bias gradients come back undefined (None): the weight's product over all steps is
  // the largest single product of the backward pass.
  if (!weight_grads) return {dgx, dh, torch::Tensor(), torch::Tensor()};
  return {dgx, dh, weight_gradient(dgh, previous, stacked), bias_gradient(dgh, stacked)};
}

// The inferred inputs of one step from the controller's output projection: for each of B rows,
// out (2K) = [mean, log-variance]; writes mean, sd = exp(logvar / 2) and co = mean + sd * eps (K each).
template <typename scalar_t>
void controller_output_forward(const scalar_t* out, const scalar_t* eps, scalar_t* mean, scalar_t* sd, scalar_t* co,
                               int64_t B, int64_t K) {
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t k = 0; k < K; ++k) {
      const scalar_t m = out[b * 2 * K + k];
      const scalar_t s = std::exp(scalar_t(0.5) * out[b * 2 * K + K + k]);
      mean[b * K + k] = m;
      sd[b * K + k] = s;
      co[b * K + k] = m + s * eps[b * K + k];
    }
  }
}

// Its backward: from the gradients of co (dc), mean (gm) and sd (gs), the gradient of out (2K per row).
template <typename scalar_t>
void controller_output_backward(const scalar_t* dc, const scalar_t* gm, const scalar_t* gs, const scalar_t* eps,
                                const scalar_t* sd, scalar_t* dout, int64_t B, int64_t K) {
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t k = 0; k < K; ++k) {
      const int64_t i = b * K + k;
      dout[b * 2 * K + k] = dc[i] + gm[i];
      dout[b * 2 * K + K + k] = (dc[i] * eps[i] + gs[i]) * scalar_t(0.5) * sd[i];
    }
  }
}

// Returns {factors_all (T+1,B,F) [0 = factors of the initial state], co_mean, co_std, co (T,B,K),
//          con_states (T+1,B,C), gen_states (T+1,B,G), kept (T+1,B,G) = gen_states * keep,
//          con_gates (T,B,3C), con_gh_n, con_unclipped (T,B,C), gen_gates (T,B,3G), gen_gh_n,
//          gen_unclipped (T,B,G)}.
// Stacked, worker-major: every sequence (W,T,B,...) (inputs and outputs), initial states (W,B,...),
// weights and biases with a leading W; the generator's input bias (W,3G) or per step (W,T,B,3G).
std::vector<torch::Tensor> decoder_forward(
    torch::Tensor ci_projection, torch::Tensor gen_init, torch::Tensor con_init, torch::Tensor noise,
    torch::Tensor keep, torch::Tensor w_factor_in, torch::Tensor w_con_hh, torch::Tensor b_con_hh,
    torch::Tensor w_co, torch::Tensor b_co, torch::Tensor w_gen_ih, torch::Tensor gen_input_bias,
    torch::Tensor w_gen_hh, torch::Tensor b_gen_hh, torch::Tensor w_factor, double clip) {
  const bool stacked = w_con_hh.dim() == 3;
  const int64_t time_axis = stacked ? 1 : 0;
  const int64_t T = ci_projection.size(time_axis);
  const int64_t C = w_con_hh.size(-1), G = w_gen_hh.size(-1), F = w_factor.size(-2), K = noise.size(-1);
  const bool per_step_bias = gen_input_bias.dim() == ci_projection.dim();
  const auto& g0 = gen_init;  // its leading axes are the batch axes of every activation
  auto opts = ci_projection.options();
  auto seq = [&](int64_t steps, int64_t width) { return torch::empty(sequence_shape(steps, g0, width), opts); };
  auto factors_all = seq(T + 1, F);
  auto co_mean = seq(T, K), co_std = seq(T, K), co = seq(T, K);
  auto con_states = seq(T + 1, C), gen_states = seq(T + 1, G), kept = seq(T + 1, G);
  auto con_gates = seq(T, 3 * C), con_gh_n = seq(T, C), con_unclipped = seq(T, C);
  auto gen_gates = seq(T, 3 * G), gen_gh_n = seq(T, G), gen_unclipped = seq(T, G);
  auto gx_con = torch::empty(batch_shape(g0, 3 * C), opts), gh_con = torch::empty(batch_shape(g0, 3 * C), opts);
  auto gx_gen = torch::empty(batch_shape(g0, 3 * G), opts), gh_gen = torch::empty(batch_shape(g0, 3 * G), opts);
  auto co_out = torch::empty(batch_shape(g0, 2 * K), opts);
  const int64_t B = g0.size(-2);
  auto w_factor_in_t = transposed(w_factor_in), w_con_hh_t = transposed(w_con_hh), w_co_t = transposed(w_co);
  auto w_gen_ih_t = transposed(w_gen_ih), w_gen_hh_t = transposed(w_gen_hh), w_factor_t = transposed(w_factor);
  auto at = [&](const torch::Tensor& sequence, int64_t t) { return sequence.select(time_axis, t); };

  at(con_states, 0).copy_(con_init);
  at(gen_states, 0).copy_(gen_init);
  auto kept_first = at(kept, 0), factors_first = at(factors_all, 0);
  torch::mul_out(kept_first, at(gen_states, 0), at(keep, 0));
  product_out(factors_first, kept_first, w_factor_t);

  AT_DISPATCH_FLOATING_TYPES(ci_projection.scalar_type(), "decoder_forward", [&] {
    const scalar_t clip_value = static_cast<scalar_t>(clip);
    for (int64_t t = 0; t < T; ++t) {
      affine_out(gx_con, at(ci_projection, t), at(factors_all, t), w_factor_in_t);
      auto con_next = at(con_states, t + 1);
      gru_step_forward<scalar_t>(gx_con, at(con_states, t), w_con_hh_t, b_con_hh, gh_con, at(con_gates, t),
                                 at(con_gh_n, t), at(con_unclipped, t), con_next, clip_value);

      affine_out(co_out, b_co, con_next, w_co_t);
      auto mean_t = at(co_mean, t), std_t = at(co_std, t), co_t = at(co, t), noise_t = at(noise, t);
      for (int64_t w = 0; w < blocks_of(co_out); ++w) {
        controller_output_forward<scalar_t>(block<scalar_t>(co_out, w), block<scalar_t>(noise_t, w),
                                            mblock<scalar_t>(mean_t, w), mblock<scalar_t>(std_t, w),
                                            mblock<scalar_t>(co_t, w), B, K);
      }

      affine_out(gx_gen, per_step_bias ? at(gen_input_bias, t) : gen_input_bias, co_t, w_gen_ih_t);
      auto gen_next = at(gen_states, t + 1);
      gru_step_forward<scalar_t>(gx_gen, at(gen_states, t), w_gen_hh_t, b_gen_hh, gh_gen, at(gen_gates, t),
                                 at(gen_gh_n, t), at(gen_unclipped, t), gen_next, clip_value);
      auto kept_next = at(kept, t + 1);
      torch::mul_out(kept_next, gen_next, at(keep, t + 1));
      auto factors_next = at(factors_all, t + 1);
      product_out(factors_next, kept_next, w_factor_t);
    }
  });
  return {factors_all, co_mean, co_std, co, con_states, gen_states, kept,
          con_gates, con_gh_n, con_unclipped, gen_gates, gen_gh_n, gen_unclipped};
}

// Gradients of decoder_forward given the gradients of its outputs factors_all[1:] (T,B,F), co_mean,
// co_std and co (T,B,K). Returns {d ci_projection, d gen_init, d con_init, d w_factor_in, d w_con_hh,
// d b_con_hh, d w_co, d b_co, d w_gen_ih, d gen_input_bias, d w_gen_hh, d b_gen_hh, d w_factor};
// d gen_input_bias is (T,B,3G) when per_step_bias (the forward's bias was per step), else (3G).
// Without weight_grads the weights' and biases' gradients come back undefined (None), except a per-step
// bias's, which costs nothing. Stacked (worker-major) as in decoder_forward.
std::vector<torch::Tensor> decoder_backward(
    torch::Tensor grad_factors, torch::Tensor grad_co_mean, torch::Tensor grad_co_std, torch::Tensor grad_co,
    torch::Tensor noise, torch::Tensor keep, torch::Tensor w_factor_in, torch::Tensor w_con_hh,
    torch::Tensor w_co, torch::Tensor w_gen_ih, torch::Tensor w_gen_hh, torch::Tensor w_factor,
    torch::Tensor factors_all, torch::Tensor co_std, torch::Tensor co, torch::Tensor con_states,
    torch::Tensor gen_states, torch::Tensor kept, torch::Tensor con_gates, torch::Tensor con_gh_n,
    torch::Tensor con_unclipped, torch::Tensor gen_gates, torch::Tensor gen_gh_n, torch::Tensor gen_unclipped,
    double clip, bool per_step_bias, bool weight_grads) {
  const bool stacked = w_con_hh.dim() == 3;
  const int64_t time_axis = stacked ? 1 : 0;
  const int64_t T = grad_factors.size(time_axis);
  const int64_t C = w_con_hh.size(-1), G = w_gen_hh.size(-1), F = w_factor.size(-2), K = noise.size(-1);
  auto at = [&](const torch::Tensor& sequence, int64_t t) { return sequence.select(time_axis, t); };
  const auto s0 = at(gen_states, 0);  // its leading axes are the batch axes
  auto opts = grad_factors.options();
  auto seq = [&](int64_t steps, int64_t width) { return torch::empty(sequence_shape(steps, s0, width), opts); };
  auto dgx_con = seq(T, 3 * C), dgh_con = seq(T, 3 * C), dgx_gen = seq(T, 3 * G), dgh_gen = seq(T, 3 * G);
  auto dco_out = seq(T, 2 * K), dfactors = seq(T + 1, F);
  auto dgen = torch::zeros(batch_shape(s0, G), opts), dcon = torch::zeros(batch_shape(s0, C), opts);
  auto dkept = torch::empty(batch_shape(s0, G), opts), dco = torch::empty(batch_shape(s0, K), opts);
  const int64_t B = s0.size(-2);

  AT_DISPATCH_FLOATING_TYPES(grad_factors.scalar_type(), "decoder_backward", [&] {
    const scalar_t clip_value = static_cast<scalar_t>(clip);
    for (int64_t t = T - 1; t >= 0; --t) {
      // factors_all[t+1] feeds the output and the controller at step t+1.
      auto df = at(dfactors, t + 1);
      if (t + 1 < T) {
        affine_out(df, at(grad_factors, t), at(dgx_con, t + 1), w_factor_in);
      } else {
        df.copy_(at(grad_factors, t));
      }
      product_out(dkept, df, w_factor);
      dgen.addcmul_(dkept, at(keep, t + 1));

      auto dgx_gen_t = at(dgx_gen, t);
      gru_step_backward<scalar_t>(dgen, at(gen_states, t), at(gen_gates, t), at(gen_gh_n, t), at(gen_unclipped, t),
                                  w_gen_hh, dgx_gen_t, at(dgh_gen, t), clip_value);

      affine_out(dco, at(grad_co, t), dgx_gen_t, w_gen_ih);
      auto grad_mean_t = at(grad_co_mean, t), grad_std_t = at(grad_co_std, t), noise_t = at(noise, t);
      auto std_t = at(co_std, t), dco_out_t = at(dco_out, t);
      for (int64_t w = 0; w < blocks_of(dco); ++w) {
        controller_output_backward<scalar_t>(block<scalar_t>(dco, w), block<scalar_t>(grad_mean_t, w),
                                             block<scalar_t>(grad_std_t, w), block<scalar_t>(noise_t, w),
                                             block<scalar_t>(std_t, w), mblock<scalar_t>(dco_out_t, w), B, K);
      }
      add_product_(dcon, dco_out_t, w_co);

      gru_step_backward<scalar_t>(dcon, at(con_states, t), at(con_gates, t), at(con_gh_n, t), at(con_unclipped, t),
                                  w_con_hh, at(dgx_con, t), at(dgh_con, t), clip_value);
    }
  });
  // The initial state's factors feed the controller at step 0.
  auto dfactors_first = at(dfactors, 0);
  product_out(dfactors_first, at(dgx_con, 0), w_factor_in);
  product_out(dkept, dfactors_first, w_factor);
  dgen.addcmul_(dkept, at(keep, 0));

  if (!weight_grads) {
    const torch::Tensor none;
    return {dgx_con, dgen, dcon, none, none, none, none, none, none, per_step_bias ? dgx_gen : none, none, none, none};
  }
  auto previous = [&](const torch::Tensor& states) { return states.narrow(time_axis, 0, states.size(time_axis) - 1); };
  auto next = [&](const torch::Tensor& states) { return states.narrow(time_axis, 1, states.size(time_axis) - 1); };
  auto weight = [&](const torch::Tensor& grad_out, const torch::Tensor& input) {
    return weight_gradient(grad_out, input, stacked);
  };
  auto bias = [&](const torch::Tensor& grad_out) { return bias_gradient(grad_out, stacked); };
  auto dw_factor_in = weight(dgx_con, previous(factors_all));
  auto dw_con_hh = weight(dgh_con, previous(con_states));
  auto db_con_hh = bias(dgh_con);
  auto dw_co = weight(dco_out, next(con_states));
  auto db_co = bias(dco_out);
  auto dw_gen_ih = weight(dgx_gen, co);
  // A per-step bias gets each step's gradient: that of the generator's input projection itself.
  auto d_gen_input_bias = per_step_bias ? dgx_gen : bias(dgx_gen);
  auto dw_gen_hh = weight(dgh_gen, previous(gen_states));
  auto db_gen_hh = bias(dgh_gen);
  auto dw_factor = weight(dfactors, kept);
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
