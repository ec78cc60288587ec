// Elementwise functions written for the compiler to vectorize, shared by the compiled kernels.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace nmt {

// exp(x) for float in a form compilers vectorize (no calls, no branches): x = n ln 2 + r with |r| <= ln 2 / 2,
// e^r by its degree-6 Taylor-like minimax polynomial (the Cephes coefficients, relative error under 2e-7), and 2^n
// written into the exponent bits. x is clamped to [-87, 87], where e^x and the sigmoid 1 / (1 + e^x) stay normal
// floats (subnormal ones are many times slower to compute with).
inline float vector_exp(float x) {
  x = x < -87.0f ? -87.0f : x;  // comparisons, not std::fmin / fmax, vectorize; a NaN stays NaN
  x = x > 87.0f ? 87.0f : x;
  constexpr float round_shift = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer in the low bits
  const float shifted = x * 1.44269504088896341f + round_shift;
  const float n = shifted - round_shift;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;  // ln 2 in two parts, for exactness
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits;
  std::memcpy(&bits, &shifted, sizeof bits);
  const int32_t scale_bits = (bits - 0x4B400000 + 127) << 23;  // the integer n sits in shifted's low bits
  float scale;
  std::memcpy(&scale, &scale_bits, sizeof scale);
  return p * scale;
}
inline double vector_exp(double x) { return std::exp(x); }  // float64 is the tests' reference precision

// sigmoid(x) with vector_exp.
template <typename scalar_t>
inline scalar_t vector_sigmoid(scalar_t x) {
  return 1 / (1 + vector_exp(-x));
}

// log sum_v exp(x_v) over the n values of x, the largest (written into top) subtracted before the exp so that
// nothing overflows. scratch: n values, where the exps are stored before they are summed (the exp vectorizes only
// where its results are stored).
template <typename scalar_t>
inline scalar_t log_sum_exp(const scalar_t* __restrict__ x, int64_t n, scalar_t* __restrict__ scratch,
                            scalar_t& top) {
  scalar_t largest = -std::numeric_limits<scalar_t>::infinity(), total = 0;
#pragma omp simd reduction(max : largest)
  for (int64_t v = 0; v < n; ++v) largest = std::max(largest, x[v]);
  for (int64_t v = 0; v < n; ++v) scratch[v] = vector_exp(x[v] - largest);
#pragma omp simd reduction(+ : total)
  for (int64_t v = 0; v < n; ++v) total += scratch[v];
  top = largest;
  return largest + std::log(total);
}

}  // namespace nmt
