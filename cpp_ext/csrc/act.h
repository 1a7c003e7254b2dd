// Activations shared by the CPU kernels and the CUDA kernels: framework-free (no torch headers), so plain nvcc
// compiles it, and __host__ __device__ under nvcc. Compile-time Act parameters keep inner loops branch-free.
#pragma once

#ifdef __CUDACC__
#define MEDCNN_HD __host__ __device__
#else
#define MEDCNN_HD
#endif

namespace medcnn {

enum class Act : int { Identity = 0, ReLU = 1, LeakyReLU = 2 };

// `z < 0` (not `z > 0`) keeps NaN as NaN, like torch.relu / leaky_relu.
template <Act A, typename T>
MEDCNN_HD inline T apply_act(T z, T slope) {
  if constexpr (A == Act::ReLU) return z < T(0) ? T(0) : z;
  else if constexpr (A == Act::LeakyReLU) return z < T(0) ? z * slope : z;
  else return z;
}

// d act / d z, evaluated from z or from the output (same sign for every supported activation).
template <Act A, typename T>
MEDCNN_HD inline T act_grad(T z, T slope) {
  if constexpr (A == Act::ReLU) return z > T(0) ? T(1) : T(0);
  else if constexpr (A == Act::LeakyReLU) return z > T(0) ? T(1) : slope;
  else return T(1);
}

// z from the activation's output: identity, or leaky_relu with slope > 0 (checked by the caller).
template <Act A, typename T>
MEDCNN_HD inline T act_inverse(T y, T inv_slope) {
  if constexpr (A == Act::LeakyReLU) return y > T(0) ? y : y * inv_slope;
  else return y;
}

}  // namespace medcnn
