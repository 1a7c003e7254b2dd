// Sampling plan of the batched affine warp (cpu/affine_warp.cpp): for a run of output voxels along x, where each
// one reads the input, computed on the fly from theta (no grid tensor), with grid_sample's semantics.
//
// Coordinates follow F.affine_grid + F.grid_sample: the normalized output coordinate of each axis is torch's own
// linspace(-1, 1, n) (times (n - 1) / n without align_corners; 0 when n == 1), computed once per call with the same
// ATen ops as affine_grid, so both see the same values; theta maps it to a normalized input coordinate (x first),
// which is unnormalized, reflected / clipped for the padding mode and range-checked as in ATen's GridSampler.h.
// Nearest rounds half to even (std::nearbyint), as grid_sample does.
//
// Every loop here is branch-free over a chunk of voxels (selects, 32-bit offsets) so that it vectorizes; offsets
// are 32-bit because the op is limited to (D + 2) * (H + 2) * (W + 2) < 2^31 voxels per channel (checked).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cpu_utils.h"

namespace medcnn {
namespace cpu {
namespace warp {

// grid_sample's padding modes, in the order of checks.h's codes (0 zeros, 1 border, 2 reflection).
enum class Pad : int { Zeros = 0, Border = 1, Reflection = 2 };

constexpr int64_t kChunk = 128;  // output voxels per plan: its arrays stay in L1

// Input sizes (= output sizes) and the normalized output coordinates of each axis. 2-D: D == 1, bz unused.
template <typename T>
struct Geometry {
  int64_t D, H, W;
  const T* bx;  // (W,)
  const T* by;  // (H,)
  const T* bz;  // (D,) or null
};

// By-value std::max / std::min (same NaN behaviour: max(NaN, b) = NaN, min(a, NaN) = a): std::max's reference to a
// temporary keeps `omp simd` loops from vectorizing.
template <typename T>
inline T maxv(T a, T b) { return a < b ? b : a; }
template <typename T>
inline T minv(T a, T b) { return b < a ? b : a; }

// Reflection of x into [lo, lo + span] (GridSampler.h's reflect_coordinates, twice_low/twice_high given as lo2/hi2)
// written so that the loop vectorizes: no fmod, and the distance is clamped below 2^30 spans before the int cast
// that counts the flips (truncation is the floor there: the distance is >= 0). Farther (and NaN/Inf) coordinates
// are returned unreflected, so the clip that follows makes them the first/last voxel (ATen: NaN/Inf -> last voxel,
// huge finite -> an arbitrary one). Selects only pick values: with the build's default -ftrapping-math, GCC turns
// arithmetic inside a ?: arm, or a select it can thread, into a branch, and the loop no longer vectorizes.
template <typename T>
inline T reflect(T x, int64_t lo2, int64_t hi2) {
  const T lo = T(lo2) / 2, span = T(hi2 - lo2) / 2;
  const T bound = T(1 << 30) * span;
  const T d = std::fabs(x - lo);
  const T a = minv(bound, d);                                      // NaN -> bound
  const int32_t flips = int32_t(a / (span > T(0) ? span : T(1)));  // span 0: one voxel, the clip gives 0
  const T extra = a - T(flips) * span;
  const T up = extra + lo, down = span - extra + lo;
  const T r = (flips & 1) ? down : up;
  return d <= bound ? r : d;  // false for NaN
}

// [-1, 1] -> input index space, then the padding mode, as ATen's grid_sampler_compute_source_index. Non-finite and
// huge values map to -100 (safe_downgrade_to_int_range): far outside, so sampled as padding.
template <Pad P, bool ALIGN, typename T>
inline T source_index(T c, int64_t size) {
  T x = ALIGN ? ((c + 1) / 2) * T(size - 1) : ((c + 1) * T(size) - 1) / 2;
  if constexpr (P == Pad::Reflection) x = ALIGN ? reflect(x, 0, 2 * (size - 1)) : reflect(x, -1, 2 * size - 1);
  if constexpr (P != Pad::Zeros) x = minv(T(size - 1), maxv(x, T(0)));  // NaN -> size - 1, as ATen
  return std::fabs(x) <= T(2147483646) ? x : T(-100);  // false for NaN and Inf
}

// Source indices (per axis: x, y[, z]) of up to kChunk consecutive output voxels of one row.
template <int DIM, typename T>
struct Sources {
  int64_t len = 0;
  alignas(64) T src[DIM][kChunk];
};

// Plan of such a run: per corner of the bilinear (2-D) / trilinear (3-D) cell, the input offset (z * H * W + y * W
// + x, or -1 where the corner is outside) and weight (x bit fastest: grid_sample's nw, ne, sw, se order), and the
// nearest voxel's offset (-1 outside).
template <int DIM, typename T>
struct Plan : Sources<DIM, T> {
  static constexpr int K = 1 << DIM;
  alignas(64) int32_t off[K][kChunk];
  alignas(64) T w[K][kChunk];
  alignas(64) int32_t near[kChunk];
};

// Source indices of output voxels (z, y, x0 .. x0 + len) of sample theta (DIM x (DIM + 1), row-major).
// Products and sums in affine_grid's order: ((x * t0 + y * t1) [+ z * t2]) + t_last.
template <int DIM, Pad P, bool ALIGN, typename T>
void plan_sources(Sources<DIM, T>& p, const T* th, const Geometry<T>& g, int64_t z, int64_t y, int64_t x0,
                  int64_t len) {
  constexpr int R = DIM + 1;
  const int64_t in_size[3] = {g.W, g.H, g.D};
  p.len = len;
  const T* __restrict__ bx = g.bx + x0;
  for (int d = 0; d < DIM; ++d) {
    const T* t = th + d * R;
    const T t0 = t[0], yt = g.by[y] * t[1], zt = DIM == 3 ? g.bz[z] * t[2] : T(0), last = t[R - 1];
    const int64_t size = in_size[d];
    T* __restrict__ s = p.src[d];
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      T c = bx[i] * t0 + yt;
      if constexpr (DIM == 3) c = c + zt;
      s[i] = source_index<P, ALIGN>(c + last, size);
    }
  }
}

// Lower cell corner along one axis, clamped to [-2, size] first (anything further out has both corners outside,
// so nothing changes) so that offsets fit in 32 bits; t: the fraction towards the upper corner.
template <typename T>
inline int32_t cell(T s, int64_t size, T& t, bool& lo_ok, bool& hi_ok) {
  const T c = minv(maxv(s, T(-2)), T(size));
  const int32_t r = int32_t(c);  // truncation; floor below
  const int32_t i = r - int32_t(T(r) > c);
  t = s - T(i);
  lo_ok = (i >= 0) & (i < size);
  hi_ok = (i + 1 >= 0) & (i + 1 < size);
  return i;
}

// Corner offsets and weights (weights multiply in grid_sample's order: x, then y, then z). Out-of-range corners get
// offset -1: consumers read nothing there (zero contribution, as grid_sample's bounds checks, even for NaN/Inf
// input values).
template <int DIM, typename T>
void plan_linear(Plan<DIM, T>& p, const Geometry<T>& g) {
  const int32_t W = int32_t(g.W), HW = int32_t(g.H * g.W);
  const int64_t len = p.len;
  const T* __restrict__ sx = p.src[0];
  const T* __restrict__ sy = p.src[1];
  const T* __restrict__ sz = p.src[DIM - 1];
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) {
    T tx, ty, tz = T(0);
    bool x0, x1, y0, y1, z0 = true, z1 = false;
    const int32_t bxy = cell(sx[i], g.W, tx, x0, x1) + cell(sy[i], g.H, ty, y0, y1) * W;
    const int32_t b = DIM == 3 ? bxy + cell(sz[i], g.D, tz, z0, z1) * HW : bxy;
    const T wx0 = T(1) - tx, wy0 = T(1) - ty;
    const T wz = DIM == 3 ? T(1) - tz : T(1);  // weight of the lower z corner (2-D: the only one)
    p.off[0][i] = x0 & y0 & z0 ? b : -1;
    p.off[1][i] = x1 & y0 & z0 ? b + 1 : -1;
    p.off[2][i] = x0 & y1 & z0 ? b + W : -1;
    p.off[3][i] = x1 & y1 & z0 ? b + W + 1 : -1;
    p.w[0][i] = wx0 * wy0 * wz;
    p.w[1][i] = tx * wy0 * wz;
    p.w[2][i] = wx0 * ty * wz;
    p.w[3][i] = tx * ty * wz;
    if constexpr (DIM == 3) {
      p.off[4][i] = x0 & y0 & z1 ? b + HW : -1;
      p.off[5][i] = x1 & y0 & z1 ? b + HW + 1 : -1;
      p.off[6][i] = x0 & y1 & z1 ? b + HW + W : -1;
      p.off[7][i] = x1 & y1 & z1 ? b + HW + W + 1 : -1;
      p.w[4][i] = wx0 * wy0 * tz;
      p.w[5][i] = tx * wy0 * tz;
      p.w[6][i] = wx0 * ty * tz;
      p.w[7][i] = tx * ty * tz;
    }
  }
}

// One read of a single-channel input: weight * in[offset], nothing (not even NaN * 0) where the corner is outside.
template <typename T>
inline T tap(const T* __restrict__ in, bool valid, int32_t offset, T weight) {
  const T v = in[valid ? offset : 0];
  return valid ? weight * v : T(0);
}

// plan_linear and the interpolation of one channel in a single pass (no offsets/weights stored): the common
// single-channel image. Same corners, weights and summation order as plan_linear + the per-channel gather.
template <int DIM, typename T>
void sample_linear(const Plan<DIM, T>& p, const Geometry<T>& g, const T* __restrict__ in, T* __restrict__ out) {
  const int32_t W = int32_t(g.W), HW = int32_t(g.H * g.W);
  const int64_t len = p.len;
  const T* __restrict__ sx = p.src[0];
  const T* __restrict__ sy = p.src[1];
  const T* __restrict__ sz = p.src[DIM - 1];
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) {
    T tx, ty, tz = T(0);
    bool x0, x1, y0, y1, z0 = true, z1 = false;
    const int32_t bxy = cell(sx[i], g.W, tx, x0, x1) + cell(sy[i], g.H, ty, y0, y1) * W;
    const int32_t b = DIM == 3 ? bxy + cell(sz[i], g.D, tz, z0, z1) * HW : bxy;
    const T wx0 = T(1) - tx, wy0 = T(1) - ty;
    const T wz = DIM == 3 ? T(1) - tz : T(1);
    T acc = T(0);
    acc += tap(in, x0 & y0 & z0, b, wx0 * wy0 * wz);
    acc += tap(in, x1 & y0 & z0, b + 1, tx * wy0 * wz);
    acc += tap(in, x0 & y1 & z0, b + W, wx0 * ty * wz);
    acc += tap(in, x1 & y1 & z0, b + W + 1, tx * ty * wz);
    if constexpr (DIM == 3) {
      acc += tap(in, x0 & y0 & z1, b + HW, wx0 * wy0 * tz);
      acc += tap(in, x1 & y0 & z1, b + HW + 1, tx * wy0 * tz);
      acc += tap(in, x0 & y1 & z1, b + HW + W, wx0 * ty * tz);
      acc += tap(in, x1 & y1 & z1, b + HW + W + 1, tx * ty * tz);
    }
    out[i] = acc;
  }
}

