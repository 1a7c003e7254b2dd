// Helpers shared by the CPU kernels: thread count, accumulation type, x^-beta (activations: ../act.h).
//
// Kernels are plain loops: OpenMP splits the outer loop across threads and `#pragma omp simd` marks the inner,
// contiguous loop for vectorization (built with -O3 -fopenmp -fno-math-errno, so sqrt vectorizes).
#pragma once

#include <ATen/Parallel.h>

#if defined(__AVX__) || defined(__SSE2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <unistd.h>

#include "../checks.h"

namespace medcnn {
namespace cpu {

// Threads for a parallel region: torch's setting (torch.set_num_threads), one thread for small problems where
// waking the pool costs more than the work.
inline int num_threads(int64_t work_items, int64_t grain = 32768) {
  if (work_items < grain) return 1;
  return std::max(1, at::get_num_threads());
}

// Sums run in double for both float32 and float64: running window sums add and subtract, and batch statistics
// sum millions of values; float32 would drift.
using acc_t = double;

template <typename F>
inline void dispatch_act(Act act, F&& f) {
  switch (act) {
    case Act::ReLU: f(std::integral_constant<Act, Act::ReLU>()); break;
    case Act::LeakyReLU: f(std::integral_constant<Act, Act::LeakyReLU>()); break;
    default: f(std::integral_constant<Act, Act::Identity>()); break;
  }
}

// s^-beta. AlexNet's and GoogLeNet's beta = 0.75 (and 0.5, 1) get closed forms with sqrt, which vectorize;
// other betas use std::pow.
enum class PowKind : int { ThreeQuarters = 0, Half = 1, One = 2, General = 3 };

inline PowKind pow_kind(double beta) {
  if (beta == 0.75) return PowKind::ThreeQuarters;
  if (beta == 0.5) return PowKind::Half;
  if (beta == 1.0) return PowKind::One;
  return PowKind::General;
}

template <PowKind K, typename T>
inline T neg_pow(T s, T beta) {
  if constexpr (K == PowKind::ThreeQuarters) {
    const T r = T(1) / std::sqrt(s);  // s^-0.5
    return r * std::sqrt(r);          // s^-0.75
  } else if constexpr (K == PowKind::Half) {
    return T(1) / std::sqrt(s);
  } else if constexpr (K == PowKind::One) {
    return T(1) / s;
  } else {
    return std::pow(s, -beta);
  }
}

// Calls f(std::integral_constant<PowKind, K>) for the runtime kind, so kernels get a compile-time K.
template <typename F>
inline void dispatch_pow(PowKind kind, F&& f) {
  switch (kind) {
    case PowKind::ThreeQuarters: f(std::integral_constant<PowKind, PowKind::ThreeQuarters>()); break;
    case PowKind::Half: f(std::integral_constant<PowKind, PowKind::Half>()); break;
    case PowKind::One: f(std::integral_constant<PowKind, PowKind::One>()); break;
    default: f(std::integral_constant<PowKind, PowKind::General>()); break;
  }
}

// --- streaming (non-temporal) stores -----------------------------------------------------------------------------
// An output much larger than the last-level cache is evicted before the next op reads it anyway; storing it with
// non-temporal stores skips the read-for-ownership of every destination line (a third of the traffic of an
// element-wise op) and leaves the inputs in cache. Outputs that fit are stored normally, so the next op (the
// following layer, or this op's backward) finds them in cache. Kernels compute a block into a small L1-resident
// buffer with a vectorizable loop, then `store_block` copies it out.
constexpr int64_t kBlock = 512;  // values per block (2 KiB of float32)

inline int64_t stream_threshold_bytes() {
  static const int64_t bytes = [] {
    const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);  // 0 or -1 when unknown
    return std::max<int64_t>(int64_t(2) * (l3 > 0 ? l3 : 0), int64_t(64) << 20);
  }();
  return bytes;
}

inline bool should_stream(int64_t numel, int64_t elem_size) { return numel * elem_size >= stream_threshold_bytes(); }

template <typename T>
inline void store_block(T* dst, const T* src, int64_t n, bool stream) {
#if defined(__AVX__)
  constexpr int64_t lanes = 32 / sizeof(T);
  if (stream) {
    int64_t i = 0;
    for (; i < n && (reinterpret_cast<uintptr_t>(dst + i) & 31) != 0; ++i) dst[i] = src[i];  // align dst to 32 B
    for (; i + lanes <= n; i += lanes) {
      if constexpr (sizeof(T) == 4) {
        _mm256_stream_ps(reinterpret_cast<float*>(dst + i), _mm256_loadu_ps(reinterpret_cast<const float*>(src + i)));
      } else {
        _mm256_stream_pd(reinterpret_cast<double*>(dst + i), _mm256_loadu_pd(reinterpret_cast<const double*>(src + i)));
      }
    }
    for (; i < n; ++i) dst[i] = src[i];
    return;
  }
#endif
  (void)stream;
  std::memcpy(dst, src, n * sizeof(T));
}

// Orders this thread's streaming stores before whatever synchronizes with other threads (the end of the parallel
// region); non-temporal stores are weakly ordered.
inline void stream_fence() {
#if defined(__AVX__) || defined(__SSE2__)
  _mm_sfence();
#endif
}

// y[i] = f(i) for i in [begin, end), a block at a time, streamed out when `stream`.
template <typename T, typename F>
inline void blocked_store(T* y, int64_t begin, int64_t end, bool stream, F&& f) {
  alignas(64) T buf[kBlock];
  for (int64_t b0 = begin; b0 < end; b0 += kBlock) {
    const int64_t n = std::min(kBlock, end - b0);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) buf[i] = f(b0 + i);
    store_block(y + b0, buf, n, stream);
  }
}

// Product of the sizes after the channel dim: kernels see (N, C, S).
inline int64_t spatial_numel(const at::Tensor& x) {
  int64_t s = 1;
  for (int64_t d = 2; d < x.dim(); ++d) s *= x.size(d);
  return s;
}

}  // namespace cpu
}  // namespace medcnn
