// An importable (empty) Python module: importing bfdkern._cuda runs the CUDA kernels'
// TORCH_LIBRARY_IMPL registrations (the schemas come from bfdkern._C, loaded first).
#include <Python.h>

extern "C" PyMODINIT_FUNC PyInit__cuda(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cuda", "bfdkern's compiled CUDA kernels", -1, nullptr};
  return PyModule_Create(&module);
}
