// Per-element arithmetic of the pretext losses, shared by the CPU and CUDA kernels. Every formula
// mirrors bfdkern/ops/reference.py; comments give the derivative each gradient helper returns.
#pragma once

#include <math.h>

#include <cmath>
#include <limits>

#if defined(__CUDACC__)
#define BFDKERN_HD __host__ __device__ __forceinline__
#else
#define BFDKERN_HD inline
#endif

namespace bfdkern::math {

constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;

// ---- one row's task columns -------------------------------------------------------------------

template <typename scalar_t, typename T>
BFDKERN_HD T row_max(const scalar_t* z, int n) {
  T m = -std::numeric_limits<T>::infinity();
  for (int c = 0; c < n; ++c) m = fmax(m, static_cast<T>(z[c]));
  return m;
}

// Ordinal score: the column itself (L = 1) or the expected level sum_k k softmax_k.
template <typename scalar_t, typename T>
BFDKERN_HD T ordinal_score(const scalar_t* z, int levels) {
  if (levels == 1) return static_cast<T>(z[0]);
  const T m = row_max<scalar_t, T>(z, levels);
  T sum = 0, weighted = 0;
  for (int c = 0; c < levels; ++c) {
    const T e = exp(static_cast<T>(z[c]) - m);
    sum += e;
    weighted += static_cast<T>(c) * e;
  }
  return weighted / sum;
}

// log softmax of one row's task columns is (z_c - max) - log_sum: both terms exact enough that
// lp keeps full relative precision when the logits are large (+-1e4).
template <typename T>
struct LogNorm {
  T max, log_sum;
  BFDKERN_HD T log_prob(T zc) const { return (zc - max) - log_sum; }
};

template <typename scalar_t, typename T>
BFDKERN_HD LogNorm<T> log_norm(const scalar_t* z, int n) {
  const T m = row_max<scalar_t, T>(z, n);
  if (m == std::numeric_limits<T>::infinity() || m == -std::numeric_limits<T>::infinity()) return {T(0), m};
  T sum = 0;
  for (int c = 0; c < n; ++c) sum += exp(static_cast<T>(z[c]) - m);
  return {m, log(sum)};
}

// The class index of a categorical label, or -1 unless it is an integer in [0, n).
template <typename T>
BFDKERN_HD int class_index(T y, int n) {
  if (!(y >= T(0) && y < static_cast<T>(n) && y == floor(y))) return -1;
  return static_cast<int>(y);
}

// ---- Thurstone pairs ----------------------------------------------------------------------------

// p = Phi(d), q = 1 - Phi(d) through erfc of |d|: no cancellation for large |d|.
template <typename T>
BFDKERN_HD void thurstone_probs(T d, T& p, T& q) {
  const T tail = T(0.5) * erfc(fabs(d) * static_cast<T>(kInvSqrt2));
  p = d >= T(0) ? T(1) - tail : tail;
  q = d >= T(0) ? tail : T(1) - tail;
}

// ---- per-element losses -------------------------------------------------------------------------

// Fidelity loss from log p_y: (1 - p_y)^gamma (1 - sqrt(p_y)), with sqrt(p) = exp(lp / 2) and
// 1 - p = -expm1(lp), so that nothing cancels or overflows when p_y underflows.
template <typename T>
BFDKERN_HD T fidelity(T lp, T gamma) {
  T loss = T(1) - exp(T(0.5) * lp);
  if (gamma != T(0)) loss = pow(-expm1(lp), gamma) * loss;
  return loss;
}

// d fidelity / d lp.
template <typename T>
BFDKERN_HD T fidelity_grad(T lp, T gamma) {
  const T sq = exp(T(0.5) * lp);
  if (gamma == T(0)) return T(-0.5) * sq;
  const T a = -expm1(lp);
  const T p = exp(lp);
  return -gamma * pow(a, gamma - T(1)) * p * (T(1) - sq) - pow(a, gamma) * T(0.5) * sq;
}

// log sigmoid(x) without overflow.
template <typename T>
BFDKERN_HD T log_sigmoid(T x) {
  return (x < T(0) ? x : T(0)) - log1p(exp(-fabs(x)));
}

// sigmoid(-x) = d log_sigmoid(x) / dx.
template <typename T>
BFDKERN_HD T sigmoid_neg(T x) {
  const T e = exp(-fabs(x));
  return x >= T(0) ? e / (T(1) + e) : T(1) / (T(1) + e);
}

// Thurstone target of the ordered pair (i, j): 1, 0 or 0.5 (tie).
template <typename T>
BFDKERN_HD T pair_target(T yi, T yj) {
  return yi > yj ? T(1) : (yi < yj ? T(0) : T(0.5));
}

// Fidelity loss of a pair from p = Phi(d), q = 1 - Phi(d): 1 - sqrt(p g + delta) - sqrt(q (1 - g) + delta).
template <typename T>
BFDKERN_HD T pair_loss(T p, T q, T g, T delta) {
  return T(1) - sqrt(p * g + delta) - sqrt(q * (T(1) - g) + delta);
}

// d pair_loss / d d, with phi the standard normal density at d.
template <typename T>
BFDKERN_HD T pair_loss_grad(T p, T q, T phi, T g, T delta) {
  return phi * (T(0.5) * (T(1) - g) / sqrt(q * (T(1) - g) + delta) - T(0.5) * g / sqrt(p * g + delta));
}

}  // namespace bfdkern::math
