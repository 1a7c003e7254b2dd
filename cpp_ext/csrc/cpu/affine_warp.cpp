// Batched affine warp on the CPU (augmentation): F.grid_sample(image, F.affine_grid(theta, ...)) in one pass, with
// an optional label mask warped by nearest in the same pass. Eager PyTorch writes a full (N, *spatial, DIM) grid,
// reads it back, and for a label map converts it to float and back around a second grid_sample; here every output
// row computes its sampling plan on the fly from theta (affine_warp.h) and uses it for every image and mask channel.
//
// Forward: OpenMP over (n, z, y) rows. Backward (gradient w.r.t. the image only): the transpose, a scatter-add of
// the interpolation weights; threads own whole (sample, channel block) planes, so no two threads write the same
// value and the sums run in output order whatever the thread count (deterministic, bit for bit); each task zeroes
// its planes just before scattering into them (in cache, no separate zero-fill pass). Both prefetch the input lines
// a few rows ahead (warp::prefetch_run): a rotated warp reads the input diagonally, which hardware prefetchers miss.
// Layouts: contiguous and channels-last images run natively (the output keeps the format); the mask, of any
// 1/2/4/8-byte dtype, is copied as raw values (exact for any label), in its own memory format.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/div.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/linspace.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/zeros.h>
#include <omp.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>
#include <tuple>

#include "affine_warp.h"

