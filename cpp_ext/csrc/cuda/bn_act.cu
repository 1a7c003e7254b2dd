// Batch norm + activation on CUDA: a block per channel reduces the statistics (or, in backward, the sums of dz and
// dz * xhat), then a grid-stride element-wise kernel normalizes + activates (or writes dx). The per-channel affine
// constants come from one device function, so backward recomputes exactly the z the forward activated.
#include "common.cuh"
#include "launchers.h"

namespace medcnn {
namespace cuda {
namespace {

template <typename T>
struct Affine {
  T scale, shift, mean, invstd, beta, inv_gamma;  // z = x * scale + shift; xhat = (x - mean) * invstd
};

template <typename T>
__device__ inline Affine<T> affine_of(int64_t c, const T* weight, const T* bias, const T* mean, const T* var,
                                      double eps) {
  const double gamma = weight ? double(weight[c]) : 1.0, beta = bias ? double(bias[c]) : 0.0;
  const double invstd = 1.0 / sqrt(double(var[c]) + eps), mu = double(mean[c]);
  const double scale = gamma * invstd;
  return Affine<T>{T(scale), T(beta - mu * scale), T(mu), T(invstd), T(beta), gamma != 0 ? T(1 / gamma) : T(0)};
}

// Biased mean/variance of channel c (blocks loop over channels), shifted by the channel's first value.
template <typename T>
__global__ void stats_kernel(const T* __restrict__ x, T* mean, T* var, int64_t N, int64_t C, int64_t S) {
  __shared__ double shared[kThreads];
  const int64_t M = N * S;
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    const double shift = double(x[c * S]);
    double s1 = 0, s2 = 0;
    for (int64_t m = threadIdx.x; m < M; m += blockDim.x) {
      const double v = double(x[((m / S) * C + c) * S + m % S]) - shift;
      s1 += v;
      s2 += v * v;
    }
    s1 = block_sum(s1, shared);
    s2 = block_sum(s2, shared);
    if (threadIdx.x == 0) {
      const double mu = s1 / double(M);
      mean[c] = T(shift + mu);
      var[c] = T(fmax(s2 / double(M) - mu * mu, 0.0));
    }
  }
}

template <Act A, typename T>
__global__ void apply_kernel(const T* x, T* y, const T* weight, const T* bias, const T* mean, const T* var,
                             int64_t N, int64_t C, int64_t S, double eps, T slope) {
  for (int64_t i = grid_start(); i < N * C * S; i += grid_step()) {
    const Affine<T> a = affine_of((i / S) % C, weight, bias, mean, var, eps);
    y[i] = apply_act<A>(x[i] * a.scale + a.shift, slope);
  }
}

template <Act A, bool FromOutput, typename T>
__device__ inline void recover(T v, T g, const Affine<T>& a, T slope, T& dz, T& xhat) {
  if constexpr (FromOutput) {
    dz = g * act_grad<A>(v, slope);
    xhat = (act_inverse<A>(v, slope != T(0) ? T(1) / slope : T(0)) - a.beta) * a.inv_gamma;
  } else {
    dz = g * act_grad<A>(v * a.scale + a.shift, slope);
    xhat = (v - a.mean) * a.invstd;
  }
}

template <Act A, bool FromOutput, typename T>
__global__ void grad_sums_kernel(const T* __restrict__ g, const T* __restrict__ v, const T* weight, const T* bias,
                                 const T* mean, const T* var, T* dweight, T* dbias, int64_t N, int64_t C, int64_t S,
                                 double eps, T slope) {
  __shared__ double shared[kThreads];
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    const Affine<T> a = affine_of(c, weight, bias, mean, var, eps);
    double sdz = 0, sdzx = 0;
    for (int64_t m = threadIdx.x; m < N * S; m += blockDim.x) {
      const int64_t i = ((m / S) * C + c) * S + m % S;
      T dz, xhat;
      recover<A, FromOutput>(v[i], g[i], a, slope, dz, xhat);
      sdz += double(dz);
      sdzx += double(dz) * double(xhat);
    }
    sdz = block_sum(sdz, shared);
    sdzx = block_sum(sdzx, shared);
    if (threadIdx.x == 0) {
      dbias[c] = T(sdz);
      dweight[c] = T(sdzx);
    }
  }
}

template <Act A, bool FromOutput, typename T>
__global__ void grad_input_kernel(const T* __restrict__ g, const T* __restrict__ v, const T* weight, const T* bias,
                                  const T* mean, const T* var, const T* dweight, const T* dbias, T* dx, int64_t N,
                                  int64_t C, int64_t S, bool training, double eps, T slope) {
  const T inv_m = T(1.0 / double(N * S));
  for (int64_t i = grid_start(); i < N * C * S; i += grid_step()) {
    const int64_t c = (i / S) % C;
    const Affine<T> a = affine_of(c, weight, bias, mean, var, eps);
    T dz, xhat;
    recover<A, FromOutput>(v[i], g[i], a, slope, dz, xhat);
    dx[i] = training ? a.scale * (dz - dbias[c] * inv_m - xhat * dweight[c] * inv_m) : a.scale * dz;
  }
}

template <Act A, typename T>
void launch_apply(const T* x, T* y, const T* w, const T* b, const T* mean, const T* var, int64_t N, int64_t C,
                  int64_t S, double eps, double slope, cudaStream_t stream) {
  apply_kernel<A, T><<<blocks_for(N * C * S), kThreads, 0, stream>>>(x, y, w, b, mean, var, N, C, S, eps, T(slope));
}

template <Act A, bool FromOutput, typename T>
void launch_backward(const T* g, const T* v, const T* w, const T* b, const T* mean, const T* var, T* dx, T* dw,
                     T* db, int64_t N, int64_t C, int64_t S, bool training, double eps, double slope,
                     cudaStream_t stream) {
  const unsigned int channel_blocks = static_cast<unsigned int>(C < 65535 ? C : 65535);
  grad_sums_kernel<A, FromOutput, T><<<channel_blocks, kThreads, 0, stream>>>(g, v, w, b, mean, var, dw, db, N, C, S,
                                                                               eps, T(slope));
  if (N * S > 0) {
    grad_input_kernel<A, FromOutput, T><<<blocks_for(N * C * S), kThreads, 0, stream>>>(
        g, v, w, b, mean, var, dw, db, dx, N, C, S, training, eps, T(slope));
  }
}

}  // namespace

