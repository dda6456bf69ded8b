// Fused multi-task pretext loss on the CPU: forward (per-task losses and the weighted total) and
// backward (gradient of the logits for any upstream K-vector), semantics of
// bfdkern/ops/reference.py::per_task_losses.
//
// The ordinal pairs are never materialised. The present labels of each ordinal task are
// compacted first; the forward sums each unordered pair once, walking rows i and n-1-i together
// so that every work unit sees the same n-1 pairs; the backward sums, for each row, the pair
// gradient over every other row (the gradient of pair (j, i) with respect to s_i equals that of
// the ordered pair (i, j)), so each row writes only its own gradient and no atomics are needed.
// Work is split into fixed units whose partial sums are reduced in a fixed order: results do not
// depend on the thread count or on which thread ran a unit, and repeat bitwise. The units run on the
// calling thread and on helper threads only as far as other processes leave cores idle
// (work_units.h).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../common/loss_math.h"
#include "../common/loss_spec.h"
#include "fastmath.h"
#include "work_units.h"

// One clone per instruction-set level, picked at load time (x86-64 with GCC).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define BFDKERN_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define BFDKERN_SIMD_CLONES
#endif

namespace bfdkern::cpu {
namespace {

using namespace math;                    // the per-row and per-element math shared by the CPU and CUDA kernels
constexpr int64_t kRowsPerUnit = 64;     // rows of the per-row terms in one work unit
constexpr int64_t kPairsPerUnit = 8192;  // pair evaluations in one ordinal work unit
// Pair evaluations (1-3 ns each, vectorised) a thread must get before a helper is woken (waking one
// costs tens of microseconds). At 2^16 a batch of 256 (4 ordinal tasks: 131k pairs forward, 261k
// backward) takes two threads; B = 48 stays on one thread.
constexpr double kWorkPerThread = 1 << 16;

// ---- Thurstone pair sums over a contiguous range of compacted rows j --------------------------
// Float: vectorised with the approximations of fastmath.h. Double: libm, scalar, exact to rounding.

BFDKERN_SIMD_CLONES float pair_loss_sum_f32(float si, float yi, const float* __restrict s, const float* __restrict y,
                                            int64_t j0, int64_t j1, float inv_sigma, float delta) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (int64_t j = j0; j < j1; ++j) {
    const float d = (si - s[j]) * inv_sigma;
    const float tail = 0.5f * erfc_f32(std::fabs(d) * static_cast<float>(kInvSqrt2));
    const float p = d >= 0.0f ? 1.0f - tail : tail;  // Phi(d)
    const float q = d >= 0.0f ? tail : 1.0f - tail;  // 1 - Phi(d)
    const float g = yi > y[j] ? 1.0f : (yi < y[j] ? 0.0f : 0.5f);
    acc += 1.0f - std::sqrt(p * g + delta) - std::sqrt(q * (1.0f - g) + delta);
  }
  return acc;
}

BFDKERN_SIMD_CLONES float pair_grad_sum_f32(float si, float yi, const float* __restrict s, const float* __restrict y,
                                            int64_t j0, int64_t j1, float inv_sigma, float delta) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (int64_t j = j0; j < j1; ++j) {
    const float d = (si - s[j]) * inv_sigma;
    const float z = std::fabs(d) * static_cast<float>(kInvSqrt2);
    const float tail = 0.5f * erfc_f32(z);
    const float p = d >= 0.0f ? 1.0f - tail : tail;
    const float q = d >= 0.0f ? tail : 1.0f - tail;
    const float phi = static_cast<float>(kInvSqrt2Pi) * exp_f32(-z * z);
    const float g = yi > y[j] ? 1.0f : (yi < y[j] ? 0.0f : 0.5f);
    acc += phi * (0.5f * (1.0f - g) / std::sqrt(q * (1.0f - g) + delta) - 0.5f * g / std::sqrt(p * g + delta));
  }
  return acc;
}

inline double pair_loss_sum(double si, double yi, const double* s, const double* y, int64_t j0, int64_t j1,
                            double inv_sigma, double delta) {
  double acc = 0.0;
  for (int64_t j = j0; j < j1; ++j) {
    double p, q;
    const double d = (si - s[j]) * inv_sigma;
    thurstone_probs(d, p, q);
    acc += math::pair_loss(p, q, math::pair_target(yi, y[j]), delta);
  }
  return acc;
}