namespace medcnn {
namespace cpu {
namespace {

using warp::Geometry;
using warp::kChunk;
using warp::Pad;
using warp::Plan;
using warp::Sources;

// Element (n, c, s) of an (N, C, S) tensor at n * C * S + c * cs + s * ss: contiguous (cs, ss) = (S, 1),
// channels-last (1, C).
struct Layout {
  int64_t C, cs, ss;
};

Layout layout_of(const at::Tensor& t, int64_t S) {
  const int64_t C = t.size(1);
  return t.is_contiguous() || C == 1 ? Layout{C, S, 1} : Layout{C, 1, C};
}

// out[s0 + i] = sum_k w_k * in[off_k] over the chunk, channel by channel (out-of-range corners add nothing: a
// select, so NaN/Inf read at the stand-in offset 0 never leaks in). UNIT: contiguous layout (ss == 1), so the
// compiler sees unit strides and vectorizes with gathers.
template <bool UNIT, int DIM, typename T>
void gather_linear_impl(const Plan<DIM, T>& p, const T* in, T* out, int64_t s0, Layout l) {
  const int64_t ss = UNIT ? 1 : l.ss, len = p.len;
  for (int64_t c = 0; c < l.C; ++c) {
    const T* __restrict__ src = in + c * l.cs;
    T* __restrict__ dst = out + c * l.cs + s0 * ss;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      T acc = T(0);
      for (int k = 0; k < Plan<DIM, T>::K; ++k) {
        const int32_t o = p.off[k][i];
        const T v = src[int64_t(o < 0 ? 0 : o) * ss];
        acc += o < 0 ? T(0) : p.w[k][i] * v;
      }
      dst[i * ss] = acc;
    }
  }
}

template <int DIM, typename T>
void gather_linear(const Plan<DIM, T>& p, const T* in, T* out, int64_t s0, Layout l) {
  if (l.ss == 1) {
    gather_linear_impl<true>(p, in, out, s0, l);
  } else {
    gather_linear_impl<false>(p, in, out, s0, l);
  }
}

// out[s0 + i] = in[nearest] (0 outside), for any element type of the same size (labels, bool, float).
template <bool UNIT, int DIM, typename T, typename U>
void gather_nearest_impl(const Plan<DIM, T>& p, const U* in, U* out, int64_t s0, Layout l) {
  const int64_t ss = UNIT ? 1 : l.ss, len = p.len;
  for (int64_t c = 0; c < l.C; ++c) {
    const U* __restrict__ src = in + c * l.cs;
    U* __restrict__ dst = out + c * l.cs + s0 * ss;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const int32_t o = p.near[i];
      const U v = src[int64_t(o < 0 ? 0 : o) * ss];
      dst[i * ss] = o < 0 ? U(0) : v;
    }
  }
}

template <int DIM, typename T, typename U>
void gather_nearest(const Plan<DIM, T>& p, const U* in, U* out, int64_t s0, Layout l) {
  if (l.ss == 1) {
    gather_nearest_impl<true>(p, in, out, s0, l);
  } else {
    gather_nearest_impl<false>(p, in, out, s0, l);
  }
}

template <int DIM, typename T>
void gather_mask(const Plan<DIM, T>& p, const void* in, void* out, int64_t elem, int64_t s0, Layout l) {
  switch (elem) {
    case 1: gather_nearest(p, static_cast<const uint8_t*>(in), static_cast<uint8_t*>(out), s0, l); break;
    case 2: gather_nearest(p, static_cast<const uint16_t*>(in), static_cast<uint16_t*>(out), s0, l); break;
    case 4: gather_nearest(p, static_cast<const uint32_t*>(in), static_cast<uint32_t*>(out), s0, l); break;
    default: gather_nearest(p, static_cast<const uint64_t*>(in), static_cast<uint64_t*>(out), s0, l); break;
  }
}

// What one warp call reads and writes; mask pointers are null without a mask.
template <typename T>
struct WarpArgs {
  const T* theta;  // (N, DIM, DIM + 1)
  const T* image;
  T* out;
  Layout il;
  const void* mask;
  void* mask_out;
  Layout ml;
  int64_t mask_elem;
  int64_t N;
  bool nearest, align;
};

// Output row r of the (N, D, H) rows: sample, slice, row.
struct Row {
  int64_t n, z, y;
};

template <typename T>
inline Row row_of(int64_t r, const Geometry<T>& g) {
  const int64_t zy = r % (g.D * g.H);
  return {r / (g.D * g.H), zy / g.H, zy % g.H};
}

// Prefetches what the chunk at x0 of output row r + kLookahead will read: image planes (the first 4 channels of a
// contiguous image, the leading line of a channels-last one) and mask.
template <int DIM, Pad P, bool ALIGN, typename T>
void prefetch_ahead(const WarpArgs<T>& a, const Geometry<T>& g, Sources<DIM, T>& q, int64_t r, int64_t rows,
                    int64_t x0, int64_t len) {
  const int64_t ra = r + warp::kLookahead, S = g.D * g.H * g.W;
  if (ra >= rows) return;
  const Row w = row_of(ra, g);
  warp::plan_sources<DIM, P, ALIGN>(q, a.theta + w.n * DIM * (DIM + 1), g, w.z, w.y, x0, len);
  const char* img = reinterpret_cast<const char*>(a.image + w.n * a.il.C * S);
  for (int64_t c = 0; c < std::min<int64_t>(a.il.C, a.il.ss == 1 ? 4 : 1); ++c) {
    warp::prefetch_run<false>(q, g, img + c * a.il.cs * int64_t(sizeof(T)), int64_t(sizeof(T)) * a.il.ss, !a.nearest);
  }
  if (a.mask != nullptr && a.ml.C > 0) {
    const char* m = static_cast<const char*>(a.mask) + w.n * a.ml.C * S * a.mask_elem;
    warp::prefetch_run<false>(q, g, m, a.mask_elem * a.ml.ss, false);
  }
}

template <int DIM, Pad P, bool ALIGN, typename T>
void warp_forward_kernel(const WarpArgs<T>& a, const Geometry<T>& g, int nt) {
  const int64_t S = g.D * g.H * g.W, rows = a.N * g.D * g.H;
  constexpr int R = DIM * (DIM + 1);
#pragma omp parallel num_threads(nt)
  {
    Plan<DIM, T> p;  // per thread, ~10-20 KiB
    Sources<DIM, T> q;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const Row w = row_of(r, g);
      const T* img = a.image + w.n * a.il.C * S;
      T* out = a.out + w.n * a.il.C * S;
      for (int64_t x0 = 0; x0 < g.W; x0 += kChunk) {
        const int64_t s0 = (w.z * g.H + w.y) * g.W + x0, len = std::min(kChunk, g.W - x0);
        prefetch_ahead<DIM, P, ALIGN>(a, g, q, r, rows, x0, len);
        warp::plan_sources<DIM, P, ALIGN>(p, a.theta + w.n * R, g, w.z, w.y, x0, len);
        if (a.nearest || a.mask != nullptr) warp::plan_nearest(p, g);
        if (a.nearest) {
          gather_nearest(p, img, out, s0, a.il);
        } else if (a.il.C == 1) {
          warp::sample_linear(p, g, img, out + s0);
        } else {
          warp::plan_linear(p, g);
          gather_linear(p, img, out, s0, a.il);
        }
        if (a.mask != nullptr) {
          const int64_t mstep = a.ml.C * S * a.mask_elem;  // bytes per sample
          gather_mask(p, static_cast<const char*>(a.mask) + w.n * mstep,
                      static_cast<char*>(a.mask_out) + w.n * mstep, a.mask_elem, s0, a.ml);
        }
      }
    }
  }
}