template <typename T>
cudaError_t bn_act_forward(const T* x, T* y, const T* weight, const T* bias, const T* running_mean,
                           const T* running_var, T* mean_out, T* var_out, int64_t N, int64_t C, int64_t S,
                           bool training, double eps, Act act, double slope, cudaStream_t stream) {
  if (training && N * S > 0) {
    const unsigned int channel_blocks = static_cast<unsigned int>(C < 65535 ? C : 65535);
    stats_kernel<T><<<channel_blocks, kThreads, 0, stream>>>(x, mean_out, var_out, N, C, S);
  } else if (training) {  // empty batch: zero statistics (the caller leaves running stats alone)
    cudaMemsetAsync(mean_out, 0, C * sizeof(T), stream);
    cudaMemsetAsync(var_out, 0, C * sizeof(T), stream);
  } else {
    cudaMemcpyAsync(mean_out, running_mean, C * sizeof(T), cudaMemcpyDeviceToDevice, stream);
    cudaMemcpyAsync(var_out, running_var, C * sizeof(T), cudaMemcpyDeviceToDevice, stream);
  }
  if (N * C * S > 0) {
#define MEDCNN_BN_FWD(A) launch_apply<A>(x, y, weight, bias, mean_out, var_out, N, C, S, eps, slope, stream)
    switch (act) {
      case Act::ReLU: MEDCNN_BN_FWD(Act::ReLU); break;
      case Act::LeakyReLU: MEDCNN_BN_FWD(Act::LeakyReLU); break;
      default: MEDCNN_BN_FWD(Act::Identity);
    }
#undef MEDCNN_BN_FWD
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t bn_act_backward(const T* grad, const T* saved, const T* weight, const T* bias, const T* mean,
                            const T* var, T* dx, T* dweight, T* dbias, int64_t N, int64_t C, int64_t S, bool training,
                            double eps, Act act, double slope, bool saved_is_output, cudaStream_t stream) {
#define MEDCNN_BN_BWD(A, OUT)                                                                                  \
  launch_backward<A, OUT, T>(grad, saved, weight, bias, mean, var, dx, dweight, dbias, N, C, S, training, eps, \
                             slope, stream)
  if (saved_is_output) {
    if (act == Act::LeakyReLU) MEDCNN_BN_BWD(Act::LeakyReLU, true);
    else MEDCNN_BN_BWD(Act::Identity, true);  // the only other invertible activation
  } else {
    switch (act) {
      case Act::ReLU: MEDCNN_BN_BWD(Act::ReLU, false); break;
      case Act::LeakyReLU: MEDCNN_BN_BWD(Act::LeakyReLU, false); break;
      default: MEDCNN_BN_BWD(Act::Identity, false);
    }
  }
#undef MEDCNN_BN_BWD
  return cudaGetLastError();
}

#define MEDCNN_INSTANTIATE(T)                                                                                      \
  template cudaError_t bn_act_forward<T>(const T*, T*, const T*, const T*, const T*, const T*, T*, T*, int64_t,   \
                                         int64_t, int64_t, bool, double, Act, double, cudaStream_t);              \
  template cudaError_t bn_act_backward<T>(const T*, const T*, const T*, const T*, const T*, const T*, T*, T*, T*, \
                                          int64_t, int64_t, int64_t, bool, double, Act, double, bool, cudaStream_t);
MEDCNN_INSTANTIATE(float)
MEDCNN_INSTANTIATE(double)
#undef MEDCNN_INSTANTIATE

}  // namespace cuda
}  // namespace medcnn
