// The decoder's teacher-forced loops (one GRU layer, additive attention), forward and backward, compiled; and, at
// the end, one search step's attention for a model folded for search (`search_attend`), which shares their
// attention row.
//
// The Python loops (nmt/model/decoder.py, `_bahdanau_teacher_forced`, `_luong_teacher_forced`) issue about 20
// small operations per target position and autograd records each; at training's batch of ~40 sentences much of
// their time is the issuing, not the arithmetic. Here the same operations run from C++ with no graph: the forward
// writes what the backward needs into [T, ...] buffers, the backward runs the positions in reverse and leaves every
// weight gradient to one product over all positions after the loop (the order cuDNN uses for its RNNs).
//
// Shared by both step orders, at one position t (s the decoder state, H the annotations [B, S, D], K = 2 (U H + b)
// the projected keys [B, S, A]; see nmt/model/attention.py for why the score is 2 v^T sigmoid(...): it equals
// v^T tanh(...) up to a constant that the softmax cancels):
//     attention with query s:  E = sigmoid(2 W_q s + K) [B, S, A];  e = E (2 v), -inf on padding;
//                              a = softmax(e) [B, S];  c = a H [B, D]
//     GRU cell on input products g and recurrent products k = W_hh s_{t-1} + b_hh (both [B, 3h]):
//                              r, z = sigmoid(g_r + k_r), sigmoid(g_z + k_z);  n = tanh(g_n + r * k_n)
//                              s_t = n + z * (s_{t-1} - n)
// Bahdanau order: attend with s_{t-1}, then g_t = G_t + W_c c_t (G_t = W_e E y_{t-1} + b_ih, given).
// Luong order (input feeding): g_t = G_t + W_f h~_{t-1} (h~_0 = 0), then attend with s_t, then
//                              h~_t = tanh(W_o (m_t * [s_t; c_t]) + b_o), m_t the dropout mask.

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include "vector_math.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

using at::Tensor;
using nmt::vector_exp;
using nmt::vector_sigmoid;

namespace {

// ----------------------------------------------------------------------------------------- attention
// One position's attention runs as one pass per sentence over its [S, A] keys: the energies, their dot with v, the
// softmax and the context (at::add + sigmoid_ + mv + softmax + bmm otherwise: five passes, the broadcast add and
// the batched [1, S] x [S, D] products far slower than their arithmetic at these sizes). Sentences are split
// between threads.

// E = sigmoid(q + K[j, :]) into energy [A] for one source position; returns e_j = v2 . E. (Two loops: the
// compiler vectorizes the sigmoid only where its results are stored, not fused into the sum.)
template <typename scalar_t>
scalar_t energy(const scalar_t* __restrict__ query, const scalar_t* __restrict__ key,
                const scalar_t* __restrict__ v2, scalar_t* __restrict__ energy, int64_t att) {
  for (int64_t a = 0; a < att; ++a) energy[a] = vector_sigmoid(query[a] + key[a]);
  scalar_t score = 0;
#pragma omp simd reduction(+ : score)
  for (int64_t a = 0; a < att; ++a) score += v2[a] * energy[a];
  return score;
}

// One row's attention weights over its sentence's source positions, written into w [S]: the scores
// e_j = v2 . sigmoid(q + K[j, :]) of the unpadded positions, then their softmax (0 on padding). energy: scratch [A].
template <typename scalar_t>
void attention_row(const scalar_t* __restrict__ query, const scalar_t* __restrict__ keys,
                   const bool* __restrict__ padded, const scalar_t* __restrict__ v2, int64_t src_len, int64_t att,
                   scalar_t* __restrict__ energy_buffer, scalar_t* __restrict__ w) {
  scalar_t top = -std::numeric_limits<scalar_t>::infinity();
  for (int64_t j = 0; j < src_len; ++j) {
    if (padded[j]) continue;
    w[j] = energy(query, keys + j * att, v2, energy_buffer, att);
    top = std::max(top, w[j]);
  }
  scalar_t total = 0;
  for (int64_t j = 0; j < src_len; ++j) {
    w[j] = padded[j] ? scalar_t(0) : vector_exp(w[j] - top);
    total += w[j];
  }
  for (int64_t j = 0; j < src_len; ++j) w[j] /= total;
}

// out [D] += sum_j w_j values[j, :] over the unpadded positions j (values [S, D]).
template <typename scalar_t>
void mix_row(const scalar_t* __restrict__ w, const scalar_t* __restrict__ values, const bool* __restrict__ padded,
             int64_t src_len, int64_t dim, scalar_t* __restrict__ out) {
  for (int64_t j = 0; j < src_len; ++j) {
    if (padded[j]) continue;
    const scalar_t a = w[j];
    const scalar_t* __restrict__ h = values + j * dim;
    for (int64_t d = 0; d < dim; ++d) out[d] += a * h[d];
  }
}

// One position's attention, written into weight [B, S] and context [B, D] (a view of a wider buffer is fine).
// query: 2 W_q s [B, A]. The energies sigmoid(q + K) are not kept: the backward recomputes them, cheaper than
// writing and reading back a [T, B, S, A] buffer (112 MB at the peers' batch, most of its cost in page faults).
template <typename scalar_t>
void attend_kernel(const Tensor& query, const Tensor& keys, const Tensor& values, const Tensor& padding,
                   const Tensor& v2, Tensor& weight, Tensor& context) {
  const int64_t src_len = keys.size(1), att = keys.size(2), dim = values.size(2);
  const int64_t query_stride = query.stride(0), context_stride = context.stride(0);
  const scalar_t* queries = query.data_ptr<scalar_t>();
  const scalar_t* key_rows = keys.data_ptr<scalar_t>();
  const scalar_t* value_rows = values.data_ptr<scalar_t>();
  const scalar_t* v = v2.data_ptr<scalar_t>();
  const bool* padded = padding.data_ptr<bool>();
  scalar_t* weights = weight.data_ptr<scalar_t>();
  scalar_t* contexts = context.data_ptr<scalar_t>();
  at::parallel_for(0, keys.size(0), 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> energy_buffer(att);
    for (int64_t b = begin; b < end; ++b) {
      scalar_t* w = weights + b * src_len;
      attention_row(queries + b * query_stride, key_rows + b * src_len * att, padded + b * src_len, v, src_len,
                    att, energy_buffer.data(), w);
      scalar_t* c = contexts + b * context_stride;
      std::fill(c, c + dim, scalar_t(0));
      mix_row(w, value_rows + b * src_len * dim, padded + b * src_len, src_len, dim, c);
    }
  });
}

