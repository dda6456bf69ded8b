// Paired finite-difference perturbation on CUDA, semantics of bfdkern/ops/reference.py::perturb_pair.
//
// sum_squares: per-block partial sums of v^2 in double and maxima of |v| (a fixed grid for a given N,
//              so the sum is reproducible) -> finalize_norm: one block sums the partials in a fixed
//              order; when that sum can be trusted it writes eps and the flag, else (a v whose norm
//              nears the ends of double's range, or a non-finite v) it writes the scale max |v_i| ->
//              scaled_squares + finalize_scaled: sum (v / scale)^2 and write eps = r / (scale ||v /
//              scale||) and the flag; both return at once when no scale was written -> write_pair: one
//              elementwise pass writing theta + eps v and theta - eps v, with 16-byte loads and stores
//              when every pointer is aligned. All on the device, no host sync.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "../common/loss_spec.h"
#include "reduce.cuh"

namespace bfdkern::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kNormBlocks = 1024;  // most partial sums; fixed so the reduction order depends on N alone
constexpr int kFinalThreads = 1024;

template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T val[N];
};

template <int kVec, typename v_t>
__global__ void __launch_bounds__(kThreads)
    sum_squares_kernel(const v_t* __restrict__ v, int64_t n, bool vectorized, double* __restrict__ partial,
                       double* __restrict__ partial_max) {
  __shared__ double scratch[kThreads / kWarpSize];
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  double acc = 0.0, top = 0.0;
  int64_t done = 0;
  if (vectorized) {
    const int64_t nvec = n / kVec;
    const auto* vv = reinterpret_cast<const Vec<v_t, kVec>*>(v);
    for (int64_t i = tid; i < nvec; i += stride) {
      const Vec<v_t, kVec> x = vv[i];
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        const double d = static_cast<double>(x.val[e]);
        acc += d * d;
        top = max_or_nan(top, fabs(d));
      }
    }
    done = nvec * kVec;
  }
  for (int64_t i = done + tid; i < n; i += stride) {
    const double d = static_cast<double>(v[i]);
    acc += d * d;
    top = max_or_nan(top, fabs(d));
  }
  const double sum = block_sum<kThreads>(acc, scratch);
  const double block_top = block_max_or_nan<kThreads>(top, scratch);
  if (threadIdx.x == 0) {
    partial[blockIdx.x] = sum;
    partial_max[blockIdx.x] = block_top;
  }
}

// eps = radius / ||v|| when ||v|| is finite and normal in T and eps is finite (the guard of
// bfdkern/ops/reference.py::usable_norm); else eps = 0 and, unless v is zero, the flag.
template <typename T>
__device__ void write_eps(double norm64, double radius, double tiny, T* eps, bool* nonfinite) {
  const T norm = static_cast<T>(norm64);
  const T eps_raw = norm > T(0) ? static_cast<T>(radius) / norm : T(0);
  const bool ok = isfinite(norm) && static_cast<double>(norm) >= tiny && isfinite(eps_raw);
  *eps = ok ? eps_raw : T(0);
  *nonfinite = !ok && norm64 != 0.0;
}

// The plain sum of squares when it can be trusted (finite, and at least `trusted`: squares lost below
// the smallest normal double cannot reach its last bit, bfdkern/ops/reference.py::trusted_sum_of_squares):
// eps and the flag, and scale = 0. Else scale = max |v_i| for the rescaled pass (0 when v is zero or
// not finite: then eps and the flag are written here).
template <typename T>
__global__ void __launch_bounds__(kFinalThreads)
    finalize_norm_kernel(const double* __restrict__ partial, const double* __restrict__ partial_max, int parts,
                         double trusted, double radius, double tiny, T* __restrict__ eps, bool* __restrict__ nonfinite,
                         double* __restrict__ scale) {
  __shared__ double scratch[kFinalThreads / kWarpSize];
  double acc = 0.0, top = 0.0;
  for (int i = threadIdx.x; i < parts; i += kFinalThreads) {
    acc += partial[i];
    top = max_or_nan(top, partial_max[i]);
  }
  const double sum = block_sum<kFinalThreads>(acc, scratch);
  const double max_abs = block_max_or_nan<kFinalThreads>(top, scratch);
  if (threadIdx.x != 0) return;
  *scale = 0.0;
  if (isfinite(sum) && sum >= trusted) {
    write_eps<T>(sqrt(sum), radius, tiny, eps, nonfinite);
  } else if (!isfinite(max_abs) || max_abs == 0.0) {
    *eps = T(0);
    *nonfinite = max_abs != 0.0;  // a NaN or an inf in v; a zero v is no failure
  } else {
    *scale = max_abs;
  }
}

