// CUDA launchers of the medcnn kernels: raw device pointers, sizes and a stream in, a cudaError_t out.
//
// Framework-free on purpose (CUDA runtime headers only): the .cu files compile with plain nvcc (`make
// cuda-check`), independently of torch's CUDA headers; cuda/bindings.cpp turns tensors into these arguments.
// Layout: contiguous (N, C, S) for the channel ops, flat for the element-wise ones. T is float or double.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../act.h"

namespace medcnn {
namespace cuda {

// y = x * (k + alpha / size * window_sum(x^2)) ^ -beta, window [c - size/2, c + (size-1)/2].
template <typename T>
cudaError_t lrn_forward(const T* x, T* y, int64_t N, int64_t C, int64_t S, int64_t size, double alpha, double beta,
                        double k, cudaStream_t stream);

// dx of lrn_forward; `workspace` holds N*C*S values of T.
template <typename T>
cudaError_t lrn_backward(const T* grad, const T* x, T* dx, T* workspace, int64_t N, int64_t C, int64_t S,
                         int64_t size, double alpha, double beta, double k, cudaStream_t stream);

// y = act((x - mean) / sqrt(var + eps) * weight + bias); weight/bias may be null (1 and 0). training: batch
// statistics are computed into mean_out/var_out (biased variance); otherwise running_mean/running_var are used
// and copied there. y may equal x (in-place form).
template <typename T>
cudaError_t bn_act_forward(const T* x, T* y, const T* weight, const T* bias, const T* running_mean,
                           const T* running_var, T* mean_out, T* var_out, int64_t N, int64_t C, int64_t S,
                           bool training, double eps, Act act, double slope, cudaStream_t stream);

// dx, dweight, dbias of bn_act_forward from grad and `saved` (x, or y when saved_is_output).
template <typename T>
cudaError_t bn_act_backward(const T* grad, const T* saved, const T* weight, const T* bias, const T* mean,
                            const T* var, T* dx, T* dweight, T* dbias, int64_t N, int64_t C, int64_t S, bool training,
                            double eps, Act act, double slope, bool saved_is_output, cudaStream_t stream);

// y = relu(a + b) and dx = grad * (out > 0), over n values.
template <typename T>
cudaError_t add_relu_forward(const T* a, const T* b, T* y, int64_t n, cudaStream_t stream);

template <typename T>
cudaError_t relu_backward(const T* grad, const T* out, T* dx, int64_t n, cudaStream_t stream);

// y = act(x + bias[c]) * gain over (N, C, S) (or (N, S, C) when channels_last); bias may be null (0).
template <typename T>
cudaError_t bias_act_forward(const T* x, const T* bias, T* y, int64_t N, int64_t C, int64_t S, bool channels_last,
                             Act act, double slope, double gain, cudaStream_t stream);

// dx = grad * gain * act'(out) (from the output: gain > 0, slope >= 0) and dbias[c] = sum of dx over (N, S).
template <typename T>
cudaError_t bias_act_backward(const T* grad, const T* out, T* dx, T* dbias, int64_t N, int64_t C, int64_t S,
                              bool channels_last, Act act, double slope, double gain, cudaStream_t stream);

}  // namespace cuda
}  // namespace medcnn
