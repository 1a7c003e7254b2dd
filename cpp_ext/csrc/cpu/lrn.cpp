// Cross-channel LRN on the CPU, forward and backward, each in one sweep over the channels with a running window
// sum (add the channel entering the window, subtract the one leaving it) instead of PyTorch's ~7 full-size ops.
//
// x is viewed as (N, C, S). A task is one (n, spatial tile): T contiguous values of every channel row, so the
// inner loops run over contiguous memory and vectorize; OpenMP spreads the tasks over threads. Window sums are
// kept in double (exact squares of float32 values) so subtracting a large value that leaves the window does
// not leave rounding garbage behind.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "cpu_utils.h"

namespace medcnn {
namespace cpu {
namespace {

constexpr const char* kOp = "medcnn::lrn";
// Long tiles keep each channel row's reads sequential (a 55x55 map is one 12 KiB run), which the hardware
// prefetchers follow; short tiles jump between rows S apart every few cache lines and stall on memory latency.
constexpr int64_t kFwdTile = 4096;  // spatial values per forward task (its double sums: 32 KiB)
constexpr int64_t kBwdScratch = 65536;  // C * tile values of each backward scratch array (256 KiB in float32: L2)

struct LrnShape {
  int64_t N, C, S;        // x viewed as (N, C, S)
  int64_t before, after;  // channel c's window is [c - before, c + after], clipped to [0, C)
};

// sum[t] += sign * f(r[t]), f = square (the x^2 window) or identity (the backward's q window).
template <bool Square, typename scalar_t>
inline void accumulate_row(const scalar_t* r, int64_t T, acc_t sign, acc_t* sum) {
#pragma omp simd
  for (int64_t t = 0; t < T; ++t) sum[t] += sign * (Square ? acc_t(r[t]) * acc_t(r[t]) : acc_t(r[t]));
}

// The window of channel 0, rows [0, last]: rows are `stride` apart.
template <bool Square, typename scalar_t>
inline void window_init(const scalar_t* rows, int64_t stride, int64_t last, int64_t T, acc_t* sum) {
  std::fill(sum, sum + T, acc_t(0));
  for (int64_t j = 0; j <= last; ++j) accumulate_row<Square>(rows + j * stride, T, 1, sum);
}

// Slides a window one channel on: adds row `in`, subtracts row `out` (each when inside [0, C)).
template <bool Square, typename scalar_t>
inline void window_slide(const scalar_t* rows, int64_t stride, int64_t C, int64_t in, int64_t out, int64_t T,
                         acc_t* sum) {
  if (in < C) accumulate_row<Square>(rows + in * stride, T, 1, sum);
  if (out >= 0) accumulate_row<Square>(rows + out * stride, T, -1, sum);
}

// y = x * (k + an * window_sum(x^2)) ^ -beta for one task; an = alpha / size.
template <PowKind K, typename scalar_t>
void forward_tile(const scalar_t* x, scalar_t* y, const LrnShape& d, int64_t T, acc_t an, scalar_t beta, acc_t k,
                  acc_t* sum, bool stream) {
  window_init<true>(x, d.S, std::min(d.after, d.C - 1), T, sum);
  for (int64_t c = 0; c < d.C; ++c) {
    if (c > 0) window_slide<true>(x, d.S, d.C, c + d.after, c - d.before - 1, T, sum);
    const scalar_t* xr = x + c * d.S;
    blocked_store(y + c * d.S, 0, T, stream,
                  [=](int64_t t) { return xr[t] * neg_pow<K>(scalar_t(k + an * sum[t]), beta); });
  }
}

// dx_i = g_i p_i - 2 an beta x_i * sum_{c in [i - after, i + before]} g_c x_c p_c / s_c, with p = s^-beta.
// Pass A recomputes s from x (running sum) and keeps p and q = g x p / s for the tile in scratch (L2-sized);
// pass B slides a second window over q. P, Q: (C, ld) scratch rows.
template <PowKind K, typename scalar_t>
void backward_tile(const scalar_t* g, const scalar_t* x, scalar_t* dx, const LrnShape& d, int64_t T, int64_t ld,
                   acc_t an, scalar_t beta, acc_t k, acc_t* sum, scalar_t* P, scalar_t* Q, bool stream) {
  window_init<true>(x, d.S, std::min(d.after, d.C - 1), T, sum);
  for (int64_t c = 0; c < d.C; ++c) {
    if (c > 0) window_slide<true>(x, d.S, d.C, c + d.after, c - d.before - 1, T, sum);
    const scalar_t* gr = g + c * d.S;
    const scalar_t* xr = x + c * d.S;
    scalar_t* pr = P + c * ld;
    scalar_t* qr = Q + c * ld;
#pragma omp simd
    for (int64_t t = 0; t < T; ++t) {
      const scalar_t s = scalar_t(k + an * sum[t]);
      const scalar_t p = neg_pow<K>(s, beta);
      pr[t] = p;
      qr[t] = gr[t] * xr[t] * p / s;
    }
  }
  // The q window of i is [i - after, i + before]: the x^2 window with before and after swapped.
  window_init<false>(Q, ld, std::min(d.before, d.C - 1), T, sum);
  const scalar_t coef = scalar_t(2 * an * acc_t(beta));
  for (int64_t i = 0; i < d.C; ++i) {
    if (i > 0) window_slide<false>(Q, ld, d.C, i + d.before, i - d.after - 1, T, sum);
    const scalar_t *gr = g + i * d.S, *xr = x + i * d.S, *pr = P + i * ld;
    blocked_store(dx + i * d.S, 0, T, stream,
                  [=](int64_t t) { return gr[t] * pr[t] - coef * xr[t] * scalar_t(sum[t]); });
  }
}

// All (n, spatial tile) tasks of the forward, spread over nt threads.
template <PowKind K, typename scalar_t>
void forward_all(const scalar_t* x, scalar_t* y, const LrnShape& d, double an, double beta, double k, int nt) {
  const int64_t tiles = (d.S + kFwdTile - 1) / kFwdTile;
  const bool stream = should_stream(d.N * d.C * d.S, sizeof(scalar_t));
#pragma omp parallel num_threads(nt)
  {
    std::vector<acc_t> sum(kFwdTile);
#pragma omp for schedule(static)
    for (int64_t it = 0; it < d.N * tiles; ++it) {
      const int64_t n = it / tiles, s0 = (it % tiles) * kFwdTile;
      const int64_t off = n * d.C * d.S + s0;
      forward_tile<K>(x + off, y + off, d, std::min(kFwdTile, d.S - s0), acc_t(an), scalar_t(beta), acc_t(k),
                      sum.data(), stream);
    }
    stream_fence();
  }
}

// All backward tasks; tiles are sized so the two (C, tile) scratch arrays of a thread stay in L2.
template <PowKind K, typename scalar_t>
void backward_all(const scalar_t* g, const scalar_t* x, scalar_t* dx, const LrnShape& d, double an, double beta,
                  double k, int nt) {
  const int64_t tile = std::min<int64_t>(std::max<int64_t>((kBwdScratch / d.C) / 16 * 16, 16), kFwdTile);
  const int64_t tiles = (d.S + tile - 1) / tile;
  const bool stream = should_stream(d.N * d.C * d.S, sizeof(scalar_t));
#pragma omp parallel num_threads(nt)
  {
    std::vector<acc_t> sum(tile);
    std::vector<scalar_t> P(d.C * tile), Q(d.C * tile);
#pragma omp for schedule(static)
    for (int64_t it = 0; it < d.N * tiles; ++it) {
      const int64_t n = it / tiles, s0 = (it % tiles) * tile;
      const int64_t off = n * d.C * d.S + s0;
      backward_tile<K>(g + off, x + off, dx + off, d, std::min(tile, d.S - s0), tile, acc_t(an), scalar_t(beta),
                       acc_t(k), sum.data(), P.data(), Q.data(), stream);
    }
    stream_fence();
  }
}

LrnShape lrn_shape(const at::Tensor& x, int64_t size) {
  return LrnShape{x.size(0), x.size(1), spatial_numel(x), size / 2, (size - 1) / 2};
}

at::Tensor lrn_forward_cpu(const at::Tensor& x_in, int64_t size, double alpha, double beta, double k) {
  check_lrn_args(x_in, size, alpha, beta, k, kOp);
  const at::Tensor x = x_in.contiguous();
  at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
  if (x.numel() == 0) return y;
  const LrnShape d = lrn_shape(x, size);
  const int nt = num_threads(x.numel());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), kOp, [&] {
    dispatch_pow(pow_kind(beta), [&](auto kind) {
      forward_all<decltype(kind)::value>(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), d,
                                         alpha / size, beta, k, nt);
    });
  });
  return y;
}

at::Tensor lrn_backward_cpu(const at::Tensor& grad_in, const at::Tensor& x_in, int64_t size, double alpha,
                            double beta, double k) {
  constexpr const char* op = "medcnn::lrn_backward";
  check_lrn_args(x_in, size, alpha, beta, k, op);
  check_same_device_dtype(grad_in, x_in, op, "grad", "x");
  check_same_shape(grad_in, x_in, op, "grad", "x");
  const at::Tensor x = x_in.contiguous();
  const at::Tensor g = grad_in.contiguous();
  at::Tensor dx = at::empty_like(x, at::MemoryFormat::Contiguous);
  if (x.numel() == 0) return dx;
  const LrnShape d = lrn_shape(x, size);
  const int nt = num_threads(x.numel());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), op, [&] {
    dispatch_pow(pow_kind(beta), [&](auto kind) {
      backward_all<decltype(kind)::value>(g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                          dx.mutable_data_ptr<scalar_t>(), d, alpha / size, beta, k, nt);
    });
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(medcnn, CPU, m) {
  m.impl("lrn", &lrn_forward_cpu);
  m.impl("lrn_backward", &lrn_backward_cpu);
}

}  // namespace cpu
}  // namespace medcnn