// The kernels index raw rows: tensors they read whole must be contiguous, and the [B, ...] arguments that may be
// views of wider buffers must have contiguous rows.
void check_layout(const char* kernel, std::initializer_list<Tensor> whole, std::initializer_list<Tensor> rows) {
  for (const Tensor& t : whole) {
    TORCH_CHECK(t.is_contiguous(), kernel, ": an argument of shape ", t.sizes(), " must be contiguous");
  }
  for (const Tensor& t : rows) {
    TORCH_CHECK(t.stride(-1) == 1, kernel, ": the rows of an argument of shape ", t.sizes(), " must be contiguous");
  }
}

void attend(const Tensor& query, const Tensor& keys, const Tensor& values, const Tensor& padding, const Tensor& v2,
            Tensor weight, Tensor context) {
  check_layout("attend", {keys, values, padding, weight}, {query, context});
  AT_DISPATCH_FLOATING_TYPES(keys.scalar_type(), "attend", [&] {
    attend_kernel<scalar_t>(query, keys, values, padding, v2, weight, context);
  });
}

// The backward of `attend` for one position, per sentence in one pass, given dc [B, D] and, when defined, the
// loss's own da_in [B, S]; with E[j, :] = sigmoid(q + K[j, :]) recomputed:
//     da_j = H[j, :] . dc + da_in_j;  de_j = a_j (da_j - sum_k a_k da_k)  (softmax; zero on padding, where a_j = 0)
//     d(q + K)[j, :] = de_j v2 * E[j, :] (1 - E[j, :]),  added to dK[j, :] and summed over j into dq
//     dv2 += de_j E[j, :]
// Writes dq = dL/d(2 W_q s) into grad_query [B, A] (a view is fine); adds to dK [B, S, A] and to each sentence's
// row of dv2 [B, A] (summed over sentences after the loop: a thread owns a sentence, so no two threads add to one
// row). Uses scratch [B, S].
template <typename scalar_t>
void attend_backward_kernel(const Tensor& grad_context, const scalar_t* grad_weight_in, const Tensor& query,
                            const Tensor& keys, const Tensor& values, const Tensor& weight, const Tensor& v2,
                            Tensor& scratch, Tensor& grad_keys, Tensor& grad_query, Tensor& grad_v2_rows) {
  const int64_t src_len = keys.size(1), att = keys.size(2), dim = values.size(2);
  const int64_t query_stride = query.stride(0), grad_query_stride = grad_query.stride(0);
  const int64_t context_stride = grad_context.stride(0);
  const scalar_t* dc_rows = grad_context.data_ptr<scalar_t>();
  const scalar_t* queries = query.data_ptr<scalar_t>();
  const scalar_t* key_rows = keys.data_ptr<scalar_t>();
  const scalar_t* value_rows = values.data_ptr<scalar_t>();
  const scalar_t* weights = weight.data_ptr<scalar_t>();
  const scalar_t* v = v2.data_ptr<scalar_t>();
  scalar_t* de_rows = scratch.data_ptr<scalar_t>();
  scalar_t* dk = grad_keys.data_ptr<scalar_t>();
  scalar_t* dq = grad_query.data_ptr<scalar_t>();
  scalar_t* dv = grad_v2_rows.data_ptr<scalar_t>();
  at::parallel_for(0, keys.size(0), 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> energy_buffer(att);
    scalar_t* __restrict__ e = energy_buffer.data();
    for (int64_t b = begin; b < end; ++b) {
      const scalar_t* __restrict__ a = weights + b * src_len;
      const scalar_t* __restrict__ dc = dc_rows + b * context_stride;
      scalar_t* __restrict__ de = de_rows + b * src_len;
      scalar_t weighted_total = 0;
      for (int64_t j = 0; j < src_len; ++j) {
        scalar_t da = grad_weight_in == nullptr ? scalar_t(0) : grad_weight_in[b * src_len + j];
        if (a[j] != 0) {
          const scalar_t* __restrict__ h = value_rows + (b * src_len + j) * dim;
          scalar_t dot = 0;
#pragma omp simd reduction(+ : dot)
          for (int64_t d = 0; d < dim; ++d) dot += h[d] * dc[d];
          da += dot;
        }
        de[j] = da;
        weighted_total += a[j] * da;
      }
      const scalar_t* __restrict__ q = queries + b * query_stride;
      scalar_t* __restrict__ dq_row = dq + b * grad_query_stride;
      scalar_t* __restrict__ dv_row = dv + b * att;
      std::fill(dq_row, dq_row + att, scalar_t(0));
      for (int64_t j = 0; j < src_len; ++j) {
        const scalar_t de_j = a[j] * (de[j] - weighted_total);
        if (de_j == 0) continue;
        const scalar_t* __restrict__ key = key_rows + (b * src_len + j) * att;
        scalar_t* __restrict__ dk_row = dk + (b * src_len + j) * att;
        for (int64_t k = 0; k < att; ++k) e[k] = vector_sigmoid(q[k] + key[k]);
        for (int64_t k = 0; k < att; ++k) {
          const scalar_t g = de_j * v[k] * e[k] * (1 - e[k]);
          dk_row[k] += g;
          dq_row[k] += g;
          dv_row[k] += de_j * e[k];
        }
      }
    }
  });
}

