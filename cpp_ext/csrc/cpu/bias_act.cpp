// Bias + activation with gain on the CPU (StyleGAN's fused_bias_act): y = act(x + bias[c]) * gain in one read of x
// and one write (eager: add, activation, mul, each a full pass with a full-size intermediate), and a backward that
// needs only the output: dx = grad * gain * act'(out) with dbias, the per-channel sum of dx, in the same pass.
//
// Layouts: x is brought to its suggested memory format (a no-op for the usual contiguous or channels-last input)
// and the output keeps it. Contiguous (N, C, S) data is walked as N*C rows of S values with one bias value per row;
// channels-last (N, S, C) data (and any x with S == 1, e.g. 2-D (N, C)) as N*S rows of C values with the bias
// vector along the row. Inner loops are contiguous, branch-free and vectorizable either way.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <omp.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "cpu_utils.h"

namespace medcnn {
namespace cpu {
namespace {

// rows x len values; row_bias: the bias is one value per row (channel = row % C), else a vector of len values.
struct Geometry {
  int64_t rows, len, C;
  bool row_bias;
};

Geometry geometry(const at::Tensor& x, at::MemoryFormat fmt) {
  const int64_t N = x.size(0), C = x.size(1), S = spatial_numel(x);
  if (fmt == at::MemoryFormat::Contiguous && S != 1) return {N * C, S, C, true};
  return {N * S, C, C, false};
}

template <Act A, typename scalar_t>
void bias_act_kernel(const scalar_t* x, const scalar_t* bias, scalar_t* y, Geometry g, scalar_t slope,
                     scalar_t gain, int nt) {
  const bool stream = should_stream(g.rows * g.len, sizeof(scalar_t));
#pragma omp parallel num_threads(nt)
  {
#pragma omp for schedule(static)
    for (int64_t r = 0; r < g.rows; ++r) {
      const int64_t base = r * g.len;
      if (g.row_bias) {
        const scalar_t b = bias[r % g.C];
        blocked_store(y, base, base + g.len, stream,
                      [=](int64_t i) { return apply_act<A>(x[i] + b, slope) * gain; });
      } else {
        blocked_store(y, base, base + g.len, stream,
                      [=](int64_t i) { return apply_act<A>(x[i] + bias[i - base], slope) * gain; });
      }
    }
    stream_fence();
  }
}

// dx[i] = grad[i] * (out[i] > 0 ? gain : gain * slope) (gain alone for identity); row sums of dx go to
// `row_sums` (row_bias layout) or to this thread's C partial sums in `partial` (channels-last layout).
template <Act A, typename scalar_t>
void bias_act_backward_kernel(const scalar_t* grad, const scalar_t* out, scalar_t* dx, acc_t* row_sums,
                              acc_t* partial, Geometry g, scalar_t slope, scalar_t gain, int nt) {
  const bool stream = should_stream(g.rows * g.len, sizeof(scalar_t));
  const scalar_t pos = gain;
  const scalar_t neg = A == Act::Identity ? gain : A == Act::ReLU ? scalar_t(0) : gain * slope;
#pragma omp parallel num_threads(nt)
  {
    acc_t* mine = g.row_bias ? nullptr : partial + int64_t(omp_get_thread_num()) * g.C;
    alignas(64) scalar_t buf[kBlock];
#pragma omp for schedule(static)
    for (int64_t r = 0; r < g.rows; ++r) {
      const int64_t base = r * g.len;
      acc_t sum = 0;
      for (int64_t b0 = 0; b0 < g.len; b0 += kBlock) {
        const int64_t n = std::min(kBlock, g.len - b0);
        const scalar_t* gp = grad + base + b0;
        const scalar_t* op = out + base + b0;
        if (g.row_bias) {
#pragma omp simd reduction(+ : sum)
          for (int64_t i = 0; i < n; ++i) {
            const scalar_t v = gp[i] * (op[i] > scalar_t(0) ? pos : neg);
            buf[i] = v;
            sum += acc_t(v);
          }
        } else {
          acc_t* acc = mine + b0;
#pragma omp simd
          for (int64_t i = 0; i < n; ++i) {
            const scalar_t v = gp[i] * (op[i] > scalar_t(0) ? pos : neg);
            buf[i] = v;
            acc[i] += acc_t(v);
          }
        }
        store_block(dx + base + b0, buf, n, stream);
      }
      if (g.row_bias) row_sums[r] = sum;
    }
    stream_fence();
  }
}

at::Tensor bias_act_cpu(const at::Tensor& x_in, const std::optional<at::Tensor>& bias_in, c10::string_view act,
                        double negative_slope, double gain) {
  constexpr const char* op = "medcnn::bias_act";
  const Act a = check_bias_act_args(x_in, bias_in, std::string(act), negative_slope, gain, op);
  const auto fmt = x_in.suggest_memory_format();
  const at::Tensor x = x_in.contiguous(fmt);
  const at::Tensor bias = bias_in.has_value() && bias_in->defined() ? bias_in->contiguous()
                                                                    : at::zeros({x.size(1)}, x.options());
  at::Tensor y = at::empty_like(x, fmt);
  if (x.numel() == 0) return y;
  const Geometry g = geometry(x, fmt);
  const int nt = num_threads(x.numel());
  // (OpenMP pragmas cannot sit inside the dispatch macro's argument: the loops are in *_kernel above.)
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), op, [&] {
    dispatch_act(a, [&](auto A) {
      bias_act_kernel<decltype(A)::value>(x.const_data_ptr<scalar_t>(), bias.const_data_ptr<scalar_t>(),
                                          y.mutable_data_ptr<scalar_t>(), g, scalar_t(negative_slope),
                                          scalar_t(gain), nt);
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> bias_act_backward_cpu(const at::Tensor& grad_in, const at::Tensor& out_in,
                                                         c10::string_view act, double negative_slope, double gain) {
  constexpr const char* op = "medcnn::bias_act_backward";
  const Act a = check_bias_act_args(out_in, std::nullopt, std::string(act), negative_slope, gain, op);
  check_same_device_dtype(grad_in, out_in, op, "grad", "out");
  check_same_shape(grad_in, out_in, op, "grad", "out");
  const auto fmt = out_in.suggest_memory_format();
  const at::Tensor out = out_in.contiguous(fmt), grad = grad_in.contiguous(fmt);
  at::Tensor dx = at::empty_like(out, fmt);
  const int64_t C = out.size(1);
  if (out.numel() == 0) return {dx, at::zeros({C}, out.options())};
  const Geometry g = geometry(out, fmt);
  const int nt = num_threads(out.numel());
  std::vector<acc_t> row_sums(g.row_bias ? g.rows : 0);
  std::vector<acc_t> partial(g.row_bias ? 0 : size_t(nt) * C, acc_t(0));
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), op, [&] {
    dispatch_act(a, [&](auto A) {
      bias_act_backward_kernel<decltype(A)::value>(grad.const_data_ptr<scalar_t>(), out.const_data_ptr<scalar_t>(),
                                                   dx.mutable_data_ptr<scalar_t>(), row_sums.data(), partial.data(),
                                                   g, scalar_t(negative_slope), scalar_t(gain), nt);
    });
  });
  // Per-channel totals in double, then one rounding to the output dtype.
  std::vector<acc_t> total(C, acc_t(0));
  if (g.row_bias) {
    for (int64_t r = 0; r < g.rows; ++r) total[r % C] += row_sums[r];
  } else {
    for (int t = 0; t < nt; ++t)
      for (int64_t c = 0; c < C; ++c) total[c] += partial[size_t(t) * C + c];
  }
  at::Tensor dbias = at::empty({C}, out.options());
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), op, [&] {
    scalar_t* db = dbias.mutable_data_ptr<scalar_t>();
    for (int64_t c = 0; c < C; ++c) db[c] = scalar_t(total[c]);
  });
  return {dx, dbias};
}

}  // namespace

TORCH_LIBRARY_IMPL(medcnn, CPU, m) {
  m.impl("bias_act", &bias_act_cpu);
  m.impl("bias_act_backward", &bias_act_backward_cpu);
}

}  // namespace cpu
}  // namespace medcnn
