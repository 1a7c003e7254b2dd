// Bias + activation with gain on CUDA: an element-wise grid-stride forward, and a backward whose dx pass is
// element-wise and whose dbias is one block per channel summing dx (in double) over N and the spatial positions.
// Layouts as the binding hands them over: contiguous (N, C, S) or channels-last (N, S, C).
#include "common.cuh"
#include "launchers.h"

namespace medcnn {
namespace cuda {
namespace {

// Channel of flat index i: (i / S) % C for (N, C, S), i % C for (N, S, C).
__device__ inline int64_t channel_of(int64_t i, int64_t C, int64_t S, bool channels_last) {
  return channels_last ? i % C : (i / S) % C;
}

template <Act A, typename T>
__global__ void bias_act_kernel(const T* __restrict__ x, const T* __restrict__ bias, T* __restrict__ y, int64_t n,
                                int64_t C, int64_t S, bool channels_last, T slope, T gain) {
  for (int64_t i = grid_start(); i < n; i += grid_step()) {
    const T b = bias != nullptr ? bias[channel_of(i, C, S, channels_last)] : T(0);
    y[i] = apply_act<A>(x[i] + b, slope) * gain;
  }
}

template <typename T>
__global__ void bias_act_dx_kernel(const T* __restrict__ g, const T* __restrict__ out, T* __restrict__ dx, int64_t n,
                                   T pos, T neg) {
  for (int64_t i = grid_start(); i < n; i += grid_step()) {
    dx[i] = g[i] * (out[i] > T(0) ? pos : neg);
  }
}

// One block per channel c: dbias[c] = sum over (n, s) of dx.
template <typename T>
__global__ void bias_act_dbias_kernel(const T* __restrict__ dx, T* __restrict__ dbias, int64_t N, int64_t C,
                                      int64_t S, bool channels_last) {
  __shared__ double shared[kThreads];
  const int64_t c = blockIdx.x;
  double sum = 0;
  for (int64_t k = threadIdx.x; k < N * S; k += blockDim.x) {
    const int64_t idx = channels_last ? k * C + c : ((k / S) * C + c) * S + k % S;
    sum += double(dx[idx]);
  }
  sum = block_sum(sum, shared);
  if (threadIdx.x == 0) dbias[c] = T(sum);
}

}  // namespace

template <typename T>
cudaError_t bias_act_forward(const T* x, const T* bias, T* y, int64_t N, int64_t C, int64_t S, bool channels_last,
                             Act act, double slope, double gain, cudaStream_t stream) {
  const int64_t n = N * C * S;
  if (n == 0) return cudaGetLastError();
  const unsigned int blocks = blocks_for(n);
  switch (act) {
    case Act::ReLU:
      bias_act_kernel<Act::ReLU, T><<<blocks, kThreads, 0, stream>>>(x, bias, y, n, C, S, channels_last, T(slope),
                                                                     T(gain));
      break;
    case Act::LeakyReLU:
      bias_act_kernel<Act::LeakyReLU, T><<<blocks, kThreads, 0, stream>>>(x, bias, y, n, C, S, channels_last,
                                                                          T(slope), T(gain));
      break;
    default:
      bias_act_kernel<Act::Identity, T><<<blocks, kThreads, 0, stream>>>(x, bias, y, n, C, S, channels_last,
                                                                         T(slope), T(gain));
      break;
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t bias_act_backward(const T* grad, const T* out, T* dx, T* dbias, int64_t N, int64_t C, int64_t S,
                              bool channels_last, Act act, double slope, double gain, cudaStream_t stream) {
  const int64_t n = N * C * S;
  const T pos = T(gain);
  const T neg = act == Act::Identity ? T(gain) : act == Act::ReLU ? T(0) : T(gain * slope);
  if (n > 0) {
    bias_act_dx_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(grad, out, dx, n, pos, neg);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  if (C > 0) {
    bias_act_dbias_kernel<T><<<static_cast<unsigned int>(C), kThreads, 0, stream>>>(dx, dbias, N, C, S,
                                                                                     channels_last);
  }
  return cudaGetLastError();
}

template cudaError_t bias_act_forward<float>(const float*, const float*, float*, int64_t, int64_t, int64_t, bool, Act,
                                             double, double, cudaStream_t);
template cudaError_t bias_act_forward<double>(const double*, const double*, double*, int64_t, int64_t, int64_t, bool,
                                              Act, double, double, cudaStream_t);
template cudaError_t bias_act_backward<float>(const float*, const float*, float*, float*, int64_t, int64_t, int64_t,
                                              bool, Act, double, double, cudaStream_t);
template cudaError_t bias_act_backward<double>(const double*, const double*, double*, double*, int64_t, int64_t,
                                               int64_t, bool, Act, double, double, cudaStream_t);

}  // namespace cuda
}  // namespace medcnn
