// Batched affine warp on CUDA: grid_sample(image, affine_grid(theta)) without the grid, with an optional mask warped
// by nearest in the same pass (semantics as cpu/affine_warp.h). One thread per output voxel computes its source
// coordinate from theta and the normalized output coordinates of its axes (bx, by, bz: affine_grid's values, made
// by the binding), then reads every image and mask channel. Backward (gradient w.r.t. the image) scatters with
// atomicAdd: not bit-for-bit deterministic, unlike the CPU kernel.
// Layouts as the binding hands them over: contiguous (N, C, S) or channels-last (N, S, C), per tensor.
#include "common.cuh"
#include "launchers.h"

#include <cstdint>

namespace medcnn {
namespace cuda {
namespace {

// ATen's grid_sampler_compute_source_index: unnormalize, then the padding mode (0 zeros, 1 border, 2 reflection),
// then safe_downgrade_to_int_range (non-finite / huge -> -100, sampled as padding).
template <typename T>
__device__ inline T source_index(T c, int64_t size, int padding, bool align) {
  T x = align ? ((c + 1) / 2) * T(size - 1) : ((c + 1) * T(size) - 1) / 2;
  if (padding == 2) {
    const int64_t lo2 = align ? 0 : -1, hi2 = align ? 2 * (size - 1) : 2 * size - 1;
    if (lo2 == hi2) {
      x = T(0);
    } else {
      const T lo = T(lo2) / 2, span = T(hi2 - lo2) / 2;
      const T a = fabs(x - lo);
      const T extra = fmod(a, span);
      const bool odd = fmod(floor(a / span), T(2)) != T(0);
      x = odd ? span - extra + lo : extra + lo;
    }
  }
  if (padding != 0) x = fmin(T(size - 1), fmax(x, T(0)));
  return (isfinite(x) && fabs(x) <= T(2147483646)) ? x : T(-100);
}

struct Geom {
  int64_t N, C, D, H, W, S;
  int dims;
  bool cl;
};

// Source index of output voxel (z, y, x) of sample n along axis d (x = 0, y = 1, z = 2).
template <typename T>
__device__ inline T axis_source(const T* th, const T* bx, const T* by, const T* bz, const Geom& g, int d,
                                int64_t z, int64_t y, int64_t x, int padding, bool align) {
  const int R = g.dims + 1;
  const T* t = th + d * R;
  T c = bx[x] * t[0] + by[y] * t[1];
  if (g.dims == 3) c = c + bz[z] * t[2];
  const int64_t size = d == 0 ? g.W : d == 1 ? g.H : g.D;
  return source_index(c + t[R - 1], size, padding, align);
}

// Element (n, c, s) of an (N, C, S) tensor, contiguous or channels-last.
__device__ inline int64_t at_index(int64_t n, int64_t c, int64_t s, int64_t C, int64_t S, bool cl) {
  return cl ? (n * S + s) * C + c : (n * C + c) * S + s;
}

// Corner k (x bit fastest) of the interpolation cell: spatial offset, or -1 outside; w: its weight.
template <typename T>
__device__ inline int64_t corner(const T* src, const Geom& g, int k, T& w) {
  const int64_t size[3] = {g.W, g.H, g.D}, stride[3] = {1, g.W, g.H * g.W};
  int64_t off = 0;
  bool ok = true;
  w = T(1);
  for (int d = 0; d < g.dims; ++d) {
    const T f = floor(src[d]);
    const int64_t i = int64_t(f) + ((k >> d) & 1);
    const T t = src[d] - f;
    w *= ((k >> d) & 1) ? t : T(1) - t;
    ok = ok && i >= 0 && i < size[d];
    off += i * stride[d];
  }
  return ok ? off : -1;
}

template <typename T>
__device__ inline int64_t nearest(const T* src, const Geom& g) {
  const int64_t size[3] = {g.W, g.H, g.D}, stride[3] = {1, g.W, g.H * g.W};
  int64_t off = 0;
  for (int d = 0; d < g.dims; ++d) {
    const int64_t i = int64_t(nearbyint(src[d]));
    if (i < 0 || i >= size[d]) return -1;
    off += i * stride[d];
  }
  return off;
}

template <typename U>
__device__ inline void copy_mask(const void* in, void* out, int64_t from, int64_t to) {
  static_cast<U*>(out)[to] = from < 0 ? U(0) : static_cast<const U*>(in)[from];
}

template <typename T>
__global__ void warp_forward_kernel(const T* __restrict__ image, const T* __restrict__ theta, const T* bx,
                                    const T* by, const T* bz, T* __restrict__ out, const void* mask, void* mask_out,
                                    int64_t Cm, int elem, bool mask_cl, Geom g, bool near_mode, int padding,
                                    bool align) {
  for (int64_t v = grid_start(); v < g.N * g.S; v += grid_step()) {
    const int64_t n = v / g.S, s = v % g.S, x = s % g.W, y = (s / g.W) % g.H, z = s / (g.W * g.H);
    const T* th = theta + n * g.dims * (g.dims + 1);
    T src[3];
    for (int d = 0; d < g.dims; ++d) src[d] = axis_source(th, bx, by, bz, g, d, z, y, x, padding, align);
    const int64_t nn = nearest(src, g);
    for (int64_t c = 0; c < g.C; ++c) {
      const T* in = image + at_index(n, c, 0, g.C, g.S, g.cl);
      const int64_t ss = g.cl ? g.C : 1;
      T acc = T(0);
      if (near_mode) {
        acc = nn < 0 ? T(0) : in[nn * ss];
      } else {
        for (int k = 0; k < (1 << g.dims); ++k) {
          T w;
          const int64_t o = corner(src, g, k, w);
          if (o >= 0) acc += w * in[o * ss];
        }
      }
      out[at_index(n, c, s, g.C, g.S, g.cl)] = acc;
    }
    for (int64_t c = 0; mask != nullptr && c < Cm; ++c) {
      const int64_t from = nn < 0 ? -1 : at_index(n, c, nn, Cm, g.S, mask_cl), to = at_index(n, c, s, Cm, g.S, mask_cl);
      switch (elem) {
        case 1: copy_mask<uint8_t>(mask, mask_out, from, to); break;
        case 2: copy_mask<uint16_t>(mask, mask_out, from, to); break;
        case 4: copy_mask<uint32_t>(mask, mask_out, from, to); break;
        default: copy_mask<unsigned long long>(mask, mask_out, from, to); break;
      }
    }
  }
}

template <typename T>
__global__ void warp_backward_kernel(const T* __restrict__ grad, const T* __restrict__ theta, const T* bx,
                                     const T* by, const T* bz, T* __restrict__ din, Geom g, bool near_mode,
                                     int padding, bool align) {
  for (int64_t v = grid_start(); v < g.N * g.S; v += grid_step()) {
    const int64_t n = v / g.S, s = v % g.S, x = s % g.W, y = (s / g.W) % g.H, z = s / (g.W * g.H);
    const T* th = theta + n * g.dims * (g.dims + 1);
    T src[3];
    for (int d = 0; d < g.dims; ++d) src[d] = axis_source(th, bx, by, bz, g, d, z, y, x, padding, align);
    const int64_t ss = g.cl ? g.C : 1;
    for (int64_t c = 0; c < g.C; ++c) {
      const T gv = grad[at_index(n, c, s, g.C, g.S, g.cl)];
      T* d_in = din + at_index(n, c, 0, g.C, g.S, g.cl);
      if (near_mode) {
        const int64_t o = nearest(src, g);
        if (o >= 0) atomicAdd(d_in + o * ss, gv);
        continue;
      }
      for (int k = 0; k < (1 << g.dims); ++k) {
        T w;
        const int64_t o = corner(src, g, k, w);
        if (o >= 0) atomicAdd(d_in + o * ss, w * gv);
      }
    }
  }
}

Geom make_geom(const AffineWarpShape& s) {
  return {s.N, s.C, s.D, s.H, s.W, s.D * s.H * s.W, s.dims, s.channels_last};
}

}  // namespace

template <typename T>
cudaError_t affine_warp_forward(const T* image, const T* theta, const T* bx, const T* by, const T* bz, T* out,
                                const void* mask, void* mask_out, int64_t mask_channels, int mask_elem_size,
                                bool mask_channels_last, AffineWarpShape shape, bool nearest, int padding,
                                bool align_corners, cudaStream_t stream) {
  const Geom g = make_geom(shape);
  if (g.N * g.S == 0) return cudaGetLastError();
  warp_forward_kernel<T><<<blocks_for(g.N * g.S), kThreads, 0, stream>>>(
      image, theta, bx, by, bz, out, mask, mask_out, mask_channels, mask_elem_size, mask_channels_last, g, nearest,
      padding, align_corners);
  return cudaGetLastError();
}

template <typename T>
cudaError_t affine_warp_backward(const T* grad, const T* theta, const T* bx, const T* by, const T* bz, T* dimage,
                                 AffineWarpShape shape, bool nearest, int padding, bool align_corners,
                                 cudaStream_t stream) {
  const Geom g = make_geom(shape);
  if (g.N * g.S * g.C == 0) return cudaGetLastError();
  warp_backward_kernel<T><<<blocks_for(g.N * g.S), kThreads, 0, stream>>>(grad, theta, bx, by, bz, dimage, g,
                                                                          nearest, padding, align_corners);
  return cudaGetLastError();
}

template cudaError_t affine_warp_forward<float>(const float*, const float*, const float*, const float*, const float*,
                                                float*, const void*, void*, int64_t, int, bool, AffineWarpShape, bool,
                                                int, bool, cudaStream_t);
template cudaError_t affine_warp_forward<double>(const double*, const double*, const double*, const double*,
                                                 const double*, double*, const void*, void*, int64_t, int, bool,
                                                 AffineWarpShape, bool, int, bool, cudaStream_t);
template cudaError_t affine_warp_backward<float>(const float*, const float*, const float*, const float*, const float*,
                                                 float*, AffineWarpShape, bool, int, bool, cudaStream_t);
template cudaError_t affine_warp_backward<double>(const double*, const double*, const double*, const double*,
                                                  const double*, double*, AffineWarpShape, bool, int, bool,
                                                  cudaStream_t);

}  // namespace cuda
}  // namespace medcnn
