// Residual add + ReLU on CUDA: element-wise grid-stride loops over flat arrays (the binding brings both inputs to
// one memory format first).
#include "common.cuh"
#include "launchers.h"

namespace medcnn {
namespace cuda {
namespace {

template <typename T>
__global__ void add_relu_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ y, int64_t n) {
  for (int64_t i = grid_start(); i < n; i += grid_step()) {
    y[i] = apply_act<Act::ReLU>(a[i] + b[i], T(0));
  }
}

template <typename T>
__global__ void relu_backward_kernel(const T* __restrict__ g, const T* __restrict__ out, T* __restrict__ dx,
                                     int64_t n) {
  for (int64_t i = grid_start(); i < n; i += grid_step()) {
    dx[i] = out[i] > T(0) ? g[i] : T(0);
  }
}

}  // namespace

template <typename T>
cudaError_t add_relu_forward(const T* a, const T* b, T* y, int64_t n, cudaStream_t stream) {
  if (n > 0) add_relu_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(a, b, y, n);
  return cudaGetLastError();
}

template <typename T>
cudaError_t relu_backward(const T* grad, const T* out, T* dx, int64_t n, cudaStream_t stream) {
  if (n > 0) relu_backward_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(grad, out, dx, n);
  return cudaGetLastError();
}

template cudaError_t add_relu_forward<float>(const float*, const float*, float*, int64_t, cudaStream_t);
template cudaError_t add_relu_forward<double>(const double*, const double*, double*, int64_t, cudaStream_t);
template cudaError_t relu_backward<float>(const float*, const float*, float*, int64_t, cudaStream_t);
template cudaError_t relu_backward<double>(const double*, const double*, double*, int64_t, cudaStream_t);

}  // namespace cuda
}  // namespace medcnn
