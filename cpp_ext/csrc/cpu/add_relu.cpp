// relu(a + b) for residual blocks on the CPU: one read of a and b, one write (eager: add, then relu over the sum),
// and a backward that needs only the output.
//
// Works on any layout both inputs share: they are brought to a's suggested memory format (a no-op for the usual
// contiguous or channels-last pair) and processed as flat arrays, so the output keeps that format.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <omp.h>
#include <torch/library.h>

#include "cpu_utils.h"

namespace medcnn {
namespace cpu {
namespace {

// y[i] = f(i) over n values: threads take contiguous ranges, blocks of them are streamed out when large.
template <typename scalar_t, typename F>
void elementwise(scalar_t* y, int64_t n, int nt, F&& f) {
  const bool stream = should_stream(n, sizeof(scalar_t));
#pragma omp parallel num_threads(nt)
  {
    const int64_t parts = omp_get_num_threads(), part = omp_get_thread_num();
    const int64_t per = (n / parts + kBlock - 1) / kBlock * kBlock;  // block-aligned split
    blocked_store(y, std::min(n, part * per), part + 1 == parts ? n : std::min(n, (part + 1) * per), stream, f);
    stream_fence();
  }
}

template <typename scalar_t>
void add_relu_kernel(const scalar_t* a, const scalar_t* b, scalar_t* y, int64_t n, int nt) {
  elementwise(y, n, nt, [=](int64_t i) {
    const scalar_t v = a[i] + b[i];
    return apply_act<Act::ReLU>(v, scalar_t(0));  // NaN stays NaN, as torch.relu
  });
}

template <typename scalar_t>
void relu_backward_kernel(const scalar_t* g, const scalar_t* out, scalar_t* dx, int64_t n, int nt) {
  elementwise(dx, n, nt, [=](int64_t i) {
    const scalar_t gv = g[i];  // loaded unconditionally: a select, not a branch, so the loop vectorizes
    return out[i] > scalar_t(0) ? gv : scalar_t(0);
  });
}

at::Tensor add_relu_cpu(const at::Tensor& a_in, const at::Tensor& b_in) {
  constexpr const char* op = "medcnn::add_relu";
  check_pair(a_in, b_in, op, "a", "b");
  const auto fmt = a_in.suggest_memory_format();
  const at::Tensor a = a_in.contiguous(fmt), b = b_in.contiguous(fmt);
  at::Tensor y = at::empty_like(a, fmt);
  const int64_t n = a.numel();
  const int nt = num_threads(n);
  // (OpenMP pragmas cannot sit inside the dispatch macro's argument: the loops are in *_kernel above.)
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), op, [&] {
    add_relu_kernel(a.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), n, nt);
  });
  return y;
}

at::Tensor relu_backward_cpu(const at::Tensor& grad_in, const at::Tensor& out_in) {
  constexpr const char* op = "medcnn::relu_backward";
  check_pair(grad_in, out_in, op, "grad", "out");
  const auto fmt = out_in.suggest_memory_format();
  const at::Tensor g = grad_in.contiguous(fmt), out = out_in.contiguous(fmt);
  at::Tensor dx = at::empty_like(out, fmt);
  const int64_t n = out.numel();
  const int nt = num_threads(n);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), op, [&] {
    relu_backward_kernel(g.const_data_ptr<scalar_t>(), out.const_data_ptr<scalar_t>(), dx.mutable_data_ptr<scalar_t>(),
                         n, nt);
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(medcnn, CPU, m) {
  m.impl("add_relu", &add_relu_cpu);
  m.impl("relu_backward", &relu_backward_cpu);
}

}  // namespace cpu
}  // namespace medcnn
