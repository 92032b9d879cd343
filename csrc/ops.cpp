// Every schema of tao_engine's compiled ops, in one place (DESIGN.md section 3). Kernels register per device with
// TORCH_LIBRARY_IMPL in csrc/cpu/*.cpp and csrc/cuda/*; autograd formulas and fake (meta) kernels are registered
// from Python in tao_engine/ops/_C_registrations.py, imported when tao_engine.ops.extension loads this module.
//
// The module itself is a bare CPython module: importing it runs the static TORCH_LIBRARY registrations of this
// shared object, and it exposes WITH_CUDA so the `cuda` backends' probe knows whether CUDA kernels were compiled.

#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(tao_engine, m) {
  // logits [N, V] fp32/bf16/fp16, targets [N] int64 -> [N] fp32 log_softmax(logits / temperature)[targets], <= 0.
  m.def("token_logprobs(Tensor logits, Tensor targets, float temperature) -> Tensor");
  // -> [N, V] in logits' dtype: grad_out[:, None] * (onehot(targets) - softmax(logits / temperature)) / temperature.
  m.def("token_logprobs_backward(Tensor grad_out, Tensor logits, Tensor targets, float temperature) -> Tensor");
}

namespace {

PyModuleDef tao_engine_c_module = {
    PyModuleDef_HEAD_INIT,
    "tao_engine._C",
    "tao_engine's compiled kernels; the ops live in torch.ops.tao_engine once this module is imported.",
    -1,
    nullptr,
};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* module = PyModule_Create(&tao_engine_c_module);
  if (module == nullptr) {
    return nullptr;
  }
#ifdef TAO_WITH_CUDA
  PyObject* with_cuda = Py_True;
#else
  PyObject* with_cuda = Py_False;
#endif
  // PyModule_AddObjectRef does not steal the reference (Python >= 3.10, our floor).
  if (PyModule_AddObjectRef(module, "WITH_CUDA", with_cuda) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