void attend_backward(const Tensor& grad_context, const std::optional<Tensor>& grad_weight_in, const Tensor& query,
                     const Tensor& keys, const Tensor& values, const Tensor& weight, const Tensor& v2,
                     Tensor& scratch, Tensor& grad_keys, Tensor grad_query, Tensor& grad_v2_rows) {
  check_layout("attend_backward", {keys, values, weight, scratch, grad_keys, grad_v2_rows},
               {query, grad_query, grad_context});
  AT_DISPATCH_FLOATING_TYPES(keys.scalar_type(), "attend_backward", [&] {
    const scalar_t* grad_weight_rows = grad_weight_in.has_value() ? grad_weight_in->data_ptr<scalar_t>() : nullptr;
    attend_backward_kernel<scalar_t>(grad_context, grad_weight_rows, query, keys, values, weight, v2, scratch,
                                     grad_keys, grad_query, grad_v2_rows);
  });
}

// ---------------------------------------------------------------------------------------------- GRU
// The GRU cell's gate arithmetic: writes r and z into rz [B, 2h], n, k_n (saved for the backward) and the new
// state s_t, all [B, h].
void gru_gates(const Tensor& gates, const Tensor& hgates, const Tensor& prev, Tensor rz, Tensor n, Tensor h_n,
               Tensor state) {
  const int64_t hid = prev.size(1);
  at::add_out(rz, gates.narrow(1, 0, 2 * hid), hgates.narrow(1, 0, 2 * hid)).sigmoid_();
  h_n.copy_(hgates.narrow(1, 2 * hid, hid));
  at::addcmul_out(n, gates.narrow(1, 2 * hid, hid), rz.narrow(1, 0, hid), h_n).tanh_();
  at::addcmul_out(state, n, rz.narrow(1, hid, hid), prev - n);
}

// The backward of `gru_gates` given dL/ds_t: writes dL/dg into grad_gates [B, 3h] and dL/dk into grad_hgates
// [B, 3h] (a view is fine); returns the part of dL/ds_{t-1} that does not pass through W_hh.
Tensor gru_gates_backward(const Tensor& grad_state, const Tensor& prev, const Tensor& rz, const Tensor& n,
                          const Tensor& h_n, Tensor grad_gates, Tensor grad_hgates) {
  const int64_t hid = prev.size(1);
  const Tensor reset = rz.narrow(1, 0, hid), update = rz.narrow(1, hid, hid);
  Tensor grad_update = grad_state * (prev - n);                      // s_t = n + z (s_{t-1} - n)
  Tensor grad_new = at::addcmul(grad_state, grad_state, update, -1);  // ds (1 - z)
  Tensor grad_pre_n = grad_gates.narrow(1, 2 * hid, hid);
  at::tanh_backward_out(grad_pre_n, grad_new, n);
  Tensor grad_pre_r = grad_gates.narrow(1, 0, hid), grad_pre_z = grad_gates.narrow(1, hid, hid);
  at::sigmoid_backward_out(grad_pre_r, grad_pre_n * h_n, reset);
  at::sigmoid_backward_out(grad_pre_z, grad_update, update);
  grad_hgates.narrow(1, 0, 2 * hid).copy_(grad_gates.narrow(1, 0, 2 * hid));
  Tensor grad_h_n = grad_hgates.narrow(1, 2 * hid, hid);
  at::mul_out(grad_h_n, grad_pre_n, reset);
  return grad_state * update;
}