inline double pair_grad_sum(double si, double yi, const double* s, const double* y, int64_t j0, int64_t j1,
                            double inv_sigma, double delta) {
  double acc = 0.0;
  for (int64_t j = j0; j < j1; ++j) {
    double p, q;
    const double d = (si - s[j]) * inv_sigma;
    thurstone_probs(d, p, q);
    const double phi = kInvSqrt2Pi * std::exp(-0.5 * d * d);
    acc += math::pair_loss_grad(p, q, phi, math::pair_target(yi, y[j]), delta);
  }
  return acc;
}

inline float pair_loss_sum(float si, float yi, const float* s, const float* y, int64_t j0, int64_t j1, float inv_sigma,
                           float delta) {
  return pair_loss_sum_f32(si, yi, s, y, j0, j1, inv_sigma, delta);
}

inline float pair_grad_sum(float si, float yi, const float* s, const float* y, int64_t j0, int64_t j1, float inv_sigma,
                           float delta) {
  return pair_grad_sum_f32(si, yi, s, y, j0, j1, inv_sigma, delta);
}

// ---- per-row helpers -----------------------------------------------------------------------

// The present labels of one ordinal task, compacted.
template <typename T>
struct OrdinalRows {
  int64_t task = 0;
  std::vector<T> score, label;
  std::vector<int64_t> slot;  // row -> compacted index, -1 when missing
  int64_t n() const { return static_cast<int64_t>(score.size()); }
  double pairs() const { return 0.5 * static_cast<double>(n()) * static_cast<double>(n() - 1); }
};

template <typename scalar_t, typename T>
std::vector<OrdinalRows<T>> compact_ordinal(const LossSpec& spec, const scalar_t* z, const T* y, int64_t B) {
  const int64_t C = spec.num_columns, J = spec.num_targets;
  std::vector<OrdinalRows<T>> out;
  for (int64_t k : spec.ordinal_tasks) {
    OrdinalRows<T> rows;
    rows.task = k;
    rows.slot.assign(B, -1);
    for (int64_t b = 0; b < B; ++b) {
      const T label = y[b * J + spec.target_offsets[k]];
      if (std::isnan(label)) continue;
      rows.slot[b] = rows.n();
      rows.score.push_back(ordinal_score<scalar_t, T>(z + b * C + spec.col_offsets[k], spec.col_counts[k]));
      rows.label.push_back(label);
    }
    out.push_back(std::move(rows));
  }
  return out;
}

// Present (sample, column) cells of every task.
template <typename T>
std::vector<int64_t> present_counts(const LossSpec& spec, const T* y, int64_t B) {
  std::vector<int64_t> counts(spec.num_tasks, 0);
  const int64_t J = spec.num_targets;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < spec.num_tasks; ++k)
      for (int64_t r = 0; r < spec.target_count(k); ++r)
        counts[k] += !std::isnan(y[b * J + spec.target_offsets[k] + r]);
  return counts;
}

// Sum of the non-ordinal loss terms of rows [b0, b1) into acc[K].
template <typename scalar_t, typename T>
void row_loss_terms(const LossSpec& spec, const scalar_t* z, const T* y, int64_t b0, int64_t b1, double* acc) {
  const int64_t C = spec.num_columns, J = spec.num_targets;
  for (int64_t b = b0; b < b1; ++b) {
    for (int64_t k = 0; k < spec.num_tasks; ++k) {
      const int kind = spec.kinds[k];
      if (kind == kOrdinal) continue;
      const scalar_t* zk = z + b * C + spec.col_offsets[k];
      const T* yk = y + b * J + spec.target_offsets[k];
      const T gamma = static_cast<T>(spec.gammas[k]);
      const int64_t n = spec.col_counts[k];
      if (kind == kMultilabel) {
        for (int64_t r = 0; r < n; ++r) {
          if (std::isnan(yk[r])) continue;
          const T x = yk[r] > T(0.5) ? static_cast<T>(zk[r]) : -static_cast<T>(zk[r]);
          acc[k] += math::fidelity(math::log_sigmoid(x), gamma);
        }
      } else {
        if (std::isnan(yk[0])) continue;
        const int64_t cls = class_index(yk[0], n);
        const T lp = cls < 0 ? std::numeric_limits<T>::quiet_NaN()
                             : log_norm<scalar_t, T>(zk, n).log_prob(static_cast<T>(zk[cls]));
        acc[k] += math::fidelity(lp, gamma);
      }
    }
  }
}

