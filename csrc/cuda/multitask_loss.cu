// Fused multi-task pretext loss on CUDA, semantics of bfdkern/ops/reference.py::per_task_losses.
//
// Forward:  row_pass (one thread a row: ordinal scores, categorical / multilabel loss terms, label
//           counts; per-block partial sums) -> pair_loss (block per (ordinal task, tile of rows i),
//           threads over j > i) -> finalize (one block: fixed-order sums, means, weighted total).
// Backward: row_pass (scores, counts) -> pair_grad (block per (ordinal task, tile of rows i): the
//           sum over j != i of d pair_loss / d d for each row of the tile) -> grad_rows (one thread a
//           row writes its whole gradient row).
// No B x B tensor and no atomics: every reduction is a fixed tree over per-block partials, so
// repeat runs are bitwise identical. All launches go on the current stream; no host sync.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

#include "../common/loss_math.h"
#include "../common/loss_spec.h"
#include "reduce.cuh"

namespace bfdkern::cuda {
namespace {

constexpr int kMaxTasks = 64;
constexpr int kRowThreads = 256;   // rows per block in the row passes
constexpr int kPairThreads = 256;  // threads over j in the pair passes
constexpr int kTile = 16;          // rows i per pair block
using namespace math;              // the per-row and per-element math shared by the CPU and CUDA kernels

// The task layout, passed by value as a kernel parameter.
template <typename T>
struct TaskTable {
  int num_tasks, num_ordinal, rows, cols, tgts;
  int kind[kMaxTasks], col_off[kMaxTasks], col_cnt[kMaxTasks], tgt_off[kMaxTasks];
  int slot[kMaxTasks];  // ordinal slot of a task, -1 for the other kinds
  T gamma[kMaxTasks];
  T inv_sigma, delta;
};

template <typename T>
TaskTable<T> make_table(const LossSpec& spec, int64_t rows) {
  TORCH_CHECK_VALUE(spec.num_tasks <= kMaxTasks, "multitask_loss: the CUDA kernels take at most ", kMaxTasks,
                    " tasks, got ", spec.num_tasks);
  TORCH_CHECK_VALUE(rows <= std::numeric_limits<int>::max() / 2,
                    "multitask_loss: batch too large for the CUDA kernels");
  TaskTable<T> table{};
  table.num_tasks = static_cast<int>(spec.num_tasks);
  table.num_ordinal = static_cast<int>(spec.ordinal_tasks.size());
  table.rows = static_cast<int>(rows);
  table.cols = static_cast<int>(spec.num_columns);
  table.tgts = static_cast<int>(spec.num_targets);
  int slot = 0;
  for (int k = 0; k < table.num_tasks; ++k) {
    table.kind[k] = spec.kinds[k];
    table.col_off[k] = static_cast<int>(spec.col_offsets[k]);
    table.col_cnt[k] = static_cast<int>(spec.col_counts[k]);
    table.tgt_off[k] = static_cast<int>(spec.target_offsets[k]);
    table.slot[k] = spec.kinds[k] == kOrdinal ? slot++ : -1;
    table.gamma[k] = static_cast<T>(spec.gammas[k]);
  }
  table.inv_sigma = static_cast<T>(1.0 / spec.sigma);
  table.delta = static_cast<T>(spec.delta);
  return table;
}

// ---- kernels -------------------------------------------------------------------------------

// One thread a row. Writes the ordinal scores and labels ([num_ordinal, B], NaN label = missing) and,
// per block and task, the sum of the loss terms (kLoss) and the number of present labels.
template <typename scalar_t, typename T, bool kLoss>
__global__ void __launch_bounds__(kRowThreads)
    row_pass_kernel(TaskTable<T> table, const scalar_t* __restrict__ z, const T* __restrict__ y, T* __restrict__ scores,
                    T* __restrict__ labels, T* __restrict__ partial_loss, T* __restrict__ partial_count) {
  __shared__ T scratch[kRowThreads / kWarpSize];
  const int b = blockIdx.x * kRowThreads + threadIdx.x;
  const bool live = b < table.rows;
  for (int k = 0; k < table.num_tasks; ++k) {
    T loss = 0, count = 0;
    if (live) {
      const scalar_t* zk = z + static_cast<int64_t>(b) * table.cols + table.col_off[k];
      const T* yk = y + static_cast<int64_t>(b) * table.tgts + table.tgt_off[k];
      const int n = table.col_cnt[k];
      const T gamma = table.gamma[k];
      if (table.kind[k] == kOrdinal) {
        const int64_t at = static_cast<int64_t>(table.slot[k]) * table.rows + b;
        labels[at] = yk[0];
        scores[at] = ordinal_score<scalar_t, T>(zk, n);
        count = isnan(yk[0]) ? T(0) : T(1);
      } else if (table.kind[k] == kMultilabel) {
        for (int r = 0; r < n; ++r) {
          if (isnan(yk[r])) continue;
          count += T(1);
          if (kLoss) {
            const T x = yk[r] > T(0.5) ? static_cast<T>(zk[r]) : -static_cast<T>(zk[r]);
            loss += math::fidelity(math::log_sigmoid(x), gamma);
          }
        }
      } else if (!isnan(yk[0])) {
        count = T(1);
        if (kLoss) {
          const int cls = class_index(yk[0], n);
          const T lp = cls < 0 ? std::numeric_limits<T>::quiet_NaN()
                               : log_norm<scalar_t, T>(zk, n).log_prob(static_cast<T>(zk[cls]));
          loss = math::fidelity(lp, gamma);
        }
      }
    }
    if (kLoss) {
      const T s = block_sum<kRowThreads>(loss, scratch);
      if (threadIdx.x == 0) partial_loss[blockIdx.x * table.num_tasks + k] = s;
    }
    const T c = block_sum<kRowThreads>(count, scratch);
    if (threadIdx.x == 0) partial_count[blockIdx.x * table.num_tasks + k] = c;
  }
}

// Block (tile of kTile rows i, ordinal slot): sum of pair losses over present pairs i < j.
template <typename T>
__global__ void __launch_bounds__(kPairThreads)
    pair_loss_kernel(TaskTable<T> table, const T* __restrict__ scores, const T* __restrict__ labels,
                     T* __restrict__ partial_pair) {
  __shared__ T si[kTile], li[kTile];
  __shared__ T scratch[kPairThreads / kWarpSize];
  const int B = table.rows, i0 = blockIdx.x * kTile;
  const T* s = scores + static_cast<int64_t>(blockIdx.y) * B;
  const T* l = labels + static_cast<int64_t>(blockIdx.y) * B;
  if (threadIdx.x < kTile) {
    const int i = i0 + threadIdx.x;
    si[threadIdx.x] = i < B ? s[i] : T(0);
    li[threadIdx.x] = i < B ? l[i] : std::numeric_limits<T>::quiet_NaN();
  }
  __syncthreads();
  T acc = 0;
  for (int j = i0 + 1 + threadIdx.x; j < B; j += kPairThreads) {
    const T sj = s[j], lj = l[j];
    if (isnan(lj)) continue;
#pragma unroll
    for (int t = 0; t < kTile; ++t) {
      if (j <= i0 + t || isnan(li[t])) continue;
      T p, q;
      thurstone_probs((si[t] - sj) * table.inv_sigma, p, q);
      acc += math::pair_loss(p, q, math::pair_target(li[t], lj), table.delta);
    }
  }
  const T sum = block_sum<kPairThreads>(acc, scratch);
  if (threadIdx.x == 0) partial_pair[blockIdx.y * gridDim.x + blockIdx.x] = sum;
}

// One block: per-task means from the partials (fixed order), then total = sum_k w_k per_task_k.
template <typename T>
__global__ void finalize_loss_kernel(TaskTable<T> table, const T* __restrict__ partial_loss,
                                     const T* __restrict__ partial_count, int row_blocks,
                                     const T* __restrict__ partial_pair, int tiles, const T* __restrict__ weights,
                                     T* __restrict__ per_task, T* __restrict__ total) {
  __shared__ T losses[kMaxTasks];
  const int k = threadIdx.x;
  if (k < table.num_tasks) {
    T sum = 0, count = 0;
    for (int b = 0; b < row_blocks; ++b) {
      sum += partial_loss[b * table.num_tasks + k];
      count += partial_count[b * table.num_tasks + k];
    }
    T loss;
    if (table.kind[k] == kOrdinal) {
      T pair_sum = 0;
      for (int t = 0; t < tiles; ++t) pair_sum += partial_pair[table.slot[k] * tiles + t];
      const T pairs = count * (count - T(1)) * T(0.5);
      loss = pairs > T(0) ? pair_sum / pairs : T(0);
    } else {
      loss = count > T(0) ? sum / count : T(0);
    }
    losses[k] = loss;
    per_task[k] = loss;
  }
  __syncthreads();
  if (k == 0) {
    T weighted = 0;
    for (int i = 0; i < table.num_tasks; ++i) weighted += weights[i] * losses[i];
    *total = weighted;
  }
}

// Block (tile of kTile rows i, ordinal slot): for each present row i of the tile, the sum over
// present j != i of d pair_loss(i, j) / d d (the pair (j, i) contributes the same derivative).
template <typename T>
__global__ void __launch_bounds__(kPairThreads)
    pair_grad_kernel(TaskTable<T> table, const T* __restrict__ scores, const T* __restrict__ labels,
                     T* __restrict__ pair_grad) {
  constexpr int kWarps = kPairThreads / kWarpSize;
  __shared__ T si[kTile], li[kTile];
  __shared__ T warp_part[kTile][kWarps];
  const int B = table.rows, i0 = blockIdx.x * kTile;
  const T* s = scores + static_cast<int64_t>(blockIdx.y) * B;
  const T* l = labels + static_cast<int64_t>(blockIdx.y) * B;
  if (threadIdx.x < kTile) {
    const int i = i0 + threadIdx.x;
    si[threadIdx.x] = i < B ? s[i] : T(0);
    li[threadIdx.x] = i < B ? l[i] : std::numeric_limits<T>::quiet_NaN();
  }
  __syncthreads();
  T acc[kTile];
#pragma unroll
  for (int t = 0; t < kTile; ++t) acc[t] = T(0);
  for (int j = threadIdx.x; j < B; j += kPairThreads) {
    const T sj = s[j], lj = l[j];
    if (isnan(lj)) continue;
#pragma unroll
    for (int t = 0; t < kTile; ++t) {
      if (j == i0 + t || isnan(li[t])) continue;
      const T d = (si[t] - sj) * table.inv_sigma;
      T p, q;
      thurstone_probs(d, p, q);
      const T phi = static_cast<T>(kInvSqrt2Pi) * exp(T(-0.5) * d * d);
      acc[t] += math::pair_loss_grad(p, q, phi, math::pair_target(li[t], lj), table.delta);
    }
  }
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
#pragma unroll
  for (int t = 0; t < kTile; ++t) {
    const T v = warp_sum(acc[t]);
    if (lane == 0) warp_part[t][warp] = v;
  }
  __syncthreads();
  if (threadIdx.x < kTile && i0 + threadIdx.x < B) {
    T sum = 0;
    for (int w = 0; w < kWarps; ++w) sum += warp_part[threadIdx.x][w];
    pair_grad[static_cast<int64_t>(blockIdx.y) * B + i0 + threadIdx.x] = sum;
  }
}

// One thread a row: the whole gradient row. Each block first turns the label counts into the
// per-task scale upstream_k / (number of terms) (and 1/sigma for the ordinal d/ds).
template <typename scalar_t, typename T>
__global__ void __launch_bounds__(kRowThreads)
    grad_rows_kernel(TaskTable<T> table, const T* __restrict__ upstream, const scalar_t* __restrict__ z,
                     const T* __restrict__ y, const T* __restrict__ scores, const T* __restrict__ labels,
                     const T* __restrict__ pair_grad, const T* __restrict__ partial_count, int row_blocks,
                     scalar_t* __restrict__ grad) {
  __shared__ T coef[kMaxTasks];
  const int K = table.num_tasks;
  if (threadIdx.x < K) {
    const int k = threadIdx.x;
    T count = 0;
    for (int blk = 0; blk < row_blocks; ++blk) count += partial_count[blk * K + k];
    T scale = 0;
    if (table.kind[k] == kOrdinal) {
      const T pairs = count * (count - T(1)) * T(0.5);
      scale = pairs > T(0) ? upstream[k] * table.inv_sigma / pairs : T(0);
    } else {
      scale = count > T(0) ? upstream[k] / count : T(0);
    }
    coef[k] = scale;
  }
  __syncthreads();
  const int b = blockIdx.x * kRowThreads + threadIdx.x;
  if (b >= table.rows) return;
  for (int k = 0; k < K; ++k) {
    const int n = table.col_cnt[k];
    const scalar_t* zk = z + static_cast<int64_t>(b) * table.cols + table.col_off[k];
    const T* yk = y + static_cast<int64_t>(b) * table.tgts + table.tgt_off[k];
    scalar_t* gk = grad + static_cast<int64_t>(b) * table.cols + table.col_off[k];
    const T gamma = table.gamma[k];
    if (table.kind[k] == kOrdinal) {
      const int64_t at = static_cast<int64_t>(table.slot[k]) * table.rows + b;
      const bool present = !isnan(labels[at]);
      const T gs = present ? coef[k] * pair_grad[at] : T(0);  // d L / d s_b
      if (n == 1) {
        gk[0] = static_cast<scalar_t>(gs);
        continue;
      }
      // s = sum_c c softmax_c:  d s / d z_c = softmax_c (c - s).
      const T m = row_max<scalar_t, T>(zk, n);
      T sum = 0;
      for (int c = 0; c < n; ++c) sum += exp(static_cast<T>(zk[c]) - m);
      const T s = scores[at];
      for (int c = 0; c < n; ++c) {
        const T prob = exp(static_cast<T>(zk[c]) - m) / sum;
        gk[c] = static_cast<scalar_t>(present ? gs * prob * (static_cast<T>(c) - s) : T(0));
      }
    } else if (table.kind[k] == kMultilabel) {
      for (int r = 0; r < n; ++r) {
        if (isnan(yk[r])) {
          gk[r] = scalar_t(0);
          continue;
        }
        const T sign = yk[r] > T(0.5) ? T(1) : T(-1);
        const T x = sign * static_cast<T>(zk[r]);
        const T dl = math::fidelity_grad(math::log_sigmoid(x), gamma);
        gk[r] = static_cast<scalar_t>(coef[k] * dl * sign * math::sigmoid_neg(x));
      }
    } else {
      if (isnan(yk[0])) {
        for (int c = 0; c < n; ++c) gk[c] = scalar_t(0);
        continue;
      }
      const int cls = class_index(yk[0], n);
      const LogNorm<T> norm = log_norm<scalar_t, T>(zk, n);
      const T lp = cls < 0 ? std::numeric_limits<T>::quiet_NaN() : norm.log_prob(static_cast<T>(zk[cls]));
      const T dl = coef[k] * math::fidelity_grad(lp, gamma);
      // d lp / d z_c = [c = y] - softmax_c
      for (int c = 0; c < n; ++c)
        gk[c] = static_cast<scalar_t>(dl * ((c == cls ? T(1) : T(0)) - exp(norm.log_prob(static_cast<T>(zk[c])))));
    }
  }
}

// Scratch layout in one allocation of compute-dtype values.
struct Scratch {
  int64_t scores, labels, partial_loss, partial_count, pair, size;
};

Scratch plan_scratch(int64_t num_ordinal, int64_t B, int64_t K, int64_t row_blocks, int64_t tiles) {
  Scratch s{};
  s.scores = 0;
  s.labels = s.scores + num_ordinal * B;
  s.partial_loss = s.labels + num_ordinal * B;
  s.partial_count = s.partial_loss + row_blocks * K;
  s.pair = s.partial_count + row_blocks * K;  // forward: [num_ordinal, tiles]; backward: [num_ordinal, B]
  s.size = s.pair + num_ordinal * std::max<int64_t>(B, tiles) + 1;  // + 1: never an empty allocation
  return s;
}

at::ScalarType compute_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

std::tuple<at::Tensor, at::Tensor> multitask_loss_fwd_cuda(const at::Tensor& logits, const at::Tensor& targets,
                                                           const at::Tensor& weights, c10::IntArrayRef kinds,
                                                           c10::IntArrayRef col_offsets, c10::IntArrayRef col_counts,
                                                           c10::IntArrayRef target_offsets,
                                                           c10::ArrayRef<double> gammas, double sigma, double delta) {
  const LossSpec spec = parse_loss_spec(kinds, col_offsets, col_counts, target_offsets, gammas, sigma, delta);
  check_loss_tensors(spec, logits, targets, weights, "weights");
  const c10::cuda::CUDAGuard guard(logits.device());
  const auto acc = compute_type(logits.scalar_type());
  const at::Tensor z = logits.contiguous();
  const at::Tensor y = targets.to(acc).contiguous();
  const at::Tensor w = weights.to(acc).contiguous();
  const int64_t B = z.size(0), K = spec.num_tasks, num_ordinal = static_cast<int64_t>(spec.ordinal_tasks.size());
  const int row_blocks = static_cast<int>((B + kRowThreads - 1) / kRowThreads);
  const int tiles = static_cast<int>((B + kTile - 1) / kTile);
  const Scratch plan = plan_scratch(num_ordinal, B, K, row_blocks, tiles);
  at::Tensor scratch = at::empty({plan.size}, z.options().dtype(acc));
  at::Tensor per_task = at::empty({K}, z.options().dtype(acc));
  at::Tensor total = at::empty({}, z.options().dtype(acc));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "multitask_loss_fwd_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    const TaskTable<T> table = make_table<T>(spec, B);
    T* base = scratch.mutable_data_ptr<T>();
    row_pass_kernel<scalar_t, T, true><<<row_blocks, kRowThreads, 0, stream>>>(
        table, z.const_data_ptr<scalar_t>(), y.const_data_ptr<T>(), base + plan.scores, base + plan.labels,
        base + plan.partial_loss, base + plan.partial_count);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (num_ordinal > 0) {
      pair_loss_kernel<T><<<dim3(tiles, num_ordinal), kPairThreads, 0, stream>>>(table, base + plan.scores,
                                                                                 base + plan.labels, base + plan.pair);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    finalize_loss_kernel<T><<<1, kMaxTasks, 0, stream>>>(table, base + plan.partial_loss, base + plan.partial_count,
                                                         row_blocks, base + plan.pair, tiles, w.const_data_ptr<T>(),
                                                         per_task.mutable_data_ptr<T>(), total.mutable_data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {per_task, total};
}

at::Tensor multitask_loss_bwd_cuda(const at::Tensor& grad_per_task, const at::Tensor& logits, const at::Tensor& targets,
                                   c10::IntArrayRef kinds, c10::IntArrayRef col_offsets, c10::IntArrayRef col_counts,
                                   c10::IntArrayRef target_offsets, c10::ArrayRef<double> gammas, double sigma,
                                   double delta) {
  const LossSpec spec = parse_loss_spec(kinds, col_offsets, col_counts, target_offsets, gammas, sigma, delta);
  check_loss_tensors(spec, logits, targets, grad_per_task, "grad_per_task");
  const c10::cuda::CUDAGuard guard(logits.device());
  const auto acc = compute_type(logits.scalar_type());
  const at::Tensor z = logits.contiguous();
  const at::Tensor y = targets.to(acc).contiguous();
  const at::Tensor u = grad_per_task.to(acc).contiguous();
  const int64_t B = z.size(0), K = spec.num_tasks, num_ordinal = static_cast<int64_t>(spec.ordinal_tasks.size());
  const int row_blocks = static_cast<int>((B + kRowThreads - 1) / kRowThreads);
  const int tiles = static_cast<int>((B + kTile - 1) / kTile);
  const Scratch plan = plan_scratch(num_ordinal, B, K, row_blocks, tiles);
  at::Tensor scratch = at::empty({plan.size}, z.options().dtype(acc));
  at::Tensor grad = at::empty(z.sizes(), z.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "multitask_loss_bwd_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    const TaskTable<T> table = make_table<T>(spec, B);
    T* base = scratch.mutable_data_ptr<T>();
    row_pass_kernel<scalar_t, T, false><<<row_blocks, kRowThreads, 0, stream>>>(
        table, z.const_data_ptr<scalar_t>(), y.const_data_ptr<T>(), base + plan.scores, base + plan.labels,
        base + plan.partial_loss, base + plan.partial_count);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (num_ordinal > 0) {
      pair_grad_kernel<T><<<dim3(tiles, num_ordinal), kPairThreads, 0, stream>>>(table, base + plan.scores,
                                                                                 base + plan.labels, base + plan.pair);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    grad_rows_kernel<scalar_t, T><<<row_blocks, kRowThreads, 0, stream>>>(
        table, u.const_data_ptr<T>(), z.const_data_ptr<scalar_t>(), y.const_data_ptr<T>(), base + plan.scores,
        base + plan.labels, base + plan.pair, base + plan.partial_count, row_blocks, grad.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad;
}

}  // namespace
}  // namespace bfdkern::cuda

TORCH_LIBRARY_IMPL(bfdkern_C, CUDA, m) {
  m.impl("multitask_loss_fwd", &bfdkern::cuda::multitask_loss_fwd_cuda);
  m.impl("multitask_loss_bwd", &bfdkern::cuda::multitask_loss_bwd_cuda);
}