Tensor flat(const Tensor& x) { return x.reshape({-1, x.size(-1)}); }

// Position t of an optional [T, ...] gradient.
std::optional<Tensor> at_step(const std::optional<Tensor>& grads, int64_t t) {
  return grads.has_value() ? std::optional<Tensor>((*grads)[t]) : std::nullopt;
}

// The decoder loops' sizes: positions T, sentences B, state h, source positions S, attention A, annotation D.
struct Sizes {
  int64_t steps, batch, hid, src_len, att, dim;
};

Sizes sizes_of(int64_t steps, const Tensor& s0, const Tensor& keys, const Tensor& values) {
  return {steps, s0.size(0), s0.size(1), keys.size(1), keys.size(2), values.size(2)};
}

// The state before each position, [T, B, h]: s0, then s_1 .. s_{T-1}.
Tensor previous(const Tensor& first, const Tensor& steps) {
  return at::cat({first.unsqueeze(0), steps.narrow(0, 0, steps.size(0) - 1)}, 0);
}

// --------------------------------------------------------------------------------------- Bahdanau
// Inputs: G [T, B, 3h], s0 [B, h], K [B, S, A], H [B, S, D], padding [B, S] (true on padding), wq2 = 2 W_q [A, h],
// v2 = 2 v [A], W_c [3h, D], W_hh [3h, h], b_hh [3h].
// Returns s [T, B, h], c [T, B, D], a [T, B, S], then what the backward needs: the queries 2 W_q s_{t-1}
// [T, B, A], rz [T, B, 2h], n [T, B, h], k_n [T, B, h].
std::vector<Tensor> bahdanau_forward(const Tensor& gates_in, const Tensor& s0, const Tensor& keys,
                                     const Tensor& values, const Tensor& padding, const Tensor& wq2,
                                     const Tensor& v2, const Tensor& w_context, const Tensor& w_hh,
                                     const Tensor& b_hh) {
  const auto [steps, batch, hid, src_len, att, dim] = sizes_of(gates_in.size(0), s0, keys, values);
  const auto opts = s0.options();
  Tensor states = at::empty({steps, batch, hid}, opts), contexts = at::empty({steps, batch, dim}, opts);
  Tensor weights = at::empty({steps, batch, src_len}, opts);
  Tensor queries = at::empty({steps, batch, att}, opts), rz = at::empty({steps, batch, 2 * hid}, opts);
  Tensor news = at::empty({steps, batch, hid}, opts), hidden_n = at::empty({steps, batch, hid}, opts);
  // s_{t-1} multiplies W_hh and 2 W_q: one product for both, [B, 3h + A]
  const Tensor w_prev_t = at::cat({w_hh, wq2}, 0).t();
  const Tensor b_prev = at::cat({b_hh, at::zeros({att}, opts)}, 0);
  const Tensor w_context_t = w_context.t();
  Tensor prev = s0;
  for (int64_t t = 0; t < steps; ++t) {
    const Tensor products = at::addmm(b_prev, prev, w_prev_t);
    queries[t].copy_(products.narrow(1, 3 * hid, att));
    attend(queries[t], keys, values, padding, v2, weights[t], contexts[t]);
    const Tensor gates = at::addmm(gates_in[t], contexts[t], w_context_t);
    gru_gates(gates, products.narrow(1, 0, 3 * hid), prev, rz[t], news[t], hidden_n[t], states[t]);
    prev = states[t];
  }
  return {states, contexts, weights, queries, rz, news, hidden_n};
}