// Nearest input voxel (round half to even, as grid_sample), -1 outside.
template <int DIM, typename T>
void plan_nearest(Plan<DIM, T>& p, const Geometry<T>& g) {
  const int64_t size[3] = {g.W, g.H, g.D};
  const int32_t stride[3] = {1, int32_t(g.W), int32_t(g.H * g.W)};
  const int64_t len = p.len;
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) {
    int32_t o = 0;
    bool valid = true;
    for (int d = 0; d < DIM; ++d) {
      const int32_t n = int32_t(std::nearbyint(minv(maxv(p.src[d][i], T(-1)), T(size[d]))));
      valid = valid & (n >= 0) & (n < size[d]);
      o += n * stride[d];
    }
    p.near[i] = valid ? o : -1;
  }
}

// Software prefetch of the input lines that a run of output voxels will read (its source positions clamped into
// the volume; every 4th voxel: neighbours mostly share lines), with the next row (and slice) of each cell when
// `linear`. Under rotation the sampling walks the input diagonally, which the hardware prefetchers do not follow:
// without this most lines arrive from DRAM on demand (measured: about 2x slower forward on a 2-D batch). Callers
// run it for the row a few rows ahead. elem: bytes per spatial step; write: for the backward's read-modify-write.
constexpr int64_t kLookahead = 3;  // rows

