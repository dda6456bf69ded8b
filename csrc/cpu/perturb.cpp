// Paired finite-difference perturbation on the CPU: out = (theta + eps v, theta - eps v) with
// eps = radius / ||v||, semantics of bfdkern/ops/reference.py::perturb_pair. ||v||^2 is summed in
// double over fixed blocks reduced in a fixed order (thread-count independent), rescaled by max |v_i|
// when that sum under- or overflows; both rows are written in one pass and theta is never modified.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "../common/loss_spec.h"

namespace bfdkern::cpu {
namespace {

constexpr int64_t kBlock = 1 << 16;  // elements per reduction block and per parallel grain

// Per-block partial results reduced in block order (thread-count independent).
template <typename Partial, typename Block, typename Combine>
Partial reduce_blocks(int64_t n, Partial init, const Block& block, const Combine& combine) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<Partial> partial(blocks, init);
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) partial[b] = block(b * kBlock, std::min(n, (b + 1) * kBlock));
  });
  Partial total = init;
  for (const Partial& p : partial) total = combine(total, p);
  return total;
}

// sum of (factor v_i)^2 in double: factor 1 (the plain sum) or a power of two (an exact rescaling).
template <typename v_t>
double sum_of_squares(const v_t* v, int64_t n, double factor) {
  return reduce_blocks(
      n, 0.0,
      [&](int64_t i0, int64_t i1) {
        double acc = 0.0;
#pragma omp simd reduction(+ : acc)
        for (int64_t i = i0; i < i1; ++i) {
          const double x = static_cast<double>(v[i]) * factor;
          acc += x * x;
        }
        return acc;
      },
      [](double a, double b) { return a + b; });
}

// max |v_i|, NaN when v holds a NaN (inf when it holds an inf and no NaN).
template <typename v_t>
double max_abs(const v_t* v, int64_t n) {
  return reduce_blocks(
      n, 0.0,
      [&](int64_t i0, int64_t i1) {
        double m = 0.0;
        for (int64_t i = i0; i < i1; ++i) {
          const double x = std::fabs(static_cast<double>(v[i]));
          m = (x > m || std::isnan(x)) ? x : m;
          if (std::isnan(m)) break;
        }
        return m;
      },
      [](double a, double b) { return (b > a || std::isnan(b)) ? b : a; });
}

// ||v|| in double and whether v is finite. The plain sum of squares when it can be trusted (finite, and
// large enough that squares lost below the smallest normal double cannot reach its last bit: the test
// of bfdkern/ops/reference.py::trusted_sum_of_squares), else the norm of v scaled by the power of two
// nearest 1 / max|v_i| (exact): a second and third pass, only for a v whose norm nears the ends of
// double's range (or that is not finite).
template <typename v_t>
std::pair<double, bool> robust_norm(const v_t* v, int64_t n) {
  const double sum = sum_of_squares(v, n, 1.0);
  const double trusted =
      std::max<int64_t>(n, 1) * 4.0 * std::numeric_limits<double>::min() / std::numeric_limits<double>::epsilon();
  if (std::isfinite(sum) && sum >= trusted) return {std::sqrt(sum), true};
  const double scale = max_abs(v, n);
  if (!std::isfinite(scale)) return {scale, false};
  if (scale == 0.0) return {0.0, true};
  const int exponent = std::clamp(std::ilogb(scale), -1022, 1022);  // scaled entries below 4
  return {std::ldexp(std::sqrt(sum_of_squares(v, n, std::ldexp(1.0, -exponent))), exponent), true};
}

template <typename theta_t, typename v_t, typename T>
void perturb_impl(const theta_t* theta, const v_t* v, int64_t n, double radius, theta_t* plus, theta_t* minus,
                  T* eps_out, bool* nonfinite_out) {
  const auto [norm64, finite] = robust_norm(v, n);
  // eps = radius / ||v|| only when ||v|| is finite and normal in T and eps is finite (the guard of
  // bfdkern/ops/reference.py::usable_norm); else eps = 0 and, unless v is zero, the flag.
  const T norm = static_cast<T>(norm64);
  const T eps_raw = norm > T(0) ? static_cast<T>(radius) / norm : T(0);
  const bool ok = finite && std::isfinite(norm) && norm >= std::numeric_limits<T>::min() && std::isfinite(eps_raw);
  const T eps = ok ? eps_raw : T(0);
  *eps_out = eps;
  *nonfinite_out = !ok && norm64 != 0.0;
  at::parallel_for(0, n, kBlock, [&](int64_t i0, int64_t i1) {
    if (!ok) {  // eps = 0: both rows are theta (a NaN in v must not leak through 0 * NaN)
      for (int64_t i = i0; i < i1; ++i) plus[i] = minus[i] = theta[i];
      return;
    }
#pragma omp simd
    for (int64_t i = i0; i < i1; ++i) {
      const T t = static_cast<T>(theta[i]);
      const T step = eps * static_cast<T>(v[i]);
      plus[i] = static_cast<theta_t>(t + step);
      minus[i] = static_cast<theta_t>(t - step);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> perturb_pair_out_cpu(const at::Tensor& theta, const at::Tensor& v, double radius,
                                                        at::Tensor& out) {
  check_perturb_tensors(theta, v, radius);
  check_perturb_out(theta, v, out);
  const auto acc = theta.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor t = theta.contiguous();
  // v in theta's dtype is read as is; any other dtype is converted once to the compute dtype.
  const at::Tensor vv = v.scalar_type() == theta.scalar_type() ? v.contiguous() : v.to(acc).contiguous();
  const int64_t n = t.size(0);
  at::Tensor eps = at::empty({}, t.options().dtype(acc));
  at::Tensor nonfinite = at::empty({}, t.options().dtype(at::kBool));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "perturb_pair_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    scalar_t* rows = out.mutable_data_ptr<scalar_t>();
    if (vv.scalar_type() == t.scalar_type()) {
      perturb_impl<scalar_t, scalar_t, T>(t.const_data_ptr<scalar_t>(), vv.const_data_ptr<scalar_t>(), n, radius, rows,
                                          rows + n, eps.mutable_data_ptr<T>(), nonfinite.mutable_data_ptr<bool>());
    } else {
      perturb_impl<scalar_t, T, T>(t.const_data_ptr<scalar_t>(), vv.const_data_ptr<T>(), n, radius, rows, rows + n,
                                   eps.mutable_data_ptr<T>(), nonfinite.mutable_data_ptr<bool>());
    }
  });
  return {eps, nonfinite};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> perturb_pair_cpu(const at::Tensor& theta, const at::Tensor& v,
                                                                double radius) {
  return perturb_pair_fresh(theta, v, radius, perturb_pair_out_cpu);
}

}  // namespace
}  // namespace bfdkern::cpu

TORCH_LIBRARY_IMPL(bfdkern_C, CPU, m) {
  m.impl("perturb_pair", &bfdkern::cpu::perturb_pair_cpu);
  m.impl("perturb_pair_out", &bfdkern::cpu::perturb_pair_out_cpu);
}