// Gradients of the loss with respect to s [T, B, h], c [T, B, D] and, when defined, a [T, B, S] (time-major,
// contiguous); the forward's inputs and results. Returns the gradients of G, s0, K, H, wq2, v2, W_c, W_hh, b_hh.
std::vector<Tensor> bahdanau_backward(const Tensor& grad_states, const Tensor& grad_contexts,
                                      const std::optional<Tensor>& grad_weights, const Tensor& s0,
                                      const Tensor& keys, const Tensor& values, const Tensor& wq2,
                                      const Tensor& v2, const Tensor& w_context, const Tensor& w_hh,
                                      const Tensor& states, const Tensor& contexts, const Tensor& weights,
                                      const Tensor& queries, const Tensor& rz, const Tensor& news,
                                      const Tensor& hidden_n) {
  const auto [steps, batch, hid, src_len, att, dim] = sizes_of(states.size(0), s0, keys, values);
  const auto opts = s0.options();
  Tensor grad_gates = at::empty({steps, batch, 3 * hid}, opts);  // dL/dg_t (= dL/dG_t)
  // dL/dk_t and dL/d(2 W_q s_{t-1}) side by side, as s_{t-1}'s products are in the forward
  Tensor grad_products = at::empty({steps, batch, 3 * hid + att}, opts);
  const Tensor w_prev = at::cat({w_hh, wq2}, 0);
  Tensor grad_context_total = at::empty({steps, batch, dim}, opts);
  Tensor scratch = at::empty({batch, src_len}, opts);
  Tensor grad_keys = at::zeros({batch, src_len, att}, opts), grad_v2_rows = at::zeros({batch, att}, opts);
  const Tensor prevs = previous(s0, states);

  Tensor grad_state = at::zeros({batch, hid}, opts);
  for (int64_t t = steps - 1; t >= 0; --t) {
    grad_state.add_(grad_states[t]);
    Tensor grad_prev = gru_gates_backward(grad_state, prevs[t], rz[t], news[t], hidden_n[t], grad_gates[t],
                                          grad_products[t].narrow(1, 0, 3 * hid));
    // c_t feeds g_t and the loss
    Tensor grad_context = grad_context_total[t];
    at::addmm_out(grad_context, grad_contexts[t], grad_gates[t], w_context);
    attend_backward(grad_context, at_step(grad_weights, t), queries[t], keys, values, weights[t], v2, scratch,
                    grad_keys, grad_products[t].narrow(1, 3 * hid, att), grad_v2_rows);
    grad_state = grad_prev.addmm_(grad_products[t], w_prev);
  }

  Tensor grad_w_prev = at::mm(flat(grad_products).t(), flat(prevs));
  return {grad_gates,
          grad_state,
          grad_keys,
          at::bmm(weights.permute({1, 2, 0}), grad_context_total.transpose(0, 1)),  // sum_t a_t^T dc_t
          grad_w_prev.narrow(0, 3 * hid, att),
          grad_v2_rows.sum(0),
          at::mm(flat(grad_gates).t(), flat(contexts)),
          grad_w_prev.narrow(0, 0, 3 * hid),
          flat(grad_products).narrow(1, 0, 3 * hid).sum(0)};
}

// ------------------------------------------------------------------------------------------ Luong
// Inputs: G [T, B, 3h], s0 [B, h], K, H, padding, wq2, v2 as above, W_f [3h, h] (the cell's input-feeding
// columns), W_hh [3h, h], b_hh [3h], W_o [h, h + D], b_o [h], dropout masks m [T, B, h + D] (scaled; none: no
// dropout).
// Returns h~ [T, B, h], a [T, B, S], then what the backward needs: s [T, B, h], u = m [s; c] [T, B, h + D],
// the queries 2 W_q s_t [T, B, A], rz [T, B, 2h], n [T, B, h], k_n [T, B, h].
std::vector<Tensor> luong_forward(const Tensor& gates_in, const Tensor& s0, const Tensor& keys, const Tensor& values,
                                  const Tensor& padding, const Tensor& wq2, const Tensor& v2, const Tensor& w_feed,
                                  const Tensor& w_hh, const Tensor& b_hh, const Tensor& w_out, const Tensor& b_out,
                                  const std::optional<Tensor>& masks) {
  const auto [steps, batch, hid, src_len, att, dim] = sizes_of(gates_in.size(0), s0, keys, values);
  const auto opts = s0.options();
  Tensor outputs = at::empty({steps, batch, hid}, opts), weights = at::empty({steps, batch, src_len}, opts);
  Tensor states = at::empty({steps, batch, hid}, opts);
  Tensor inputs_out = at::empty({steps, batch, hid + dim}, opts);  // u_t = m_t [s_t; c_t]
  Tensor queries = at::empty({steps, batch, att}, opts), rz = at::empty({steps, batch, 2 * hid}, opts);
  Tensor news = at::empty({steps, batch, hid}, opts), hidden_n = at::empty({steps, batch, hid}, opts);
  const Tensor w_feed_t = w_feed.t(), w_out_t = w_out.t();
  // s_t multiplies 2 W_q now and W_hh at t + 1: one product for both, [B, 3h + A]
  const Tensor w_state_t = at::cat({w_hh, wq2}, 0).t();
  const Tensor b_state = at::cat({b_hh, at::zeros({att}, opts)}, 0);
  Tensor hgates = at::addmm(b_hh, s0, w_hh.t());
  Tensor prev = s0;
  for (int64_t t = 0; t < steps; ++t) {
    const Tensor gates = t == 0 ? gates_in[0] : at::addmm(gates_in[t], outputs[t - 1], w_feed_t);
    gru_gates(gates, hgates, prev, rz[t], news[t], hidden_n[t], states[t]);
    prev = states[t];
    const Tensor products = at::addmm(b_state, prev, w_state_t);
    hgates = products.narrow(1, 0, 3 * hid);
    queries[t].copy_(products.narrow(1, 3 * hid, att));
    Tensor u = inputs_out[t];
    attend(queries[t], keys, values, padding, v2, weights[t], u.narrow(1, hid, dim));
    u.narrow(1, 0, hid).copy_(prev);
    if (masks.has_value()) u.mul_((*masks)[t]);
    Tensor output = outputs[t];
    at::addmm_out(output, b_out, u, w_out_t).tanh_();
  }
  return {outputs, weights, states, inputs_out, queries, rz, news, hidden_n};
}