// d_in[off_k] += w_k * grad[s0 + i] for channels [c0, c1) of one sample, in output order.
template <int DIM, typename T>
void scatter(const Plan<DIM, T>& p, const T* grad, T* din, int64_t s0, Layout l, int64_t c0, int64_t c1,
             bool nearest) {
  for (int64_t c = c0; c < c1; ++c) {
    const T* gsrc = grad + c * l.cs + s0 * l.ss;
    T* dst = din + c * l.cs;
    for (int64_t i = 0; i < p.len; ++i) {
      const T gv = gsrc[i * l.ss];
      if (nearest) {
        if (p.near[i] >= 0) dst[p.near[i] * l.ss] += gv;
        continue;
      }
      for (int k = 0; k < Plan<DIM, T>::K; ++k) {
        if (p.off[k][i] >= 0) dst[p.off[k][i] * l.ss] += p.w[k][i] * gv;
      }
    }
  }
}

// Zeroes channels [c0, c1) of sample n: the owning task does it just before scattering, so the planes are in cache.
template <typename T>
void zero_planes(T* din, Layout l, int64_t S, int64_t n, int64_t c0, int64_t c1) {
  T* base = din + n * l.C * S;
  if (l.ss == 1) {
    std::fill(base + c0 * S, base + c1 * S, T(0));
    return;
  }
  for (int64_t s = 0; s < S; ++s) std::fill(base + s * l.C + c0, base + s * l.C + c1, T(0));
}

// Tasks: (sample, channel block); blocks split the channels only when samples alone leave threads idle. Each task
// zeroes its planes, then scatters its rows in order, prefetching (for writing) the lines kLookahead rows ahead.
template <int DIM, Pad P, bool ALIGN, typename T>
void warp_backward_kernel(const T* grad, const T* theta, T* din, Layout l, int64_t N, bool nearest,
                          const Geometry<T>& g, int nt) {
  const int64_t S = g.D * g.H * g.W, rows = g.D * g.H;
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(l.C, (nt + N - 1) / std::max<int64_t>(N, 1)));
  const int64_t per = (l.C + blocks - 1) / blocks;
  constexpr int R = DIM * (DIM + 1);
