// The schemas of the compiled ops (library bfdkern_C). The CPU kernels (csrc/cpu) and the CUDA
// kernels (csrc/cuda, in the separate bfdkern._cuda module) register implementations for them;
// the fake (meta) kernels live in bfdkern/ops/fake_kernels.py. The public ops bfdkern::multitask_loss
// and bfdkern::perturb_pair (bfdkern/ops) call these with the task layout of TaskSpec.layout (a
// KernelLayout, whose fields are the trailing arguments of the loss schemas, in order).
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(bfdkern_C, m) {
  m.set_python_module("bfdkern.ops.fake_kernels");
  m.def(
      "multitask_loss_fwd(Tensor logits, Tensor targets, Tensor weights, int[] kinds, int[] col_offsets, "
      "int[] col_counts, int[] target_offsets, float[] gammas, float sigma, float delta) "
      "-> (Tensor per_task, Tensor total)");
  m.def(
      "multitask_loss_bwd(Tensor grad_per_task, Tensor logits, Tensor targets, int[] kinds, int[] col_offsets, "
      "int[] col_counts, int[] target_offsets, float[] gammas, float sigma, float delta) -> Tensor grad_logits");
  m.def("perturb_pair(Tensor theta, Tensor v, float radius) -> (Tensor out, Tensor eps, Tensor nonfinite)");
  // The same into a caller's [2, N] workspace: a fresh N-sized output costs page faults on the CPU
  // at every bi-level step.
  m.def("perturb_pair_out(Tensor theta, Tensor v, float radius, Tensor(a!) out) -> (Tensor eps, Tensor nonfinite)");
}

// An importable (empty) Python module: importing bfdkern._C runs the registrations above.
extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "bfdkern's compiled CPU kernels", -1, nullptr};
  return PyModule_Create(&module);
}
