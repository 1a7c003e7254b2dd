// Batch norm + activation on the CPU: statistics, normalization and activation without full-size intermediates.
//
// x is viewed as (N, C, S). Training forward = per channel, one read for the statistics + one read/write that
// normalizes and activates, the second read hitting the cache (PyTorch eager: statistics, normalize, then the
// activation as separate passes over memory). Backward (bn_act_backward.cpp) works the same way per channel; the
// activation's derivative is recomputed from x (or read off the output in the InPlace-ABN form), never stored.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <tuple>
#include <utility>
#include <vector>

#include "cpu_utils.h"

namespace medcnn {
namespace cpu {
namespace {

constexpr const char* kOp = "medcnn::bn_act";
using Opt = std::optional<at::Tensor>;

struct BnDims {
  int64_t N, C, S;
  int64_t M() const { return N * S; }  // values per channel
};

BnDims dims_of(const at::Tensor& x) { return BnDims{x.size(0), x.size(1), spatial_numel(x)}; }

bool has(const Opt& t) { return t.has_value() && t->defined(); }

// Per-channel values of an optional parameter as acc_t (fill when absent).
template <typename scalar_t>
std::vector<acc_t> channel_values(const Opt& p, int64_t C, acc_t fill) {
  std::vector<acc_t> out(C, fill);
  if (!has(p)) return out;
  const at::Tensor t = p->contiguous();
  const scalar_t* v = t.const_data_ptr<scalar_t>();
  for (int64_t c = 0; c < C; ++c) out[c] = acc_t(v[c]);
  return out;
}

// Biased mean and variance of channel c. Sums are taken around the channel's first value (a shift that keeps the
// sum of squares minus the square of the sum well conditioned when |mean| >> std) and accumulated in double.
template <typename scalar_t>
void channel_stats(const scalar_t* x, const BnDims& d, int64_t c, acc_t& mean, acc_t& var) {
  const acc_t shift = acc_t(x[c * d.S]);
  acc_t s1 = 0, s2 = 0;
  for (int64_t n = 0; n < d.N; ++n) {
    const scalar_t* r = x + (n * d.C + c) * d.S;
#pragma omp simd reduction(+ : s1, s2)
    for (int64_t s = 0; s < d.S; ++s) {
      const acc_t v = acc_t(r[s]) - shift;
      s1 += v;
      s2 += v * v;
    }
  }
  const acc_t m = s1 / acc_t(d.M());
  mean = shift + m;
  var = std::max(s2 / acc_t(d.M()) - m * m, acc_t(0));
}

// y = act(x * scale + shift) over one row of S values at `off`; y may be x (in-place form).
template <Act A, typename scalar_t>
inline void row_affine_act(const scalar_t* x, scalar_t* y, int64_t off, int64_t S, scalar_t scale, scalar_t shift,
                           scalar_t slope, bool stream) {
  const scalar_t* xr = x + off;
  blocked_store(y + off, 0, S, stream, [=](int64_t s) { return apply_act<A>(xr[s] * scale + shift, slope); });
}

// Per-channel inputs of the forward, as acc_t: weight (1), bias (0), and in eval the running statistics.
struct ChannelParams {
  std::vector<acc_t> w, b, mean, var;
};

// Training: per channel, statistics then normalize + activate while the channel (N * S values, a few hundred KB
// for typical layers) is still in this core's L2 cache, so x comes from memory once. Eval: no statistics, so rows
// are spread over threads instead (also fine for few channels).
template <Act A, typename scalar_t>
void forward_kernel(const scalar_t* x, scalar_t* y, const BnDims& d, ChannelParams& p, bool training, double eps,
                    scalar_t slope, int nt) {
  auto affine = [&](int64_t c) {
    const acc_t sc = p.w[c] / std::sqrt(p.var[c] + eps);
    return std::pair<scalar_t, scalar_t>(scalar_t(sc), scalar_t(p.b[c] - p.mean[c] * sc));
  };
  const bool stream = should_stream(d.N * d.C * d.S, sizeof(scalar_t));
#pragma omp parallel num_threads(nt)
  {
    if (training) {
#pragma omp for schedule(static)
      for (int64_t c = 0; c < d.C; ++c) {
        channel_stats(x, d, c, p.mean[c], p.var[c]);
        const auto [scale, shift] = affine(c);
        for (int64_t n = 0; n < d.N; ++n) {
          row_affine_act<A>(x, y, (n * d.C + c) * d.S, d.S, scale, shift, slope, stream);
        }
      }
    } else {
#pragma omp for schedule(static)
      for (int64_t row = 0; row < d.N * d.C; ++row) {
        const auto [scale, shift] = affine(row % d.C);
        row_affine_act<A>(x, y, row * d.S, d.S, scale, shift, slope, stream);
      }
    }
    stream_fence();
  }
}

// Statistics (batch or running) and the fused normalize + activate pass from x into y. Returns (mean, var).
std::tuple<at::Tensor, at::Tensor> run_forward(const at::Tensor& x, at::Tensor& y, const Opt& weight,
                                                const Opt& bias, const Opt& running_mean, const Opt& running_var,
                                                bool training, double eps, Act act, double slope) {
  const BnDims d = dims_of(x);
  at::Tensor mean = at::empty({d.C}, x.options()), var = at::empty({d.C}, x.options());
  const int nt = num_threads(x.numel());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), kOp, [&] {
    ChannelParams p{channel_values<scalar_t>(weight, d.C, 1), channel_values<scalar_t>(bias, d.C, 0),
                    channel_values<scalar_t>(training ? Opt() : running_mean, d.C, 0),
                    channel_values<scalar_t>(training ? Opt() : running_var, d.C, training ? 0 : 1)};
    if (d.M() > 0) {  // empty batch: zero statistics, which the caller does not fold into running stats
      dispatch_act(act, [&](auto a) {
        forward_kernel<decltype(a)::value>(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), d, p,
                                           training, eps, scalar_t(slope), nt);
      });
    }
    scalar_t* mp = mean.mutable_data_ptr<scalar_t>();
    scalar_t* vp = var.mutable_data_ptr<scalar_t>();
    for (int64_t c = 0; c < d.C; ++c) {
      mp[c] = scalar_t(p.mean[c]);
      vp[c] = scalar_t(p.var[c]);
    }
  });
  return {mean, var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_act_cpu(const at::Tensor& x_in, const Opt& weight, const Opt& bias,
                                                          const Opt& running_mean, const Opt& running_var,
                                                          bool training, double eps, c10::string_view act,
                                                          double negative_slope, bool save_output) {
  const Act a = check_bn_act_args(x_in, weight, bias, running_mean, running_var, training, eps, std::string(act),
                                  negative_slope, save_output, kOp);
  const at::Tensor x = x_in.contiguous();
  at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
  auto [mean, var] = run_forward(x, y, weight, bias, running_mean, running_var, training, eps, a, negative_slope);
  return {y, mean, var};
}

// In-place form: the output overwrites x (InPlace-ABN), so no second full-size buffer is allocated.
std::tuple<at::Tensor, at::Tensor> bn_act_inplace_cpu(at::Tensor& x, const Opt& weight, const Opt& bias,
                                                      const Opt& running_mean, const Opt& running_var, bool training,
                                                      double eps, c10::string_view act, double negative_slope) {
  constexpr const char* op = "medcnn::bn_act_";
  const Act a = check_bn_act_args(x, weight, bias, running_mean, running_var, training, eps, std::string(act),
                                  negative_slope, false, op);
  if (x.is_contiguous()) {
    return run_forward(x, x, weight, bias, running_mean, running_var, training, eps, a, negative_slope);
  }
  at::Tensor xc = x.contiguous();
  auto stats = run_forward(xc, xc, weight, bias, running_mean, running_var, training, eps, a, negative_slope);
  x.copy_(xc);
  return stats;
}

}  // namespace

// Backward lives in bn_act_backward.cpp; both register here.
std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_act_backward_cpu(
    const at::Tensor& grad, const at::Tensor& saved, const Opt& weight, const Opt& bias, const at::Tensor& mean,
    const at::Tensor& var, bool training, double eps, c10::string_view act, double negative_slope,
    bool saved_is_output);

TORCH_LIBRARY_IMPL(medcnn, CPU, m) {
  m.impl("bn_act", &bn_act_cpu);
  m.impl("bn_act_", &bn_act_inplace_cpu);
  m.impl("bn_act_backward", &bn_act_backward_cpu);
}

}  // namespace cpu
}  // namespace medcnn
