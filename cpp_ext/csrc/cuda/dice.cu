// Soft Dice statistics on CUDA (the maths: cpu/dice.cpp). Layout: contiguous (N, C, S) logits and dense targets,
// (N, S) int64 labels.
//
// Forward: block b of image n walks the pixels chunk, chunk + chunks, ... (kThreads at a time); each thread computes
// its pixel's softmax normalizers (max, 1 / sum of exp) once, then per channel p and g, reduced over the warp
// (shuffles, in double) into the warp's shared accumulators. Each block writes its (C, 3) partial sums to a
// workspace, and a second kernel adds the chunks of each (n, c) in order: deterministic, no atomics.
// Backward: one thread per pixel recomputes the normalizers and writes dz for every channel.
#include <type_traits>

#include "common.cuh"
#include "launchers.h"

namespace medcnn {
namespace cuda {
namespace {

constexpr int kSoftmax = 0;  // activation codes: static_cast<int>(DiceAct) (checks.h)
constexpr int kSigmoid = 1;
constexpr int kWarps = kThreads / 32;

// Per-pixel softmax normalizers: m = max_c z_c and inv = 1 / sum_c e^(z_c - m); z: the pixel in channel 0.
template <int A, typename T>
__device__ inline void normalizers(const T* z, int64_t S, int64_t C, T& m, T& inv) {
  m = T(0);
  inv = T(1);
  if constexpr (A == kSoftmax) {
    m = z[0];
    for (int64_t c = 1; c < C; ++c) m = z[c * S] > m ? z[c * S] : m;
    T sum = T(0);
    for (int64_t c = 0; c < C; ++c) sum += exp(z[c * S] - m);
    inv = T(1) / sum;
  }
}

template <int A, typename T>
__device__ inline T prob(T zc, T m, T inv) {
  if constexpr (A == kSoftmax) return exp(zc - m) * inv;
  else if constexpr (A == kSigmoid) return T(1) / (T(1) + exp(-zc));
  else return zc;
}

// g_c at a pixel: one-hot of its label (lab points at it) or the dense target (g: the pixel in channel 0).
template <bool Labels, typename T>
__device__ inline T target_at(const int64_t* lab, const T* g, int64_t c, int64_t S) {
  if constexpr (Labels) return *lab == c ? T(1) : T(0);
  else return g[c * S];
}

__device__ inline double warp_sum(double v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Block blockIdx.x = n * chunks + chunk; shared memory: kWarps * C * 3 doubles; partial: (N * chunks, C, 3).
template <int A, bool Labels, typename T>
__global__ void dice_stats_kernel(const T* __restrict__ z, const int64_t* __restrict__ lab, const T* __restrict__ g,
                                  double* __restrict__ partial, int* __restrict__ bad_label, int64_t C, int64_t S,
                                  int64_t chunks) {
  extern __shared__ double acc[];
  const int64_t n = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int64_t k = threadIdx.x; k < kWarps * C * 3; k += blockDim.x) acc[k] = 0;
  __syncthreads();
  // The loop bound is uniform across the warp (base, not the pixel), so every lane joins every shuffle.
  for (int64_t base = chunk * kThreads; base < S; base += chunks * kThreads) {
    const bool active = base + threadIdx.x < S;
    const int64_t s = active ? base + threadIdx.x : base;  // idle lanes read a valid pixel and add zeros
    const T* zp = z + n * C * S + s;
    const int64_t* lp = Labels ? lab + n * S + s : nullptr;
    const T* gp = Labels ? nullptr : g + n * C * S + s;
    if (Labels && active && (*lp < 0 || *lp >= C)) *bad_label = 1;
    T m, inv;
    normalizers<A>(zp, S, C, m, inv);
    for (int64_t c = 0; c < C; ++c) {
      const T p = active ? prob<A>(zp[c * S], m, inv) : T(0);
      const T gv = active ? target_at<Labels>(lp, gp, c, S) : T(0);
      const double inter = warp_sum(double(p * gv)), psum = warp_sum(double(p)), gsum = warp_sum(double(gv));
      if (lane == 0) {
        double* a = acc + (warp * C + c) * 3;
        a[0] += inter;
        a[1] += psum;
        a[2] += gsum;
      }
    }
  }
  __syncthreads();
  for (int64_t k = threadIdx.x; k < C * 3; k += blockDim.x) {
    double v = 0;
    for (int w = 0; w < kWarps; ++w) v += acc[w * C * 3 + k];
    partial[blockIdx.x * C * 3 + k] = v;
  }
}

// (n, c) totals over the chunks, in chunk order, rounded once to T.
template <typename T>
__global__ void dice_finalize_kernel(const double* __restrict__ partial, T* __restrict__ inter, T* __restrict__ psum,
                                     T* __restrict__ gsum, int64_t N, int64_t C, int64_t chunks) {
  for (int64_t i = grid_start(); i < N * C; i += grid_step()) {
    const int64_t n = i / C, c = i % C;
    double sums[3] = {0, 0, 0};
    for (int64_t b = 0; b < chunks; ++b) {
      const double* p = partial + ((n * chunks + b) * C + c) * 3;
      sums[0] += p[0];
      sums[1] += p[1];
      sums[2] += p[2];
    }
    inter[i] = T(sums[0]);
    psum[i] = T(sums[1]);
    gsum[i] = T(sums[2]);
  }
}

// dz for one pixel per thread: a_c = dI_c g_c + dP_c; softmax dz_c = p_c (a_c - sum_k p_k a_k), sigmoid
// a_c p_c (1 - p_c), none a_c.
template <int A, bool Labels, typename T>
__global__ void dice_backward_kernel(const T* __restrict__ gi, const T* __restrict__ gp, const T* __restrict__ z,
                                     const int64_t* __restrict__ lab, const T* __restrict__ g, T* __restrict__ dz,
                                     int64_t N, int64_t C, int64_t S) {
  for (int64_t i = grid_start(); i < N * S; i += grid_step()) {
    const int64_t n = i / S, offset = n * C * S + i % S;
    const T* zp = z + offset;
    const int64_t* lp = Labels ? lab + i : nullptr;
    const T* gpx = Labels ? nullptr : g + offset;
    T m, inv;
    normalizers<A>(zp, S, C, m, inv);
    T dot = T(0);
    if constexpr (A == kSoftmax) {
      for (int64_t c = 0; c < C; ++c) {
        dot += prob<A>(zp[c * S], m, inv) * (gi[n * C + c] * target_at<Labels>(lp, gpx, c, S) + gp[n * C + c]);
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      const T p = prob<A>(zp[c * S], m, inv);
      const T a = gi[n * C + c] * target_at<Labels>(lp, gpx, c, S) + gp[n * C + c];
      T d = a;
      if constexpr (A == kSoftmax) d = p * (a - dot);
      else if constexpr (A == kSigmoid) d = a * p * (T(1) - p);
      dz[offset + c * S] = d;
    }
  }
}

// Blocks per image: enough for a few thousand blocks in all, at most one per kThreads pixels.
int64_t dice_chunks(int64_t N, int64_t S) {
  const int64_t per_image = std::max<int64_t>(1, 4096 / std::max<int64_t>(N, 1));
  return std::max<int64_t>(1, std::min<int64_t>((S + kThreads - 1) / kThreads, per_image));
}

template <int A, bool Labels, typename T>
cudaError_t launch_stats(const T* z, const int64_t* lab, const T* g, T* inter, T* psum, T* gsum, double* workspace,
                         int* bad_label, int64_t N, int64_t C, int64_t S, cudaStream_t stream) {
  const int64_t chunks = dice_chunks(N, S);
  const size_t shared = size_t(kWarps) * C * 3 * sizeof(double);
  dice_stats_kernel<A, Labels, T><<<static_cast<unsigned int>(N * chunks), kThreads, shared, stream>>>(
      z, lab, g, workspace, bad_label, C, S, chunks);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  dice_finalize_kernel<T><<<blocks_for(N * C), kThreads, 0, stream>>>(workspace, inter, psum, gsum, N, C, chunks);
  return cudaGetLastError();
}

template <int A, bool Labels, typename T>
cudaError_t launch_backward(const T* gi, const T* gp, const T* z, const int64_t* lab, const T* g, T* dz, int64_t N,
                            int64_t C, int64_t S, cudaStream_t stream) {
  dice_backward_kernel<A, Labels, T><<<blocks_for(N * S), kThreads, 0, stream>>>(gi, gp, z, lab, g, dz, N, C, S);
  return cudaGetLastError();
}

// f(integral_constant<int, activation>, bool_constant<labels>) for the runtime activation and target kind.
template <typename F>
cudaError_t dispatch_dice(int activation, bool labels, F&& f) {
  auto with_target = [&](auto A) { return labels ? f(A, std::true_type()) : f(A, std::false_type()); };
  switch (activation) {
    case kSoftmax: return with_target(std::integral_constant<int, kSoftmax>());
    case kSigmoid: return with_target(std::integral_constant<int, kSigmoid>());
    default: return with_target(std::integral_constant<int, 2>());
  }
}

}  // namespace

int64_t soft_dice_workspace_size(int64_t N, int64_t C, int64_t S) { return N * dice_chunks(N, S) * C * 3; }

template <typename T>
cudaError_t soft_dice_stats_forward(const T* logits, const int64_t* labels, const T* dense, T* inter, T* psum,
                                    T* gsum, double* workspace, int* bad_label, int64_t N, int64_t C, int64_t S,
                                    int activation, cudaStream_t stream) {
  if (C > kSoftDiceMaxChannels || activation < 0 || activation > 2) return cudaErrorInvalidValue;
  if (N * C * S == 0) return cudaGetLastError();
  return dispatch_dice(activation, labels != nullptr, [&](auto A, auto L) {
    return launch_stats<decltype(A)::value, decltype(L)::value>(logits, labels, dense, inter, psum, gsum, workspace,
                                                                bad_label, N, C, S, stream);
  });
}

template <typename T>
cudaError_t soft_dice_stats_backward(const T* grad_inter, const T* grad_psum, const T* logits, const int64_t* labels,
                                     const T* dense, T* dlogits, int64_t N, int64_t C, int64_t S, int activation,
                                     cudaStream_t stream) {
  if (activation < 0 || activation > 2) return cudaErrorInvalidValue;
  if (N * C * S == 0) return cudaGetLastError();
  return dispatch_dice(activation, labels != nullptr, [&](auto A, auto L) {
    return launch_backward<decltype(A)::value, decltype(L)::value>(grad_inter, grad_psum, logits, labels, dense,
                                                                   dlogits, N, C, S, stream);
  });
}

template cudaError_t soft_dice_stats_forward<float>(const float*, const int64_t*, const float*, float*, float*, float*,
                                                    double*, int*, int64_t, int64_t, int64_t, int, cudaStream_t);
template cudaError_t soft_dice_stats_forward<double>(const double*, const int64_t*, const double*, double*, double*,
                                                     double*, double*, int*, int64_t, int64_t, int64_t, int,
                                                     cudaStream_t);
template cudaError_t soft_dice_stats_backward<float>(const float*, const float*, const float*, const int64_t*,
                                                     const float*, float*, int64_t, int64_t, int64_t, int,
                                                     cudaStream_t);
template cudaError_t soft_dice_stats_backward<double>(const double*, const double*, const double*, const int64_t*,
                                                      const double*, double*, int64_t, int64_t, int64_t, int,
                                                      cudaStream_t);

}  // namespace cuda
}  // namespace medcnn