// Gradients of the loss with respect to h~ [T, B, h] and, when defined, a [T, B, S]; the forward's inputs and
// results. Returns the gradients of G, s0, K, H, wq2, v2, W_f, W_hh, b_hh, W_o, b_o.
std::vector<Tensor> luong_backward(const Tensor& grad_outputs, const std::optional<Tensor>& grad_weights,
                                   const Tensor& s0, const Tensor& keys, const Tensor& values, const Tensor& wq2,
                                   const Tensor& v2, const Tensor& w_feed, const Tensor& w_hh, const Tensor& w_out,
                                   const std::optional<Tensor>& masks, const Tensor& outputs, const Tensor& weights,
                                   const Tensor& states, const Tensor& inputs_out, const Tensor& queries,
                                   const Tensor& rz, const Tensor& news, const Tensor& hidden_n) {
  const auto [steps, batch, hid, src_len, att, dim] = sizes_of(states.size(0), s0, keys, values);
  const auto opts = s0.options();
  Tensor grad_gates = at::empty({steps, batch, 3 * hid}, opts);
  // What reaches s_t through its two products, side by side as in the forward: dL/dk_{t+1} (zero at the last
  // position) and dL/d(2 W_q s_t); dL/dk_0 (through s_0) apart.
  Tensor grad_products = at::empty({steps, batch, 3 * hid + att}, opts);
  Tensor grad_hgates_first = at::empty({batch, 3 * hid}, opts);
  grad_products[steps - 1].narrow(1, 0, 3 * hid).zero_();
  const Tensor w_state = at::cat({w_hh, wq2}, 0);
  Tensor grad_pre = at::empty({steps, batch, hid}, opts);  // dL/d(W_o u_t + b_o)
  Tensor grad_contexts = at::empty({steps, batch, dim}, opts);
  Tensor scratch = at::empty({batch, src_len}, opts);
  Tensor grad_keys = at::zeros({batch, src_len, att}, opts), grad_v2_rows = at::zeros({batch, att}, opts);
  const Tensor prevs = previous(s0, states);

  Tensor grad_carried = at::zeros({batch, hid}, opts), grad_feed = at::zeros({batch, hid}, opts);
  for (int64_t t = steps - 1; t >= 0; --t) {
    Tensor pre = grad_pre[t];
    at::tanh_backward_out(pre, grad_outputs[t] + grad_feed, outputs[t]);
    Tensor grad_u = at::mm(pre, w_out);
    if (masks.has_value()) grad_u.mul_((*masks)[t]);
    grad_contexts[t].copy_(grad_u.narrow(1, hid, dim));
    attend_backward(grad_contexts[t], at_step(grad_weights, t), queries[t], keys, values, weights[t], v2, scratch,
                    grad_keys, grad_products[t].narrow(1, 3 * hid, att), grad_v2_rows);
    Tensor grad_state = grad_carried.add_(grad_u.narrow(1, 0, hid)).addmm_(grad_products[t], w_state);
    Tensor grad_hgates = t > 0 ? grad_products[t - 1].narrow(1, 0, 3 * hid) : grad_hgates_first;
    grad_carried = gru_gates_backward(grad_state, prevs[t], rz[t], news[t], hidden_n[t], grad_gates[t], grad_hgates);
    if (t > 0) grad_feed = at::mm(grad_gates[t], w_feed);
  }

  const Tensor later_gates = flat(grad_gates.narrow(0, 1, steps - 1));  // h~_{t-1} feeds position t >= 1
  const Tensor grad_w_state = at::mm(flat(grad_products).t(), flat(states));
  return {grad_gates,
          grad_carried.addmm_(grad_hgates_first, w_hh),
          grad_keys,
          at::bmm(weights.permute({1, 2, 0}), grad_contexts.transpose(0, 1)),
          grad_w_state.narrow(0, 3 * hid, att),
          grad_v2_rows.sum(0),
          at::mm(later_gates.t(), flat(outputs.narrow(0, 0, steps - 1))),
          grad_w_state.narrow(0, 0, 3 * hid).addmm(grad_hgates_first.t(), s0),
          flat(grad_products).narrow(1, 0, 3 * hid).sum(0).add_(grad_hgates_first.sum(0)),
          at::mm(flat(grad_pre).t(), flat(inputs_out)),
          flat(grad_pre).sum(0)};
}

