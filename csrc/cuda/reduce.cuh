// Deterministic block reductions: a fixed shuffle tree in each warp, then the warps' results
// summed in warp order, so repeat launches give bitwise identical sums.
#pragma once

#include <cuda_runtime.h>

namespace bfdkern::cuda {

constexpr int kWarpSize = 32;

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Sum of v over the block (kThreads threads, a multiple of 32); the result is valid in thread 0.
// `scratch` holds kThreads / 32 values. Every thread of the block must call it.
template <int kThreads, typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  static_assert(kThreads % kWarpSize == 0 && kThreads <= 1024, "block size must be a multiple of 32");
  constexpr int kWarps = kThreads / kWarpSize;
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T total = T(0);
  if (warp == 0) {
    total = lane < kWarps ? scratch[lane] : T(0);
    total = warp_sum(total);
  }
  __syncthreads();  // scratch may be reused right after
  return total;
}

// The larger of a and b, NaN when either is NaN (fmax would drop a NaN).
__device__ __forceinline__ double max_or_nan(double a, double b) { return (isnan(a) || isnan(b)) ? a + b : fmax(a, b); }

// max_or_nan of v over the block, valid in thread 0 (the same contract as block_sum).
template <int kThreads>
__device__ __forceinline__ double block_max_or_nan(double v, double* scratch) {
  constexpr int kWarps = kThreads / kWarpSize;
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1)
    v = max_or_nan(v, __shfl_down_sync(0xffffffffu, v, offset));
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double total = 0.0;
  if (warp == 0) {
    total = lane < kWarps ? scratch[lane] : 0.0;
#pragma unroll
    for (int offset = kWarpSize / 2; offset > 0; offset >>= 1)
      total = max_or_nan(total, __shfl_down_sync(0xffffffffu, total, offset));
  }
  __syncthreads();
  return total;
}

}  // namespace bfdkern::cuda