#pragma omp parallel num_threads(nt)
  {
    Plan<DIM, T> p;
    Sources<DIM, T> q;
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < N * blocks; ++task) {
      const int64_t n = task / blocks, c0 = (task % blocks) * per, c1 = std::min(l.C, c0 + per);
      if (c0 >= c1) continue;
      zero_planes(din, l, S, n, c0, c1);
      const char* plane = reinterpret_cast<const char*>(din + n * l.C * S + c0 * l.cs);
      for (int64_t zy = 0; zy < rows; ++zy) {
        for (int64_t x0 = 0; x0 < g.W; x0 += kChunk) {
          const int64_t len = std::min(kChunk, g.W - x0), ahead = zy + warp::kLookahead;
          if (ahead < rows) {
            warp::plan_sources<DIM, P, ALIGN>(q, theta + n * R, g, ahead / g.H, ahead % g.H, x0, len);
            warp::prefetch_run<true>(q, g, plane, int64_t(sizeof(T)) * l.ss, !nearest);
          }
          warp::plan_sources<DIM, P, ALIGN>(p, theta + n * R, g, zy / g.H, zy % g.H, x0, len);
          if (nearest) {
            warp::plan_nearest(p, g);
          } else {
            warp::plan_linear(p, g);
          }
          scatter(p, grad + n * l.C * S, din + n * l.C * S, zy * g.W + x0, l, c0, c1, nearest);
        }
      }
    }
  }
}

// The plans hold 32-bit offsets: (D + 2) * (H + 2) * (W + 2) voxels per channel at most (the +2: clamped corners).
void check_index_range(const at::Tensor& t, const char* op) {
  int64_t padded = 1;
  for (int64_t d = 2; d < t.dim(); ++d) padded *= t.size(d) + 2;
  TORCH_CHECK_VALUE(padded <= INT32_MAX, op, ": the CPU kernel handles at most 2^31 voxels per channel (counting a ",
                    "one-voxel margin per side), got spatial size ", t.sizes().slice(2),
                    "; trainsdk.ops.affine_warp uses the reference for such inputs");
}

// affine_grid's normalized output coordinates of an axis of n voxels, with the same ATen ops (same values).
at::Tensor base_coords(int64_t n, bool align, const at::TensorOptions& opts) {
  if (n <= 1) return at::zeros({1}, opts);
  at::Tensor r = at::linspace(-1, 1, n, opts);
  return align ? r : at::div(at::mul(r, n - 1), n);  // affine_grid: range * (n - 1) / n
}

struct Bases {
  at::Tensor x, y, z;
};

Bases bases(const at::Tensor& image, bool align) {
  const auto opts = image.options();
  const int64_t d = image.dim();
  return {base_coords(image.size(d - 1), align, opts), base_coords(image.size(d - 2), align, opts),
          d == 5 ? base_coords(image.size(2), align, opts) : at::Tensor()};
}

template <typename T>
Geometry<T> geometry(const at::Tensor& image, const Bases& b) {
  const int64_t d = image.dim();
  return {d == 5 ? image.size(2) : 1, image.size(d - 2), image.size(d - 1), b.x.const_data_ptr<T>(),
          b.y.const_data_ptr<T>(), d == 5 ? b.z.const_data_ptr<T>() : nullptr};
}

template <int DIM, typename T>
void forward_dispatch(const WarpArgs<T>& a, const Geometry<T>& g, int64_t pad, int nt) {
  warp::dispatch_pad(pad, a.align, [&](auto P, auto A) {
    warp_forward_kernel<DIM, decltype(P)::value, decltype(A)::value>(a, g, nt);
  });
}

template <int DIM, typename T>
void backward_dispatch(const T* grad, const T* theta, T* din, Layout l, int64_t N, bool nearest, bool align,
                       const Geometry<T>& g, int64_t pad, int nt) {
  warp::dispatch_pad(pad, align, [&](auto P, auto A) {
    warp_backward_kernel<DIM, decltype(P)::value, decltype(A)::value>(grad, theta, din, l, N, nearest, g, nt);
  });
}

