// TAO_HOST_DEVICE marks the math that csrc/ headers share between the CPU kernels and the CUDA device code: compiled
// for both sides under nvcc, plain inline functions elsewhere.
#pragma once

#ifdef __CUDACC__
#define TAO_HOST_DEVICE __host__ __device__
#else
#define TAO_HOST_DEVICE
#endif
