// Backward of batch norm + activation on the CPU (forward in bn_act.cpp).
//
// From the saved tensor (x, or the output y in the InPlace-ABN form) each element gives
//   dz = grad * act'(z)  and  xhat = (x - mean) * invstd   [or xhat = (act^-1(y) - beta) / gamma],
// then, per channel c with M values:  dbeta = sum dz,  dgamma = sum dz * xhat,
//   dx = gamma * invstd * (dz - dbeta / M - xhat * dgamma / M)   (training: batch statistics)
//   dx = gamma * invstd * dz                                      (eval: running statistics)
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <tuple>
#include <vector>

#include "cpu_utils.h"

namespace medcnn {
namespace cpu {
namespace {

using Opt = std::optional<at::Tensor>;
constexpr const char* kOp = "medcnn::bn_act_backward";

// Per-channel constants that turn a saved value and its gradient into (dz, xhat).
template <typename scalar_t>
struct Chan {
  scalar_t scale, shift;    // z = x * scale + shift (exactly as the forward computed it)
  scalar_t mean, invstd;    // xhat from x
  scalar_t beta, inv_gamma; // xhat from z (output-saving form)
};

template <Act A, bool FromOutput, typename scalar_t>
inline void recover(scalar_t v, scalar_t g, const Chan<scalar_t>& k, scalar_t slope, scalar_t inv_slope,
                    scalar_t& dz, scalar_t& xhat) {
  if constexpr (FromOutput) {
    dz = g * act_grad<A>(v, slope);
    xhat = (act_inverse<A>(v, inv_slope) - k.beta) * k.inv_gamma;
  } else {
    dz = g * act_grad<A>(v * k.scale + k.shift, slope);
    xhat = (v - k.mean) * k.invstd;
  }
}

struct Shape {
  int64_t N, C, S;
};

struct Grads {
  acc_t M;          // values per channel
  bool training;    // dx needs the channel sums (batch statistics) or not (running statistics)
  bool stream;      // dx is large: stream it out
};

// Channel c: pass 1 sums dz and dz * xhat over its N rows (eval also writes dx there: it needs no sums); pass 2
// (training) writes dx while the channel's rows of grad and saved are still in this core's cache.
template <Act A, bool FromOutput, typename scalar_t>
void backward_channel(const scalar_t* g, const scalar_t* v, scalar_t* dx, const Shape& d, int64_t c,
                      const Chan<scalar_t> k, scalar_t slope, scalar_t inv_slope, const Grads o,
                      scalar_t* dgamma, scalar_t* dbeta) {
  // k and o by value: the compiler can then see that stores to dx do not change them, and vectorizes without a
  // run-time alias check (which otherwise sent every row down the scalar path).
  acc_t sdz = 0, sdzx = 0;
  for (int64_t n = 0; n < d.N; ++n) {
    const int64_t off = (n * d.C + c) * d.S;
#pragma omp simd reduction(+ : sdz, sdzx)
    for (int64_t s = 0; s < d.S; ++s) {
      scalar_t dz, xhat;
      recover<A, FromOutput>(v[off + s], g[off + s], k, slope, inv_slope, dz, xhat);
      sdz += acc_t(dz);
      sdzx += acc_t(dz) * acc_t(xhat);
      if (!o.training) dx[off + s] = dz * k.scale;
    }
  }
  dbeta[c] = scalar_t(sdz);
  dgamma[c] = scalar_t(sdzx);
  if (!o.training) return;
  const scalar_t mdz = scalar_t(sdz / o.M), mdzx = scalar_t(sdzx / o.M);
  for (int64_t n = 0; n < d.N; ++n) {
    const int64_t off = (n * d.C + c) * d.S;
    const scalar_t *gr = g + off, *vr = v + off;
    blocked_store(dx + off, 0, d.S, o.stream, [=](int64_t s) {
      scalar_t dz, xhat;
      recover<A, FromOutput>(vr[s], gr[s], k, slope, inv_slope, dz, xhat);
      return k.scale * (dz - mdz - xhat * mdzx);
    });
  }
}

template <Act A, bool FromOutput, typename scalar_t>
void backward_kernel(const scalar_t* g, const scalar_t* v, scalar_t* dx, const Shape& d,
                     const std::vector<Chan<scalar_t>>& ch, scalar_t slope, bool training, scalar_t* dgamma,
                     scalar_t* dbeta, int nt) {
  const scalar_t inv_slope = slope != scalar_t(0) ? scalar_t(1) / slope : scalar_t(0);
  const Grads o{acc_t(d.N * d.S), training, should_stream(d.N * d.C * d.S, sizeof(scalar_t))};
#pragma omp parallel num_threads(nt)
  {
#pragma omp for schedule(static)
    for (int64_t c = 0; c < d.C; ++c) {
      backward_channel<A, FromOutput>(g, v, dx, d, c, ch[c], slope, inv_slope, o, dgamma, dbeta);
    }
    stream_fence();
  }
}

template <typename scalar_t>
std::vector<Chan<scalar_t>> channel_constants(const Opt& weight, const Opt& bias, const at::Tensor& mean,
                                              const at::Tensor& var, double eps, int64_t C) {
  const at::Tensor m = mean.contiguous(), v = var.contiguous();
  const at::Tensor w = weight.has_value() && weight->defined() ? weight->contiguous() : at::Tensor();
  const at::Tensor b = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  std::vector<Chan<scalar_t>> ch(C);
  for (int64_t c = 0; c < C; ++c) {
    const acc_t gamma = w.defined() ? acc_t(w.const_data_ptr<scalar_t>()[c]) : acc_t(1);
    const acc_t beta = b.defined() ? acc_t(b.const_data_ptr<scalar_t>()[c]) : acc_t(0);
    const acc_t invstd = acc_t(1) / std::sqrt(acc_t(v.const_data_ptr<scalar_t>()[c]) + eps);
    const acc_t mu = acc_t(m.const_data_ptr<scalar_t>()[c]);
    const acc_t scale = gamma * invstd;
    ch[c] = Chan<scalar_t>{scalar_t(scale), scalar_t(beta - mu * scale), scalar_t(mu), scalar_t(invstd),
                           scalar_t(beta), gamma != 0 ? scalar_t(1 / gamma) : scalar_t(0)};
  }
  return ch;
}

void check_backward_args(const at::Tensor& grad, const at::Tensor& saved, const Opt& weight, const at::Tensor& mean,
                         const at::Tensor& var, bool saved_is_output) {
  check_same_device_dtype(grad, saved, kOp, "grad", "saved");
  check_same_shape(grad, saved, kOp, "grad", "saved");
  if (saved_is_output && weight.has_value() && weight->defined()) {
    // The normalized input is (z - beta) / gamma: a zero gamma loses it (InPlace-ABN has the same limit).
    TORCH_CHECK_VALUE(!weight->eq(0).any().item<bool>(), kOp,
                      ": the output-saving (in-place) form cannot invert a channel whose weight is 0; "
                      "use the standard form for such layers (e.g. zero-initialised residual batch norms)");
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_act_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& saved_in, const Opt& weight, const Opt& bias, const at::Tensor& mean,
    const at::Tensor& var, bool training, double eps, c10::string_view act, double negative_slope,
    bool saved_is_output) {
  const Act a = check_bn_act_args(saved_in, weight, bias, mean, var, training, eps, std::string(act), negative_slope,
                                  saved_is_output, kOp);
  check_backward_args(grad_in, saved_in, weight, mean, var, saved_is_output);
  const at::Tensor g = grad_in.contiguous(), v = saved_in.contiguous();
  const Shape d{v.size(0), v.size(1), spatial_numel(v)};
  at::Tensor dx = at::empty_like(v, at::MemoryFormat::Contiguous);
  at::Tensor dgamma = at::empty({d.C}, v.options()), dbeta = at::empty({d.C}, v.options());
  const int nt = num_threads(v.numel());
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), kOp, [&] {
    const auto ch = channel_constants<scalar_t>(weight, bias, mean, var, eps, d.C);
    dispatch_act(a, [&](auto act_c) {
      constexpr Act A = decltype(act_c)::value;
      auto run = [&](auto from_output) {
        backward_kernel<A, decltype(from_output)::value>(
            g.const_data_ptr<scalar_t>(), v.const_data_ptr<scalar_t>(), dx.mutable_data_ptr<scalar_t>(), d, ch,
            scalar_t(negative_slope), training, dgamma.mutable_data_ptr<scalar_t>(),
            dbeta.mutable_data_ptr<scalar_t>(), nt);
      };
      if (saved_is_output) run(std::true_type());
      else run(std::false_type());
    });
  });
  return {dx, dgamma, dbeta};
}

}  // namespace cpu
}  // namespace medcnn
