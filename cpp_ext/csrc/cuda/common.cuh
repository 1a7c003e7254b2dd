// Device helpers shared by the .cu files: launch geometry and x^-beta. CUDA headers only.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace medcnn {
namespace cuda {

constexpr int kThreads = 256;

// Grid-stride loops: `for (int64_t i = grid_start(); i < n; i += grid_step())`.
__device__ inline int64_t grid_start() { return blockIdx.x * int64_t(blockDim.x) + threadIdx.x; }
__device__ inline int64_t grid_step() { return int64_t(gridDim.x) * blockDim.x; }

// Blocks for a grid-stride loop over n items (capped: each thread then loops).
inline unsigned int blocks_for(int64_t n) {
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, 65535)));
}

// s^-beta: closed forms for 0.75 / 0.5 / 1 (AlexNet's, GoogLeNet's betas), pow otherwise. kind as in pow_kind().
template <int K, typename T>
__device__ inline T neg_pow(T s, T beta) {
  if constexpr (K == 0) {
    const T r = T(1) / sqrt(s);
    return r * sqrt(r);
  } else if constexpr (K == 1) {
    return T(1) / sqrt(s);
  } else if constexpr (K == 2) {
    return T(1) / s;
  } else {
    return pow(s, -beta);
  }
}

// Sum of v over the block (blockDim.x == kThreads); every thread gets the result.
__device__ inline double block_sum(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
    __syncthreads();
  }
  const double r = shared[0];
  __syncthreads();
  return r;
}

inline int pow_kind(double beta) { return beta == 0.75 ? 0 : beta == 0.5 ? 1 : beta == 1.0 ? 2 : 3; }

}  // namespace cuda
}  // namespace medcnn
