// Paired finite-difference perturbation on the CPU: out = (theta + eps v, theta - eps v) with
// eps = radius / ||v||, semantics of bfdkern/ops/reference.py::perturb_pair. ||v||^2 is summed in
// double over fixed blocks reduced in a fixed order (thread-count independent); both rows are
// written in one pass and theta is never modified.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "../common/loss_spec.h"

namespace bfdkern::cpu {
namespace {

constexpr int64_t kBlock = 1 << 16;  // elements per reduction block and per parallel grain

template <typename v_t>
double sum_of_squares(const v_t* v, int64_t n) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(blocks, 0.0);
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i1 = std::min(n, (b + 1) * kBlock);
      double acc = 0.0;
#pragma omp simd reduction(+ : acc)
      for (int64_t i = b * kBlock; i < i1; ++i) {
        const double x = static_cast<double>(v[i]);
        acc += x * x;
      }
      partial[b] = acc;
    }
  });
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

template <typename theta_t, typename v_t, typename T>
void perturb_impl(const theta_t* theta, const v_t* v, int64_t n, double radius, theta_t* plus, theta_t* minus,
                  T* eps_out, bool* nonfinite_out) {
  const T norm = static_cast<T>(std::sqrt(sum_of_squares(v, n)));
  const bool finite = std::isfinite(norm);
  const bool ok = finite && norm > T(0);
  const T eps = ok ? static_cast<T>(radius) / norm : T(0);
  *eps_out = eps;
  *nonfinite_out = !finite;
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
