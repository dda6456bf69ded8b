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

}  // namespace bfdkern::cuda
