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

// Soft Dice statistics (cpu/dice.cpp has the maths): per (n, c) I = sum p*g, P = sum p, G = sum g over S pixels of
// contiguous (N, C, S) logits; target: int64 labels (N, S) (dense null) or a dense (N, C, S) target (labels null);
// activation: static_cast<int>(DiceAct) of checks.h (0 softmax, 1 sigmoid, 2 none). `workspace` holds
// soft_dice_workspace_size(N, C, S) doubles; *bad_label (zeroed by the caller) becomes 1 when a label lies outside
// [0, C). C <= kSoftDiceMaxChannels (shared-memory accumulators), else cudaErrorInvalidValue.
constexpr int64_t kSoftDiceMaxChannels = 256;

int64_t soft_dice_workspace_size(int64_t N, int64_t C, int64_t S);

template <typename T>
cudaError_t soft_dice_stats_forward(const T* logits, const int64_t* labels, const T* dense, T* inter, T* psum,
                                    T* gsum, double* workspace, int* bad_label, int64_t N, int64_t C, int64_t S,
                                    int activation, cudaStream_t stream);

// dlogits (contiguous (N, C, S)) from the (N, C) gradients of I and P, recomputing p per pixel.
template <typename T>
cudaError_t soft_dice_stats_backward(const T* grad_inter, const T* grad_psum, const T* logits, const int64_t* labels,
                                     const T* dense, T* dlogits, int64_t N, int64_t C, int64_t S, int activation,
                                     cudaStream_t stream);

// Batched affine warp (grid_sample(image, affine_grid(theta)) semantics; see cuda/affine_warp.cu). D == 1 for 2-D.
struct AffineWarpShape {
  int64_t N, C, D, H, W;
  int dims;            // 2 or 3
  bool channels_last;  // image (N, S, C) instead of (N, C, S)
};

// out = warp(image); bx/by/bz: affine_grid's normalized output coordinates per axis (bz null in 2-D); mask (any
// 1/2/4/8-byte dtype, mask_channels channels, may be null) is warped by nearest into mask_out. padding: 0 zeros,
// 1 border, 2 reflection.
template <typename T>
cudaError_t affine_warp_forward(const T* image, const T* theta, const T* bx, const T* by, const T* bz, T* out,
                                const void* mask, void* mask_out, int64_t mask_channels, int mask_elem_size,
                                bool mask_channels_last, AffineWarpShape shape, bool nearest, int padding,
                                bool align_corners, cudaStream_t stream);

// dimage += the transposed warp of grad (dimage zeroed by the caller).
template <typename T>
cudaError_t affine_warp_backward(const T* grad, const T* theta, const T* bx, const T* by, const T* bz, T* dimage,
                                 AffineWarpShape shape, bool nearest, int padding, bool align_corners,
                                 cudaStream_t stream);

}  // namespace cuda
}  // namespace medcnn