// Per-block sums of (v / scale)^2, when finalize_norm asked for them (scale > 0).
template <typename v_t>
__global__ void __launch_bounds__(kThreads)
    scaled_squares_kernel(const v_t* __restrict__ v, int64_t n, const double* __restrict__ scale,
                          double* __restrict__ partial) {
  __shared__ double scratch[kThreads / kWarpSize];
  const double s = *scale;
  if (s == 0.0) return;  // the same for every thread of the block
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  double acc = 0.0;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) {
    const double d = static_cast<double>(v[i]) / s;
    acc += d * d;
  }
  const double sum = block_sum<kThreads>(acc, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

template <typename T>
__global__ void __launch_bounds__(kFinalThreads)
    finalize_scaled_kernel(const double* __restrict__ partial, int parts, const double* __restrict__ scale,
                           double radius, double tiny, T* __restrict__ eps, bool* __restrict__ nonfinite) {
  __shared__ double scratch[kFinalThreads / kWarpSize];
  const double s = *scale;
  if (s == 0.0) return;
  double acc = 0.0;
  for (int i = threadIdx.x; i < parts; i += kFinalThreads) acc += partial[i];
  const double sum = block_sum<kFinalThreads>(acc, scratch);
  if (threadIdx.x == 0) write_eps<T>(s * sqrt(sum), radius, tiny, eps, nonfinite);
}

// out rows: theta + step, theta - step with step = eps * v (exactly 0 when eps is 0, so a NaN in v
// cannot leak through 0 * NaN).
template <int kVec, typename theta_t, typename v_t, typename T>
__global__ void __launch_bounds__(kThreads)
    write_pair_kernel(const theta_t* __restrict__ theta, const v_t* __restrict__ v, int64_t n, bool vectorized,
                      const T* __restrict__ eps_ptr, theta_t* __restrict__ plus, theta_t* __restrict__ minus) {
  const T eps = *eps_ptr;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  int64_t done = 0;
  if (vectorized) {
    const int64_t nvec = n / kVec;
    const auto* tv = reinterpret_cast<const Vec<theta_t, kVec>*>(theta);
    const auto* vv = reinterpret_cast<const Vec<v_t, kVec>*>(v);
    auto* pv = reinterpret_cast<Vec<theta_t, kVec>*>(plus);
    auto* mv = reinterpret_cast<Vec<theta_t, kVec>*>(minus);
    for (int64_t i = tid; i < nvec; i += stride) {
      const Vec<theta_t, kVec> t = tv[i];
      const Vec<v_t, kVec> d = vv[i];
      Vec<theta_t, kVec> p, m;
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        const T step = eps != T(0) ? eps * static_cast<T>(d.val[e]) : T(0);
        const T base = static_cast<T>(t.val[e]);
        p.val[e] = static_cast<theta_t>(base + step);
        m.val[e] = static_cast<theta_t>(base - step);
      }
      pv[i] = p;
      mv[i] = m;
    }
    done = nvec * kVec;
  }
  for (int64_t i = done + tid; i < n; i += stride) {
    const T step = eps != T(0) ? eps * static_cast<T>(v[i]) : T(0);
    const T base = static_cast<T>(theta[i]);
    plus[i] = static_cast<theta_t>(base + step);
    minus[i] = static_cast<theta_t>(base - step);
  }
}

bool aligned(const void* ptr, size_t bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

int blocks_for(int64_t work, int64_t cap) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((work + kThreads - 1) / kThreads, cap)));
}