// ------------------------------------------------------------------------------- the encoder's BiGRU
// Both directions of one layer step together, from zero states (the encoder runs its backward direction over each
// sentence reversed within its length, so both read position t at step t). Inputs: G [T, 2, B, 3h] (W_ih x + b_ih
// of each direction), W_hh [2, 3h, h], b_hh [2, 3h]. Returns s [T, 2, B, h], then rz [T, 2, B, 2h], n and k_n
// [T, 2, B, h] for the backward.
std::vector<Tensor> bigru_forward(const Tensor& gates_in, const Tensor& w_hh, const Tensor& b_hh) {
  const int64_t steps = gates_in.size(0), batch = gates_in.size(2), hid = w_hh.size(2);
  const auto opts = gates_in.options();
  Tensor states = at::empty({steps, 2, batch, hid}, opts), rz = at::empty({steps, 2, batch, 2 * hid}, opts);
  Tensor news = at::empty({steps, 2, batch, hid}, opts), hidden_n = at::empty({steps, 2, batch, hid}, opts);
  const Tensor w_hh_t = w_hh.transpose(1, 2), bias = b_hh.unsqueeze(1);  // [2, h, 3h], [2, 1, 3h]
  Tensor prev = at::zeros({2, batch, hid}, opts);
  for (int64_t t = 0; t < steps; ++t) {
    const Tensor hgates = at::baddbmm(bias, prev, w_hh_t);  // [2, B, 3h]
    gru_gates(gates_in[t].view({2 * batch, 3 * hid}), hgates.view({2 * batch, 3 * hid}),
              prev.view({2 * batch, hid}), rz[t].view({2 * batch, 2 * hid}), news[t].view({2 * batch, hid}),
              hidden_n[t].view({2 * batch, hid}), states[t].view({2 * batch, hid}));
    prev = states[t];
  }
  return {states, rz, news, hidden_n};
}

// Gradient of the loss with respect to s [T, 2, B, h]; the forward's W_hh and results. Returns the gradients of
// G, W_hh and b_hh.
std::vector<Tensor> bigru_backward(const Tensor& grad_states, const Tensor& w_hh, const Tensor& states,
                                   const Tensor& rz, const Tensor& news, const Tensor& hidden_n) {
  const int64_t steps = states.size(0), batch = states.size(2), hid = states.size(3);
  const auto opts = states.options();
  Tensor grad_gates = at::empty({steps, 2, batch, 3 * hid}, opts), grad_hgates = at::empty_like(grad_gates);
  const Tensor prevs = previous(at::zeros({2, batch, hid}, opts), states);  // [T, 2, B, h]
  Tensor grad_state = at::zeros({2 * batch, hid}, opts);
  for (int64_t t = steps - 1; t >= 0; --t) {
    grad_state.add_(grad_states[t].view({2 * batch, hid}));
    Tensor grad_prev = gru_gates_backward(
        grad_state, prevs[t].view({2 * batch, hid}), rz[t].view({2 * batch, 2 * hid}),
        news[t].view({2 * batch, hid}), hidden_n[t].view({2 * batch, hid}),
        grad_gates[t].view({2 * batch, 3 * hid}), grad_hgates[t].view({2 * batch, 3 * hid}));
    grad_state = at::baddbmm(grad_prev.view({2, batch, hid}), grad_hgates[t], w_hh).view({2 * batch, hid});
  }
  // per direction: dW_hh = sum over positions and sentences of dk^T s_{t-1}
  const Tensor grad_hgates_rows = grad_hgates.permute({1, 0, 2, 3}).reshape({2, steps * batch, 3 * hid});
  const Tensor prev_rows = prevs.permute({1, 0, 2, 3}).reshape({2, steps * batch, hid});
  return {grad_gates, at::bmm(grad_hgates_rows.transpose(1, 2), prev_rows), grad_hgates_rows.sum(1)};
}