template <bool WRITE, int DIM, typename T>
void prefetch_run(const Sources<DIM, T>& q, const Geometry<T>& g, const char* base, int64_t elem, bool linear) {
  for (int64_t i = 0; i < q.len; i += 4) {
#if defined(__GNUC__)
    asm volatile("" ::: "memory");  // keeps GCC from vectorizing the loop, which drops __builtin_prefetch calls
#endif
    const int64_t x = int64_t(minv(maxv(q.src[0][i], T(0)), T(g.W - 1)));
    const int64_t y = int64_t(minv(maxv(q.src[1][i], T(0)), T(g.H - 1)));
    const int64_t z = DIM == 3 ? int64_t(minv(maxv(q.src[DIM - 1][i], T(0)), T(g.D - 1))) : 0;
    const int64_t y1 = std::min(y + 1, g.H - 1) - y, z1 = std::min(z + 1, g.D - 1) - z;
    const char* at = base + ((z * g.H + y) * g.W + x) * elem;
    __builtin_prefetch(at, WRITE);
    if (linear) {
      __builtin_prefetch(at + y1 * g.W * elem, WRITE);
      if constexpr (DIM == 3) {
        __builtin_prefetch(at + z1 * g.H * g.W * elem, WRITE);
        __builtin_prefetch(at + (z1 * g.H + y1) * g.W * elem, WRITE);
      }
    }
  }
}

// Calls f(std::integral_constant<Pad, P>, std::integral_constant<bool, ALIGN>) for the runtime padding code and
// align_corners.
template <typename F>
inline void dispatch_pad(int64_t code, bool align, F&& f) {
  auto with_align = [&](auto P) {
    if (align) {
      f(P, std::true_type());
    } else {
      f(P, std::false_type());
    }
  };
  switch (code) {
    case 1: with_align(std::integral_constant<Pad, Pad::Border>()); break;
    case 2: with_align(std::integral_constant<Pad, Pad::Reflection>()); break;
    default: with_align(std::integral_constant<Pad, Pad::Zeros>()); break;
  }
}

}  // namespace warp
}  // namespace cpu
}  // namespace medcnn