template <typename theta_t, typename v_t>
void launch_perturb(const at::Tensor& theta, const at::Tensor& v, double radius, at::Tensor& out, at::Tensor& eps,
                    at::Tensor& nonfinite, at::Tensor& partial, cudaStream_t stream) {
  using T = at::opmath_type<theta_t>;
  constexpr int kVec = 16 / sizeof(theta_t);  // 16-byte accesses of theta and of the outputs
  const int64_t n = theta.size(0);
  const theta_t* t = theta.const_data_ptr<theta_t>();
  const v_t* d = v.const_data_ptr<v_t>();
  theta_t* plus = out.mutable_data_ptr<theta_t>();
  theta_t* minus = plus + n;
  const bool v_vec = aligned(d, sizeof(Vec<v_t, kVec>));
  const bool pair_vec = v_vec && aligned(t, 16) && aligned(plus, 16) && aligned(minus, 16);
  const int norm_blocks = blocks_for(n / kVec + 1, kNormBlocks);

  // Scratch: partial sums, partial maxima, partial scaled sums, the scale.
  double* sums = partial.mutable_data_ptr<double>();
  double* maxima = sums + kNormBlocks;
  double* scaled = maxima + kNormBlocks;
  double* scale = scaled + kNormBlocks;
  const double trusted =
      std::max<int64_t>(n, 1) * 4.0 * std::numeric_limits<double>::min() / std::numeric_limits<double>::epsilon();
  const double tiny = static_cast<double>(std::numeric_limits<T>::min());
  sum_squares_kernel<kVec, v_t><<<norm_blocks, kThreads, 0, stream>>>(d, n, v_vec, sums, maxima);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  finalize_norm_kernel<T><<<1, kFinalThreads, 0, stream>>>(sums, maxima, norm_blocks, trusted, radius, tiny,
                                                           eps.mutable_data_ptr<T>(),
                                                           nonfinite.mutable_data_ptr<bool>(), scale);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  scaled_squares_kernel<v_t><<<norm_blocks, kThreads, 0, stream>>>(d, n, scale, scaled);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  finalize_scaled_kernel<T><<<1, kFinalThreads, 0, stream>>>(
      scaled, norm_blocks, scale, radius, tiny, eps.mutable_data_ptr<T>(), nonfinite.mutable_data_ptr<bool>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (n == 0) return;
  const int pair_blocks = blocks_for(pair_vec ? n / kVec + 1 : n, int64_t{1} << 30);
  write_pair_kernel<kVec, theta_t, v_t, T>
      <<<pair_blocks, kThreads, 0, stream>>>(t, d, n, pair_vec, eps.const_data_ptr<T>(), plus, minus);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor> perturb_pair_out_cuda(const at::Tensor& theta, const at::Tensor& v, double radius,
                                                         at::Tensor& out) {
  check_perturb_tensors(theta, v, radius);
  check_perturb_out(theta, v, out);
  const c10::cuda::CUDAGuard guard(theta.device());
  const auto acc = theta.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor t = theta.contiguous();
  // v in theta's dtype is read as is; any other dtype is converted once to the compute dtype.
  const bool same = v.scalar_type() == theta.scalar_type();
  const at::Tensor vv = same ? v.contiguous() : v.to(acc).contiguous();
  at::Tensor eps = at::empty({}, t.options().dtype(acc));
  at::Tensor nonfinite = at::empty({}, t.options().dtype(at::kBool));
  at::Tensor partial = at::empty({3 * kNormBlocks + 1}, t.options().dtype(at::kDouble));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "perturb_pair_cuda", [&] {
    if (same) {
      launch_perturb<scalar_t, scalar_t>(t, vv, radius, out, eps, nonfinite, partial, stream);
    } else {
      launch_perturb<scalar_t, at::opmath_type<scalar_t>>(t, vv, radius, out, eps, nonfinite, partial, stream);
    }
  });
  return {eps, nonfinite};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> perturb_pair_cuda(const at::Tensor& theta, const at::Tensor& v,
                                                                 double radius) {
  return perturb_pair_fresh(theta, v, radius, perturb_pair_out_cuda);
}

}  // namespace
}  // namespace bfdkern::cuda

TORCH_LIBRARY_IMPL(bfdkern_C, CUDA, m) {
  m.impl("perturb_pair", &bfdkern::cuda::perturb_pair_cuda);
  m.impl("perturb_pair_out", &bfdkern::cuda::perturb_pair_out_cuda);
}
