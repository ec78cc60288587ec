// Greedy search's choice at one step, from the model's logits (nmt/search.py, "the compiled choice"): per row, the
// most probable allowed next token and the hypothesis's log-prob extended by it, in one visit to the row's V logits
// while they are in cache. From log-probs, ATen takes log_softmax, the rules' writes, the add of the running
// log-prob and the max: each a pass over [rows, V] in memory, and a [rows, V] tensor written.
//
// At a row with logits x, running log-prob p and maximum length m (the search rules of nmt/search.py):
//     lse = log sum_v exp(x_v)            log p(v) = x_v - lse, so the most probable token is the largest logit
//     token = EOS                          when the step has reached m (EOS is then the only choice)
//           = the first v with the largest x_v among the tokens not forbidden, otherwise
//     p' = p + (x_token - lse)
// Rows are split between threads.

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include "vector_math.h"

#include <cstdint>
#include <vector>

using at::Tensor;
using nmt::log_sum_exp;

namespace {

// Rows per task: each is a pass over V logits (thousands), so a few per task keep the threads balanced.
constexpr int64_t ROWS_PER_TASK = 8;

// The first position of the largest x_v with forbidden[v] false (the caller made sure there is one).
template <typename scalar_t>
int64_t best_allowed(const scalar_t* x, const std::vector<char>& forbidden) {
  const int64_t vocab = static_cast<int64_t>(forbidden.size());
  int64_t best = -1;
  for (int64_t v = 0; v < vocab; ++v) {
    if (!forbidden[v] && (best < 0 || x[v] > x[best])) best = v;
  }
  return best;
}

template <typename scalar_t>
void greedy_choice_kernel(const Tensor& logits, const Tensor& log_prob, const Tensor& max_lens, int64_t step,
                          int64_t eos, const std::vector<char>& forbidden, Tensor& token, Tensor& extended) {
  const int64_t vocab = logits.size(1);
  const scalar_t* rows = logits.data_ptr<scalar_t>();
  const scalar_t* running = log_prob.data_ptr<scalar_t>();
  const int64_t* limits = max_lens.data_ptr<int64_t>();
  int64_t* tokens = token.data_ptr<int64_t>();
  scalar_t* extended_rows = extended.data_ptr<scalar_t>();
  at::parallel_for(0, logits.size(0), ROWS_PER_TASK, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> scratch(vocab);
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* x = rows + r * vocab;
      scalar_t top;
      const scalar_t lse = log_sum_exp(x, vocab, scratch.data(), top);
      int64_t choice = eos;
      if (step < limits[r]) {
        // the largest logit is the answer unless it is forbidden (or the row holds NaN, equal to nothing)
        choice = 0;
        while (choice < vocab && x[choice] != top) ++choice;
        if (choice == vocab || forbidden[choice]) choice = best_allowed(x, forbidden);
      }
      tokens[r] = choice;
      extended_rows[r] = running[r] + (x[choice] - lse);
    }
  });
}

// logits [R, V] (contiguous, float32 or float64), log_prob [R] the running log-probs, max_lens [R] int64 the most
// tokens per row, step: the tokens emitted so far, eos: EOS's id, forbidden [k] int64: ids never chosen at this
// step (EOS among them before the minimum length; the maximum length still forces EOS). Returns the chosen tokens
// [R] int64 and the extended log-probs [R].
std::vector<Tensor> greedy_choice(const Tensor& logits, const Tensor& log_prob, const Tensor& max_lens, int64_t step,
                                  int64_t eos, const Tensor& forbidden) {
  TORCH_CHECK(logits.dim() == 2 && logits.is_contiguous(), "greedy_choice: logits must be [rows, V], contiguous");
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  TORCH_CHECK(log_prob.dim() == 1 && log_prob.size(0) == rows && log_prob.scalar_type() == logits.scalar_type(),
              "greedy_choice: one running log-prob per row, of the logits' type");
  TORCH_CHECK(max_lens.dim() == 1 && max_lens.size(0) == rows && max_lens.scalar_type() == at::kLong,
              "greedy_choice: one int64 maximum length per row");
  TORCH_CHECK(eos >= 0 && eos < vocab, "greedy_choice: EOS id ", eos, " outside the vocabulary of ", vocab);
  TORCH_CHECK(forbidden.dim() == 1 && forbidden.scalar_type() == at::kLong, "greedy_choice: forbidden ids: int64 [k]");
  std::vector<char> forbidden_mask(vocab, 0);
  const Tensor forbidden_ids = forbidden.contiguous();
  for (int64_t i = 0; i < forbidden_ids.numel(); ++i) {
    const int64_t id = forbidden_ids.data_ptr<int64_t>()[i];
    TORCH_CHECK(id >= 0 && id < vocab, "greedy_choice: forbidden id ", id, " outside the vocabulary of ", vocab);
    forbidden_mask[id] = 1;
  }
  int64_t allowed = 0;
  for (const char f : forbidden_mask) allowed += !f;
  TORCH_CHECK(allowed > 0, "greedy_choice: every one of the ", vocab, " tokens is forbidden");
  Tensor token = at::empty({rows}, max_lens.options()), extended = at::empty_like(log_prob);
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "greedy_choice", [&] {
    greedy_choice_kernel<scalar_t>(logits, log_prob.contiguous(), max_lens.contiguous(), step, eos, forbidden_mask,
                                   token, extended);
  });
  return {token, extended};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("greedy_choice", &greedy_choice, "greedy search's next tokens and extended log-probs, from the logits");
}