// Gradient of rows [b0, b1) for every task; ordinal rows read their pair sums from ord_grad.
template <typename scalar_t, typename T>
void row_grads(const LossSpec& spec, const scalar_t* z, const T* y, const std::vector<OrdinalRows<T>>& ordinal,
               const std::vector<std::vector<T>>& ord_grad, const std::vector<T>& coef, int64_t b0, int64_t b1,
               scalar_t* gz) {
  const int64_t C = spec.num_columns, J = spec.num_targets;
  std::vector<T> prob;
  for (int64_t b = b0; b < b1; ++b) {
    int64_t slot = 0;
    for (int64_t k = 0; k < spec.num_tasks; ++k) {
      const int kind = spec.kinds[k];
      const int64_t n = spec.col_counts[k];
      const scalar_t* zk = z + b * C + spec.col_offsets[k];
      const T* yk = y + b * J + spec.target_offsets[k];
      scalar_t* gk = gz + b * C + spec.col_offsets[k];
      const T gamma = static_cast<T>(spec.gammas[k]);
      if (kind == kOrdinal) {
        const OrdinalRows<T>& rows = ordinal[slot];
        const int64_t i = rows.slot[b];
        const T gs = i < 0 ? T(0) : coef[k] * ord_grad[slot][i];  // d L / d s_b
        ++slot;
        if (n == 1) {
          gk[0] = static_cast<scalar_t>(gs);
          continue;
        }
        // s = sum_c c softmax_c:  d s / d z_c = softmax_c (c - s).
        prob.resize(n);
        T zmax = -std::numeric_limits<T>::infinity();
        for (int64_t c = 0; c < n; ++c) zmax = std::max(zmax, static_cast<T>(zk[c]));
        T sum = 0, weighted = 0;
        for (int64_t c = 0; c < n; ++c) {
          prob[c] = std::exp(static_cast<T>(zk[c]) - zmax);
          sum += prob[c];
          weighted += static_cast<T>(c) * prob[c];
        }
        const T s = weighted / sum;
        for (int64_t c = 0; c < n; ++c)
          gk[c] = static_cast<scalar_t>(i < 0 ? T(0) : gs * (prob[c] / sum) * (static_cast<T>(c) - s));
      } else if (kind == kMultilabel) {
        for (int64_t r = 0; r < n; ++r) {
          if (std::isnan(yk[r])) {
            gk[r] = scalar_t(0);
            continue;
          }
          const T sign = yk[r] > T(0.5) ? T(1) : T(-1);
          const T x = sign * static_cast<T>(zk[r]);
          const T dl = math::fidelity_grad(math::log_sigmoid(x), gamma);
          gk[r] = static_cast<scalar_t>(coef[k] * dl * sign * math::sigmoid_neg(x));
        }
      } else {
        if (std::isnan(yk[0])) {
          for (int64_t c = 0; c < n; ++c) gk[c] = scalar_t(0);
          continue;
        }
        const int64_t cls = class_index(yk[0], n);
        const LogNorm<T> norm = log_norm<scalar_t, T>(zk, n);
        const T lp = cls < 0 ? std::numeric_limits<T>::quiet_NaN() : norm.log_prob(static_cast<T>(zk[cls]));
        const T dl = coef[k] * math::fidelity_grad(lp, gamma);
        // d lp / d z_c = [c = y] - softmax_c
        for (int64_t c = 0; c < n; ++c)
          gk[c] =
              static_cast<scalar_t>(dl * ((c == cls ? T(1) : T(0)) - std::exp(norm.log_prob(static_cast<T>(zk[c])))));
      }
    }
  }
}

// A slice of work: ordinal task `slot`, rows [begin, end) (row pairs in the forward), or a block of
// rows for the per-row terms (slot = -1).
struct WorkUnit {
  int64_t slot, begin, end;
};

template <typename T>
int64_t rows_per_unit(const OrdinalRows<T>& rows) {
  return std::max<int64_t>(1, kPairsPerUnit / std::max<int64_t>(1, rows.n()));
}

// Runs body(u) for every unit on as many threads as give each at least kWorkPerThread (at most
// torch's intra-op thread count, and no more than the idle cores allow).
template <typename F>
void run_units(int64_t num_units, double pair_evaluations, const F& body) {
  const auto wanted = static_cast<int64_t>(std::ceil(pair_evaluations / kWorkPerThread));
  const int64_t threads = std::clamp<int64_t>(wanted, 1, std::max(at::get_num_threads(), 1));
  run_units_helped(num_units, threads - 1, body);
}

