// Cross-channel LRN on CUDA. One thread per (n, spatial position) walks the channels with a running window sum;
// neighbouring threads handle neighbouring positions, so every channel step is a coalesced load.
#include "common.cuh"
#include "launchers.h"

namespace medcnn {
namespace cuda {
namespace {

template <int K, typename T>
__global__ void lrn_forward_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t N, int64_t C, int64_t S,
                                   int64_t before, int64_t after, double an, T beta, double k) {
  for (int64_t idx = grid_start(); idx < N * S; idx += grid_step()) {
    const int64_t off = (idx / S) * C * S + idx % S;
    const T* xp = x + off;
    T* yp = y + off;
    double sum = 0;  // window sum of x^2, in double so values leaving the window leave no rounding behind
    for (int64_t j = 0; j <= after && j < C; ++j) sum += double(xp[j * S]) * double(xp[j * S]);
    for (int64_t c = 0; c < C; ++c) {
      if (c > 0 && c + after < C) sum += double(xp[(c + after) * S]) * double(xp[(c + after) * S]);
      if (c > 0 && c - before - 1 >= 0) sum -= double(xp[(c - before - 1) * S]) * double(xp[(c - before - 1) * S]);
      yp[c * S] = xp[c * S] * neg_pow<K>(T(k + an * sum), beta);
    }
  }
}

// dx_i = g_i p_i - 2 an beta x_i sum_{c in [i - after, i + before]} q_c, p = s^-beta, q = g x p / s.
// Lagged single sweep: step c computes p_c (parked in dx) and q_c (in the workspace); step c finishes channel
// i = c - before, whose q window is complete by then. Same thread writes and reads its own values.
template <int K, typename T>
__global__ void lrn_backward_kernel(const T* __restrict__ g, const T* __restrict__ x, T* dx, T* q, int64_t N,
                                    int64_t C, int64_t S, int64_t before, int64_t after, double an, T beta,
                                    double k) {
  const T coef = T(2 * an * double(beta));
  for (int64_t idx = grid_start(); idx < N * S; idx += grid_step()) {
    const int64_t off = (idx / S) * C * S + idx % S;
    const T *xp = x + off, *gp = g + off;
    T *dp = dx + off, *qp = q + off;
    double xs = 0, qs = 0;
    for (int64_t j = 0; j <= after && j < C; ++j) xs += double(xp[j * S]) * double(xp[j * S]);
    for (int64_t c = 0; c < C + before; ++c) {
      if (c < C) {
        if (c > 0 && c + after < C) xs += double(xp[(c + after) * S]) * double(xp[(c + after) * S]);
        if (c > 0 && c - before - 1 >= 0) xs -= double(xp[(c - before - 1) * S]) * double(xp[(c - before - 1) * S]);
        const T s = T(k + an * xs), p = neg_pow<K>(s, beta);
        const T qc = gp[c * S] * xp[c * S] * p / s;
        dp[c * S] = p;
        qp[c * S] = qc;
        qs += double(qc);
      }
      const int64_t i = c - before;
      if (i < 0) continue;
      if (i - after - 1 >= 0) qs -= double(qp[(i - after - 1) * S]);
      dp[i * S] = gp[i * S] * dp[i * S] - coef * xp[i * S] * T(qs);
    }
  }
}

}  // namespace

template <typename T>
cudaError_t lrn_forward(const T* x, T* y, int64_t N, int64_t C, int64_t S, int64_t size, double alpha, double beta,
                        double k, cudaStream_t stream) {
  const unsigned int blocks = blocks_for(N * S);
  const int64_t before = size / 2, after = (size - 1) / 2;
  const double an = alpha / double(size);
#define MEDCNN_LRN_FWD(K) \
  lrn_forward_kernel<K, T><<<blocks, kThreads, 0, stream>>>(x, y, N, C, S, before, after, an, T(beta), k)
  switch (pow_kind(beta)) {
    case 0: MEDCNN_LRN_FWD(0); break;
    case 1: MEDCNN_LRN_FWD(1); break;
    case 2: MEDCNN_LRN_FWD(2); break;
    default: MEDCNN_LRN_FWD(3);
  }
#undef MEDCNN_LRN_FWD
  return cudaGetLastError();
}

template <typename T>
cudaError_t lrn_backward(const T* grad, const T* x, T* dx, T* workspace, int64_t N, int64_t C, int64_t S,
                         int64_t size, double alpha, double beta, double k, cudaStream_t stream) {
  const unsigned int blocks = blocks_for(N * S);
  const int64_t before = size / 2, after = (size - 1) / 2;
  const double an = alpha / double(size);
#define MEDCNN_LRN_BWD(K)                                                                                    \
  lrn_backward_kernel<K, T><<<blocks, kThreads, 0, stream>>>(grad, x, dx, workspace, N, C, S, before, after, an, \
                                                             T(beta), k)
  switch (pow_kind(beta)) {
    case 0: MEDCNN_LRN_BWD(0); break;
    case 1: MEDCNN_LRN_BWD(1); break;
    case 2: MEDCNN_LRN_BWD(2); break;
    default: MEDCNN_LRN_BWD(3);
  }
#undef MEDCNN_LRN_BWD
  return cudaGetLastError();
}

template cudaError_t lrn_forward<float>(const float*, float*, int64_t, int64_t, int64_t, int64_t, double, double,
                                        double, cudaStream_t);
template cudaError_t lrn_forward<double>(const double*, double*, int64_t, int64_t, int64_t, int64_t, double, double,
                                         double, cudaStream_t);
template cudaError_t lrn_backward<float>(const float*, const float*, float*, float*, int64_t, int64_t, int64_t,
                                         int64_t, double, double, double, cudaStream_t);
template cudaError_t lrn_backward<double>(const double*, const double*, double*, double*, int64_t, int64_t, int64_t,
                                          int64_t, double, double, double, cudaStream_t);

}  // namespace cuda
}  // namespace medcnn
