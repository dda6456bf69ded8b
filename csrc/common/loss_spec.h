// The task layout the loss kernels receive (the fields of TaskSpec.layout, a KernelLayout), checked
// once on the host so that no kernel can read outside its tensors.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <tuple>
#include <vector>

namespace bfdkern {

enum TaskKind : int { kOrdinal = 0, kCategorical = 1, kBinary = 2, kMultilabel = 3 };

struct LossSpec {
  int64_t num_tasks = 0;
  std::vector<int> kinds;
  std::vector<int64_t> col_offsets, col_counts, target_offsets;
  std::vector<double> gammas;
  std::vector<int64_t> ordinal_tasks;  // task index of each ordinal slot
  double sigma = 0.5;
  double delta = 0.0;
  int64_t num_columns = 0;  // C
  int64_t num_targets = 0;  // J

  int64_t target_count(int64_t k) const { return kinds[k] == kMultilabel ? col_counts[k] : 1; }
};

inline LossSpec parse_loss_spec(c10::IntArrayRef kinds, c10::IntArrayRef col_offsets, c10::IntArrayRef col_counts,
                                c10::IntArrayRef target_offsets, c10::ArrayRef<double> gammas, double sigma,
                                double delta) {
  const int64_t k = static_cast<int64_t>(kinds.size());
  TORCH_CHECK_VALUE(k >= 1, "multitask_loss: the spec has no task");
  TORCH_CHECK_VALUE(
      static_cast<int64_t>(col_offsets.size()) == k && static_cast<int64_t>(col_counts.size()) == k &&
          static_cast<int64_t>(target_offsets.size()) == k && static_cast<int64_t>(gammas.size()) == k,
      "multitask_loss: kinds, col_offsets, col_counts, target_offsets and gammas must have one entry per task (", k,
      " tasks), got ", col_offsets.size(), ", ", col_counts.size(), ", ", target_offsets.size(), ", ", gammas.size());
  TORCH_CHECK_VALUE(sigma > 0, "multitask_loss: sigma must be > 0, got ", sigma);
  TORCH_CHECK_VALUE(delta >= 0, "multitask_loss: delta must be >= 0, got ", delta);
  LossSpec spec;
  spec.num_tasks = k;
  spec.sigma = sigma;
  spec.delta = delta;
  int64_t col = 0, tgt = 0;
  for (int64_t i = 0; i < k; ++i) {
    const int64_t kind = kinds[i];
    TORCH_CHECK_VALUE(kind >= 0 && kind <= 3, "multitask_loss: task ", i, ": unknown kind code ", kind,
                      " (0 ordinal, 1 categorical, 2 binary, 3 multilabel)");
    TORCH_CHECK_VALUE(col_counts[i] >= 1, "multitask_loss: task ", i, ": needs at least one column, got ",
                      col_counts[i]);
    TORCH_CHECK_VALUE(kind != kBinary || col_counts[i] == 2, "multitask_loss: task ", i,
                      ": a binary task has 2 columns, got ", col_counts[i]);
    TORCH_CHECK_VALUE(col_offsets[i] == col && target_offsets[i] == tgt, "multitask_loss: task ", i,
                      ": columns must be packed contiguously in task order (expected column ", col,
                      " and target column ", tgt, ", got ", col_offsets[i], " and ", target_offsets[i], ")");
    spec.kinds.push_back(static_cast<int>(kind));
    spec.col_offsets.push_back(col_offsets[i]);
    spec.col_counts.push_back(col_counts[i]);
    spec.target_offsets.push_back(target_offsets[i]);
    spec.gammas.push_back(gammas[i]);
    if (kind == kOrdinal) spec.ordinal_tasks.push_back(i);
    col += col_counts[i];
    tgt += spec.target_count(i);
  }
  spec.num_columns = col;
  spec.num_targets = tgt;
  return spec;
}

// logits [B, C], targets [B, J], a [K] vector (weights or upstream gradient): shapes, dtypes, devices.
inline void check_loss_tensors(const LossSpec& spec, const at::Tensor& logits, const at::Tensor& targets,
                               const at::Tensor& kvec, const char* kvec_name) {
  TORCH_CHECK_VALUE(logits.dim() == 2, "multitask_loss: logits must be [B, C], got ", logits.sizes());
  TORCH_CHECK_VALUE(logits.size(0) >= 1, "multitask_loss: empty batch (B = 0)");
  TORCH_CHECK_VALUE(logits.size(1) == spec.num_columns, "multitask_loss: logits have ", logits.size(1),
                    " columns but the spec needs ", spec.num_columns);
  TORCH_CHECK_VALUE(targets.dim() == 2 && targets.size(0) == logits.size(0) && targets.size(1) == spec.num_targets,
                    "multitask_loss: targets must be [B=", logits.size(0), ", J=", spec.num_targets, "], got ",
                    targets.sizes());
  TORCH_CHECK_VALUE(kvec.dim() == 1 && kvec.size(0) == spec.num_tasks, "multitask_loss: ", kvec_name,
                    " must be [K=", spec.num_tasks, "], got ", kvec.sizes());
  for (const at::Tensor* t : {&logits, &targets, &kvec}) {
    TORCH_CHECK_VALUE(at::isFloatingType(t->scalar_type()), "multitask_loss: logits, targets and ", kvec_name,
                      " must be floating point, got ", t->scalar_type());
    TORCH_CHECK_VALUE(t->device() == logits.device(), "multitask_loss: tensors on different devices: logits ",
                      logits.device(), ", targets ", targets.device(), ", ", kvec_name, " ", kvec.device());
  }
}

inline void check_perturb_tensors(const at::Tensor& theta, const at::Tensor& v, double radius) {
  TORCH_CHECK_VALUE(theta.dim() == 1 && v.dim() == 1, "perturb_pair: theta and v must be flat [N] buffers, got ",
                    theta.sizes(), " and ", v.sizes());
  TORCH_CHECK_VALUE(theta.size(0) == v.size(0), "perturb_pair: theta ", theta.sizes(), " and v ", v.sizes(),
                    " differ in shape");
  TORCH_CHECK_VALUE(at::isFloatingType(theta.scalar_type()) && at::isFloatingType(v.scalar_type()),
                    "perturb_pair: theta and v must be floating point, got ", theta.scalar_type(), " and ",
                    v.scalar_type());
  TORCH_CHECK_VALUE(theta.device() == v.device(), "perturb_pair: theta on ", theta.device(), " but v on ", v.device());
  TORCH_CHECK_VALUE(radius > 0, "perturb_pair: radius must be > 0, got ", radius);
}

// A caller's output for perturb_pair_out: [2, N], theta's dtype and device, contiguous, and not
// sharing memory with theta or v (rows are written while theta and v are still read).
inline void check_perturb_out(const at::Tensor& theta, const at::Tensor& v, const at::Tensor& out) {
  TORCH_CHECK_VALUE(out.dim() == 2 && out.size(0) == 2 && out.size(1) == theta.size(0),
                    "perturb_pair: out must be [2, ", theta.size(0), "], got ", out.sizes());
  TORCH_CHECK_VALUE(out.scalar_type() == theta.scalar_type(), "perturb_pair: out must be ", theta.scalar_type(),
                    " like theta, got ", out.scalar_type());
  TORCH_CHECK_VALUE(out.device() == theta.device(), "perturb_pair: out on ", out.device(), " but theta on ",
                    theta.device());
  TORCH_CHECK_VALUE(out.is_contiguous(), "perturb_pair: out must be contiguous");
  const auto* lo = static_cast<const char*>(out.const_data_ptr());
  const auto* hi = lo + out.nbytes();
  for (const at::Tensor* t : {&theta, &v}) {
    const auto* a = static_cast<const char*>(t->const_data_ptr());
    TORCH_CHECK_VALUE(out.numel() == 0 || a + t->nbytes() <= lo || a >= hi, "perturb_pair: out overlaps theta or v");
  }
}

// The functional perturb_pair from a device's out= form: the same pass into a fresh [2, N] output.
template <typename OutImpl>
std::tuple<at::Tensor, at::Tensor, at::Tensor> perturb_pair_fresh(const at::Tensor& theta, const at::Tensor& v,
                                                                  double radius, OutImpl out_impl) {
  check_perturb_tensors(theta, v, radius);
  at::Tensor out = at::empty({2, theta.size(0)}, theta.options());
  auto [eps, nonfinite] = out_impl(theta, v, radius, out);
  return {out, eps, nonfinite};
}

}  // namespace bfdkern