// ------------------------------------------------------------------------------------------- search
// One search step's attention in a model folded for search (nmt/model/folded.py), one pass per row: the row's
// weights a [S] over its sentence's source positions, then its folded mixing
//     out = T[y] + sum_j a_j P_j      P = W_ctx H, the annotations' products [B, S, D]; T[y] the table row of the
//                                     row's previous token [D]
// (eagerly a broadcast add, sigmoid_, the product with v, a masked softmax, a table lookup and a baddbmm, each a
// pass over memory). The working set's n sentences are rows sentences[0..n) of the keys, products and padding (search
// drops finished sentences from the index, not from those tensors); row r is a beam of the working set's sentence
// r / group: the beams of a sentence are consecutive rows.
template <typename scalar_t>
void search_attend_kernel(const Tensor& query, const Tensor& keys, const Tensor& products, const Tensor& padding,
                          const Tensor& sentences, const Tensor& v2, const Tensor& tables, const Tensor& tokens,
                          Tensor& weight, Tensor& mixed) {
  // An empty batch has no rows to share out (and no sentences to divide by).
  const int64_t rows = query.size(0), group = sentences.size(0) > 0 ? rows / sentences.size(0) : 1;
  const int64_t src_len = keys.size(1), att = keys.size(2), dim = products.size(2);
  const scalar_t* queries = query.data_ptr<scalar_t>();
  const scalar_t* key_rows = keys.data_ptr<scalar_t>();
  const scalar_t* product_rows = products.data_ptr<scalar_t>();
  const scalar_t* table_rows = tables.data_ptr<scalar_t>();
  const int64_t* previous = tokens.data_ptr<int64_t>();
  const int64_t* sentence_rows = sentences.data_ptr<int64_t>();
  const scalar_t* v = v2.data_ptr<scalar_t>();
  const bool* padded = padding.data_ptr<bool>();
  scalar_t* weights = weight.data_ptr<scalar_t>();
  scalar_t* outs = mixed.data_ptr<scalar_t>();
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> energy_buffer(att);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = sentence_rows[r / group];
      scalar_t* w = weights + r * src_len;
      attention_row(queries + r * att, key_rows + b * src_len * att, padded + b * src_len, v, src_len, att,
                    energy_buffer.data(), w);
      scalar_t* out = outs + r * dim;
      std::copy(table_rows + previous[r] * dim, table_rows + (previous[r] + 1) * dim, out);
      mix_row(w, product_rows + b * src_len * dim, padded + b * src_len, src_len, dim, out);
    }
  });
}

// Whether every value of the int64 tensor `ids` is in [0, size).
bool all_below(const Tensor& ids, int64_t size) {
  return ids.numel() == 0 || (ids.min().item<int64_t>() >= 0 && ids.max().item<int64_t>() < size);
}

// Returns the weights [rows, S] and the mixed products [rows, D] of `search_attend_kernel`.
std::vector<Tensor> search_attend(const Tensor& query, const Tensor& keys, const Tensor& products,
                                  const Tensor& padding, const Tensor& sentences, const Tensor& v2,
                                  const Tensor& tables, const Tensor& tokens) {
  check_layout("search_attend", {query, keys, products, padding, sentences, v2, tables, tokens}, {});
  TORCH_CHECK(sentences.scalar_type() == at::kLong && sentences.dim() == 1,
              "search_attend: the working set's sentences: int64 [n]");
  TORCH_CHECK(query.size(0) == 0 || (sentences.size(0) > 0 && query.size(0) % sentences.size(0) == 0),
              "search_attend: ", query.size(0), " query rows do not divide into the working set's ", sentences.size(0),
              " sentences");
  TORCH_CHECK(all_below(sentences, keys.size(0)), "search_attend: a sentence outside the keys' ", keys.size(0),
              " rows");
  TORCH_CHECK(tokens.scalar_type() == at::kLong && tokens.numel() == query.size(0),
              "search_attend: one int64 token per query row");
  TORCH_CHECK(tables.size(1) == products.size(2), "search_attend: the tables and the products differ in width");
  TORCH_CHECK(all_below(tokens, tables.size(0)), "search_attend: a token outside the tables' ", tables.size(0),
              " rows");
  Tensor weight = at::empty({query.size(0), keys.size(1)}, query.options());
  Tensor mixed = at::empty({query.size(0), products.size(2)}, query.options());
  AT_DISPATCH_FLOATING_TYPES(keys.scalar_type(), "search_attend", [&] {
    search_attend_kernel<scalar_t>(query, keys, products, padding, sentences, v2, tables, tokens, weight, mixed);
  });
  return {weight, mixed};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("bahdanau_forward", &bahdanau_forward, "the Bahdanau-order GRU loop: forward");
  m.def("bahdanau_backward", &bahdanau_backward, "the Bahdanau-order GRU loop: backward");
  m.def("luong_forward", &luong_forward, "the Luong-order GRU loop (input feeding): forward");
  m.def("luong_backward", &luong_backward, "the Luong-order GRU loop (input feeding): backward");
  m.def("bigru_forward", &bigru_forward, "the encoder's two GRU directions, stepped together: forward");
  m.def("bigru_backward", &bigru_backward, "the encoder's two GRU directions, stepped together: backward");
  m.def("search_attend", &search_attend, "one search step's attention and folded mixing");
}
