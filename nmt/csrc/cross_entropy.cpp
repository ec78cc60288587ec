// The label-smoothed cross-entropy of nmt/train/loss.py (its module docstring has the formulas), forward and
// backward, compiled: one pass per position over its V logits where ATen takes several over [positions, V], the
// largest tensor of a training step. The forward keeps only logsumexp per position (log_softmax writes all V
// log-probabilities); the backward writes the gradient from the logits in one pass.
//
// At a position with logits x, gold y, upstream gradient g and lse = log sum_v exp(x_v):
//     nll = lse - x_y;  loss = (1 - eps) nll + eps (lse - mean_v x_v)
//     dloss/dx_v = g (exp(x_v - lse) - eps / V) - g (1 - eps) [v = y]
// Positions are split between threads.

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include "vector_math.h"

#include <algorithm>
#include <cstdint>
#include <vector>

using at::Tensor;
using nmt::log_sum_exp;
using nmt::vector_exp;

namespace {

// Positions per task: each is a pass over V logits (thousands), so a few per task keep the threads balanced.
constexpr int64_t POSITIONS_PER_TASK = 8;

template <typename scalar_t>
void forward_kernel(const Tensor& logits, const Tensor& target, const Tensor& mask, double smoothing, Tensor& loss,
                    Tensor& nll, Tensor& lse) {
  const int64_t vocab = logits.size(1);
  const scalar_t* rows = logits.data_ptr<scalar_t>();
  const int64_t* gold = target.data_ptr<int64_t>();
  const bool* real = mask.data_ptr<bool>();
  scalar_t* losses = loss.data_ptr<scalar_t>();
  scalar_t* nlls = nll.data_ptr<scalar_t>();
  scalar_t* lses = lse.data_ptr<scalar_t>();
  const scalar_t eps = smoothing;
  at::parallel_for(0, logits.size(0), POSITIONS_PER_TASK, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> scratch(vocab);
    for (int64_t p = begin; p < end; ++p) {
      if (!real[p]) {
        losses[p] = nlls[p] = lses[p] = 0;
        continue;
      }
      TORCH_CHECK(gold[p] >= 0 && gold[p] < vocab, "cross_entropy_forward: target ", gold[p], " at position ", p,
                  " is outside the vocabulary of ", vocab);
      const scalar_t* __restrict__ x = rows + p * vocab;
      scalar_t top, sum_x = 0;
      lses[p] = log_sum_exp(x, vocab, scratch.data(), top);
#pragma omp simd reduction(+ : sum_x)
      for (int64_t v = 0; v < vocab; ++v) sum_x += x[v];
      nlls[p] = lses[p] - x[gold[p]];
      losses[p] = (1 - eps) * nlls[p] + eps * (lses[p] - sum_x / vocab);
    }
  });
}

template <typename scalar_t>
void backward_kernel(const Tensor& grad_loss, const Tensor& logits, const Tensor& target, const Tensor& mask,
                     const Tensor& lse, double smoothing, Tensor& grad) {
  const int64_t vocab = logits.size(1);
  const scalar_t* g_rows = grad_loss.data_ptr<scalar_t>();
  const scalar_t* rows = logits.data_ptr<scalar_t>();
  const int64_t* gold = target.data_ptr<int64_t>();
  const bool* real = mask.data_ptr<bool>();
  const scalar_t* lses = lse.data_ptr<scalar_t>();
  scalar_t* grads = grad.data_ptr<scalar_t>();
  const scalar_t eps = smoothing;
  at::parallel_for(0, logits.size(0), POSITIONS_PER_TASK, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      scalar_t* __restrict__ d = grads + p * vocab;
      const scalar_t g = real[p] ? g_rows[p] : scalar_t(0);
      if (g == 0) {
        std::fill(d, d + vocab, scalar_t(0));
        continue;
      }
      const scalar_t* __restrict__ x = rows + p * vocab;
      const scalar_t log_total = lses[p], uniform = eps / vocab;
      for (int64_t v = 0; v < vocab; ++v) d[v] = g * (vector_exp(x[v] - log_total) - uniform);
      d[gold[p]] -= g * (1 - eps);
    }
  });
}

// logits [P, V] (contiguous), target [P] int64, mask [P] bool (false: padding, loss and NLL 0). Returns the loss
// and the NLL per position [P], and logsumexp [P] for the backward.
std::vector<Tensor> cross_entropy_forward(const Tensor& logits, const Tensor& target, const Tensor& mask,
                                          double smoothing) {
  TORCH_CHECK(logits.dim() == 2 && logits.is_contiguous(), "cross_entropy_forward: logits must be [P, V], contiguous");
  Tensor loss = at::empty({logits.size(0)}, logits.options()), nll = at::empty_like(loss), lse = at::empty_like(loss);
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "cross_entropy_forward", [&] {
    forward_kernel<scalar_t>(logits, target.contiguous(), mask.contiguous(), smoothing, loss, nll, lse);
  });
  return {loss, nll, lse};
}

// The gradient of sum_p grad_loss[p] * loss[p] with respect to the logits, [P, V].
Tensor cross_entropy_backward(const Tensor& grad_loss, const Tensor& logits, const Tensor& target, const Tensor& mask,
                              const Tensor& lse, double smoothing) {
  Tensor grad = at::empty_like(logits);
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "cross_entropy_backward", [&] {
    backward_kernel<scalar_t>(grad_loss.contiguous(), logits, target.contiguous(), mask.contiguous(), lse, smoothing,
                              grad);
  });
  return grad;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("cross_entropy_forward", &cross_entropy_forward, "label-smoothed cross-entropy per position, and logsumexp");
  m.def("cross_entropy_backward", &cross_entropy_backward, "its gradient with respect to the logits");
}