std::tuple<at::Tensor, at::Tensor> affine_warp_cpu(const at::Tensor& image_in, const at::Tensor& theta_in,
                                                   const std::optional<at::Tensor>& mask_in, c10::string_view mode,
                                                   c10::string_view padding_mode, bool align_corners) {
  constexpr const char* op = "medcnn::affine_warp";
  const AffineWarpMode m =
      check_affine_warp_args(image_in, theta_in, mask_in, std::string(mode), std::string(padding_mode), op);
  check_index_range(image_in, op);
  const at::Tensor image = image_in.contiguous(image_in.suggest_memory_format()), theta = theta_in.contiguous();
  at::Tensor out = at::empty_like(image, image.suggest_memory_format());
  const bool has_mask = mask_in.has_value() && mask_in->defined();
  at::Tensor mask, mask_out;
  if (has_mask) {
    mask = mask_in->contiguous(mask_in->suggest_memory_format());
    mask_out = at::empty_like(mask, mask.suggest_memory_format());
  } else {
    mask_out = at::empty({0}, image.options());
  }
  const int64_t N = image.size(0), spatial = spatial_numel(image);  // voxels per sample and channel
  if (N == 0) return {out, mask_out};
  const Bases b = bases(image, align_corners);
  const int nt = num_threads(N * spatial * (image.size(1) + (has_mask ? mask.size(1) : 0)), 16384);
  AT_DISPATCH_FLOATING_TYPES(image.scalar_type(), op, [&] {
    WarpArgs<scalar_t> a{theta.const_data_ptr<scalar_t>(), image.const_data_ptr<scalar_t>(),
                         out.mutable_data_ptr<scalar_t>(), layout_of(image, spatial),
                         has_mask ? mask.const_data_ptr() : nullptr, has_mask ? mask_out.mutable_data_ptr() : nullptr,
                         has_mask ? layout_of(mask, spatial) : Layout{0, 0, 0},
                         has_mask ? int64_t(mask.element_size()) : 0, N, m.nearest, align_corners};
    const Geometry<scalar_t> g = geometry<scalar_t>(image, b);
    if (m.dims == 3) {
      forward_dispatch<3>(a, g, m.padding, nt);
    } else {
      forward_dispatch<2>(a, g, m.padding, nt);
    }
  });
  return {out, mask_out};
}

at::Tensor affine_warp_backward_cpu(const at::Tensor& grad_in, const at::Tensor& theta_in, c10::string_view mode,
                                    c10::string_view padding_mode, bool align_corners) {
  constexpr const char* op = "medcnn::affine_warp_backward";
  const AffineWarpMode m =
      check_affine_warp_args(grad_in, theta_in, std::nullopt, std::string(mode), std::string(padding_mode), op);
  check_index_range(grad_in, op);
  const auto fmt = grad_in.suggest_memory_format();
  const at::Tensor grad = grad_in.contiguous(fmt), theta = theta_in.contiguous();
  at::Tensor din = at::empty_like(grad, fmt);  // zeroed plane by plane by the kernel's tasks
  const int64_t N = grad.size(0), C = grad.size(1);
  if (grad.numel() == 0) return din;  // nothing to zero
  const int64_t spatial = spatial_numel(grad);
  const Bases b = bases(grad, align_corners);
  const int nt = int(std::min<int64_t>(num_threads(grad.numel(), 16384), N * C));  // tasks own (n, c) planes
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), op, [&] {
    const Geometry<scalar_t> g = geometry<scalar_t>(grad, b);
    const Layout l = layout_of(grad, spatial);
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const scalar_t* tp = theta.const_data_ptr<scalar_t>();
    scalar_t* dp = din.mutable_data_ptr<scalar_t>();
    if (m.dims == 3) {
      backward_dispatch<3>(gp, tp, dp, l, N, m.nearest, align_corners, g, m.padding, nt);
    } else {
      backward_dispatch<2>(gp, tp, dp, l, N, m.nearest, align_corners, g, m.padding, nt);
    }
  });
  return din;
}

}  // namespace

TORCH_LIBRARY_IMPL(medcnn, CPU, m) {
  m.impl("affine_warp", &affine_warp_cpu);
  m.impl("affine_warp_backward", &affine_warp_backward_cpu);
}

}  // namespace cpu
}  // namespace medcnn
