#include "cpu_isa.h"

#include <ATen/Context.h>
#include <ATen/Version.h>  // at::get_cpu_capability

#include <string>

namespace tao_engine::cpu {

bool use_avx2_kernels() {
#if TAO_CPU_AVX2_KERNELS
  static const bool use = [] {
    const std::string capability = at::get_cpu_capability();
    return (capability == "AVX2" || capability == "AVX512") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
  }();
  return use;
#else
  return false;
#endif
}

}  // namespace tao_engine::cpu