template <typename scalar_t, typename T>
void forward_impl(const LossSpec& spec, const scalar_t* z, const T* y, const T* w, int64_t B, T* per_task, T* total) {
  const int64_t K = spec.num_tasks;
  const auto ordinal = compact_ordinal<scalar_t, T>(spec, z, y, B);
  const auto counts = present_counts(spec, y, B);
  const T inv_sigma = static_cast<T>(1.0 / spec.sigma), delta = static_cast<T>(spec.delta);

  std::vector<WorkUnit> units;
  double work = 0;
  for (int64_t o = 0; o < static_cast<int64_t>(ordinal.size()); ++o) {
    const int64_t n = ordinal[o].n();
    const int64_t row_pairs = (n + 1) / 2, step = rows_per_unit(ordinal[o]);
    for (int64_t r = 0; r < row_pairs; r += step) units.push_back({o, r, std::min(row_pairs, r + step)});
    work += ordinal[o].pairs();
  }
  for (int64_t b = 0; b < B; b += kRowsPerUnit) units.push_back({-1, b, std::min(B, b + kRowsPerUnit)});
  work += static_cast<double>(B * spec.num_columns);

  const int64_t U = static_cast<int64_t>(units.size());
  std::vector<double> partial(U * K, 0.0);
  run_units(U, work, [&](int64_t u) {
    const WorkUnit& unit = units[u];
    double* acc = partial.data() + u * K;
    if (unit.slot < 0) {
      row_loss_terms<scalar_t, T>(spec, z, y, unit.begin, unit.end, acc);
      return;
    }
    const OrdinalRows<T>& rows = ordinal[unit.slot];
    const int64_t n = rows.n();
    const T* s = rows.score.data();
    const T* l = rows.label.data();
    double sum = 0;
    for (int64_t r = unit.begin; r < unit.end; ++r) {
      sum += pair_loss_sum(s[r], l[r], s, l, r + 1, n, inv_sigma, delta);
      const int64_t mirror = n - 1 - r;
      if (mirror != r) sum += pair_loss_sum(s[mirror], l[mirror], s, l, mirror + 1, n, inv_sigma, delta);
    }
    acc[rows.task] += sum;
  });

  std::vector<double> sums(K, 0.0);
  for (int64_t u = 0; u < U; ++u)
    for (int64_t k = 0; k < K; ++k) sums[k] += partial[u * K + k];
  for (const auto& rows : ordinal) {
    const double pairs = rows.pairs();
    per_task[rows.task] = pairs > 0 ? static_cast<T>(sums[rows.task] / pairs) : T(0);
  }
  T weighted = 0;
  for (int64_t k = 0; k < K; ++k) {
    if (spec.kinds[k] != kOrdinal)
      per_task[k] = counts[k] > 0 ? static_cast<T>(sums[k] / static_cast<double>(counts[k])) : T(0);
    weighted += w[k] * per_task[k];
  }
  *total = weighted;
}

template <typename scalar_t, typename T>
void backward_impl(const LossSpec& spec, const T* upstream, const scalar_t* z, const T* y, int64_t B, scalar_t* gz) {
  const int64_t K = spec.num_tasks;
  const auto ordinal = compact_ordinal<scalar_t, T>(spec, z, y, B);
  const auto counts = present_counts(spec, y, B);
  const T inv_sigma = static_cast<T>(1.0 / spec.sigma), delta = static_cast<T>(spec.delta);

  // Per-task scale of the summed terms: upstream / (number of terms), and 1/sigma for d/ds.
  std::vector<T> coef(K, T(0));
  for (int64_t k = 0; k < K; ++k)
    if (spec.kinds[k] != kOrdinal && counts[k] > 0) coef[k] = upstream[k] / static_cast<T>(counts[k]);
  for (const auto& rows : ordinal)
    if (rows.pairs() > 0) coef[rows.task] = static_cast<T>(upstream[rows.task] * inv_sigma / rows.pairs());

  // Pass 1: for every present ordinal row, the sum over all other rows of d pair_loss / d d.
  std::vector<std::vector<T>> ord_grad(ordinal.size());
  std::vector<WorkUnit> units;
  double work = 0;
  for (int64_t o = 0; o < static_cast<int64_t>(ordinal.size()); ++o) {
    const int64_t n = ordinal[o].n(), step = rows_per_unit(ordinal[o]);
    ord_grad[o].assign(n, T(0));
    for (int64_t i = 0; i < n; i += step) units.push_back({o, i, std::min(n, i + step)});
    work += 2 * ordinal[o].pairs();
  }
  run_units(static_cast<int64_t>(units.size()), work, [&](int64_t u) {
    const WorkUnit& unit = units[u];
    const OrdinalRows<T>& rows = ordinal[unit.slot];
    const T* s = rows.score.data();
    const T* l = rows.label.data();
    for (int64_t i = unit.begin; i < unit.end; ++i)
      ord_grad[unit.slot][i] = pair_grad_sum(s[i], l[i], s, l, 0, i, inv_sigma, delta) +
                               pair_grad_sum(s[i], l[i], s, l, i + 1, rows.n(), inv_sigma, delta);
  });

  // Pass 2: every row writes its own gradient, all tasks.
  const int64_t row_units = (B + kRowsPerUnit - 1) / kRowsPerUnit;
  run_units(row_units, static_cast<double>(B * spec.num_columns), [&](int64_t u) {
    const int64_t b0 = u * kRowsPerUnit;
    row_grads<scalar_t, T>(spec, z, y, ordinal, ord_grad, coef, b0, std::min(B, b0 + kRowsPerUnit), gz);
  });
}

at::ScalarType compute_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

std::tuple<at::Tensor, at::Tensor> multitask_loss_fwd_cpu(const at::Tensor& logits, const at::Tensor& targets,
                                                          const at::Tensor& weights, c10::IntArrayRef kinds,
                                                          c10::IntArrayRef col_offsets, c10::IntArrayRef col_counts,
                                                          c10::IntArrayRef target_offsets, c10::ArrayRef<double> gammas,
                                                          double sigma, double delta) {
  const LossSpec spec = parse_loss_spec(kinds, col_offsets, col_counts, target_offsets, gammas, sigma, delta);
  check_loss_tensors(spec, logits, targets, weights, "weights");
  const auto acc = compute_type(logits.scalar_type());
  const at::Tensor z = logits.contiguous();
  const at::Tensor y = targets.to(acc).contiguous();
  const at::Tensor w = weights.to(acc).contiguous();
  at::Tensor per_task = at::empty({spec.num_tasks}, logits.options().dtype(acc));
  at::Tensor total = at::empty({}, logits.options().dtype(acc));
  const int64_t B = z.size(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "multitask_loss_fwd_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    forward_impl<scalar_t, T>(spec, z.const_data_ptr<scalar_t>(), y.const_data_ptr<T>(), w.const_data_ptr<T>(), B,
                              per_task.mutable_data_ptr<T>(), total.mutable_data_ptr<T>());
  });
  return {per_task, total};
}

at::Tensor multitask_loss_bwd_cpu(const at::Tensor& grad_per_task, const at::Tensor& logits, const at::Tensor& targets,
                                  c10::IntArrayRef kinds, c10::IntArrayRef col_offsets, c10::IntArrayRef col_counts,
                                  c10::IntArrayRef target_offsets, c10::ArrayRef<double> gammas, double sigma,
                                  double delta) {
  const LossSpec spec = parse_loss_spec(kinds, col_offsets, col_counts, target_offsets, gammas, sigma, delta);
  check_loss_tensors(spec, logits, targets, grad_per_task, "grad_per_task");
  const auto acc = compute_type(logits.scalar_type());
  const at::Tensor z = logits.contiguous();
  const at::Tensor y = targets.to(acc).contiguous();
  const at::Tensor g = grad_per_task.to(acc).contiguous();
  at::Tensor grad = at::empty(z.sizes(), z.options());
  const int64_t B = z.size(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "multitask_loss_bwd_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    backward_impl<scalar_t, T>(spec, g.const_data_ptr<T>(), z.const_data_ptr<scalar_t>(), y.const_data_ptr<T>(), B,
                               grad.mutable_data_ptr<scalar_t>());
  });
  return grad;
}

}  // namespace
}  // namespace bfdkern::cpu

TORCH_LIBRARY_IMPL(bfdkern_C, CPU, m) {
  m.impl("multitask_loss_fwd", &bfdkern::cpu::multitask_loss_fwd_cpu);
  m.impl("multitask_loss_bwd", &bfdkern::cpu::multitask_loss_bwd_cpu);
}
