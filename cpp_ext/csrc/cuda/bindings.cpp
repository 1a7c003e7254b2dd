// torch bindings of the CUDA launchers: tensor checks (../checks.h, shared with the CPU kernels), contiguous
// layouts, output allocation, device guard and the current stream, then a call into the framework-free launcher.
//
// Compiled only against a CUDA build of torch: trainsdk/ops/_extension.py adds cuda/ to the sources and defines
// MEDCNN_WITH_CUDA only then, and the guard below keeps this file inert in any other build.
#ifdef MEDCNN_WITH_CUDA

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/div.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/linspace.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "../checks.h"
#include "launchers.h"

namespace medcnn {
namespace cuda_bindings {
namespace {

using Opt = std::optional<at::Tensor>;

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

int64_t spatial(const at::Tensor& x) { return x.dim() > 2 ? x.numel() / (x.size(0) * x.size(1)) : 1; }

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

at::Tensor contiguous_or_undefined(const Opt& t) {
  return t.has_value() && t->defined() ? t->contiguous() : at::Tensor();
}

at::Tensor lrn_cuda(const at::Tensor& x_in, int64_t size, double alpha, double beta, double k) {
  constexpr const char* op = "medcnn::lrn";
  check_lrn_args(x_in, size, alpha, beta, k, op);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
  if (x.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), op, [&] {
    check_launch(cuda::lrn_forward<scalar_t>(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), x.size(0),
                                             x.size(1), spatial(x), size, alpha, beta, k,
                                             c10::cuda::getCurrentCUDAStream()),
                 op);
  });
  return y;
}

at::Tensor lrn_backward_cuda(const at::Tensor& grad, const at::Tensor& x_in, int64_t size, double alpha, double beta,
                             double k) {
  constexpr const char* op = "medcnn::lrn_backward";
  check_lrn_args(x_in, size, alpha, beta, k, op);
  check_same_device_dtype(grad, x_in, op, "grad", "x");
  check_same_shape(grad, x_in, op, "grad", "x");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), g = grad.contiguous();
  at::Tensor dx = at::empty_like(x, at::MemoryFormat::Contiguous);
  if (x.numel() == 0) return dx;
  at::Tensor workspace = at::empty_like(x, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), op, [&] {
    check_launch(cuda::lrn_backward<scalar_t>(g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                              dx.mutable_data_ptr<scalar_t>(), workspace.mutable_data_ptr<scalar_t>(),
                                              x.size(0), x.size(1), spatial(x), size, alpha, beta, k,
                                              c10::cuda::getCurrentCUDAStream()),
                 op);
  });
  return dx;
}

// Forward of both bn_act forms: y may be x (in-place). Returns (mean, var).
std::tuple<at::Tensor, at::Tensor> bn_forward(const at::Tensor& x, at::Tensor& y, const Opt& weight, const Opt& bias,
                                              const Opt& running_mean, const Opt& running_var, bool training,
                                              double eps, Act act, double slope) {
  constexpr const char* op = "medcnn::bn_act";
  const int64_t C = x.size(1);
  at::Tensor mean = at::empty({C}, x.options()), var = at::empty({C}, x.options());
  const at::Tensor w = contiguous_or_undefined(weight), b = contiguous_or_undefined(bias);
  const at::Tensor rm = contiguous_or_undefined(running_mean), rv = contiguous_or_undefined(running_var);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), op, [&] {
    check_launch(cuda::bn_act_forward<scalar_t>(
                     x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(w),
                     ptr_or_null<scalar_t>(b), ptr_or_null<scalar_t>(rm), ptr_or_null<scalar_t>(rv),
                     mean.mutable_data_ptr<scalar_t>(), var.mutable_data_ptr<scalar_t>(), x.size(0), C, spatial(x),
                     training, eps, act, slope, c10::cuda::getCurrentCUDAStream()),
                 op);
  });
  return {mean, var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_act_cuda(const at::Tensor& x_in, const Opt& weight, const Opt& bias,
                                                           const Opt& running_mean, const Opt& running_var,
                                                           bool training, double eps, c10::string_view act,
                                                           double slope, bool save_output) {
  constexpr const char* op = "medcnn::bn_act";
  const Act a = check_bn_act_args(x_in, weight, bias, running_mean, running_var, training, eps, std::string(act),
                                  slope, save_output, op);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
  auto [mean, var] = bn_forward(x, y, weight, bias, running_mean, running_var, training, eps, a, slope);
  return {y, mean, var};
}

std::tuple<at::Tensor, at::Tensor> bn_act_inplace_cuda(at::Tensor& x, const Opt& weight, const Opt& bias,
                                                       const Opt& running_mean, const Opt& running_var, bool training,
                                                       double eps, c10::string_view act, double slope) {
  constexpr const char* op = "medcnn::bn_act_";
  const Act a = check_bn_act_args(x, weight, bias, running_mean, running_var, training, eps, std::string(act), slope,
                                  false, op);
  const c10::cuda::CUDAGuard guard(x.device());
  if (x.is_contiguous()) return bn_forward(x, x, weight, bias, running_mean, running_var, training, eps, a, slope);
  at::Tensor xc = x.contiguous();
  auto stats = bn_forward(xc, xc, weight, bias, running_mean, running_var, training, eps, a, slope);
  x.copy_(xc);
  return stats;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_act_backward_cuda(
    const at::Tensor& grad, const at::Tensor& saved_in, const Opt& weight, const Opt& bias, const at::Tensor& mean,
    const at::Tensor& var, bool training, double eps, c10::string_view act, double slope, bool saved_is_output) {
  constexpr const char* op = "medcnn::bn_act_backward";
  const Act a = check_bn_act_args(saved_in, weight, bias, mean, var, training, eps, std::string(act), slope,
                                  saved_is_output, op);
  check_same_device_dtype(grad, saved_in, op, "grad", "saved");
  check_same_shape(grad, saved_in, op, "grad", "saved");
  if (saved_is_output && weight.has_value() && weight->defined()) {  // synchronizes; the in-place form only
    TORCH_CHECK_VALUE(!weight->eq(0).any().item<bool>(), op,
                      ": the output-saving (in-place) form cannot invert a channel whose weight is 0");
  }
  const c10::cuda::CUDAGuard guard(saved_in.device());
  const at::Tensor v = saved_in.contiguous(), g = grad.contiguous(), m = mean.contiguous(), s = var.contiguous();
  const at::Tensor w = contiguous_or_undefined(weight), b = contiguous_or_undefined(bias);
  const int64_t C = v.size(1);
  at::Tensor dx = at::empty_like(v, at::MemoryFormat::Contiguous);
  at::Tensor dw = at::empty({C}, v.options()), db = at::empty({C}, v.options());
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), op, [&] {
    check_launch(cuda::bn_act_backward<scalar_t>(
                     g.const_data_ptr<scalar_t>(), v.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(w),
                     ptr_or_null<scalar_t>(b), m.const_data_ptr<scalar_t>(), s.const_data_ptr<scalar_t>(),
                     dx.mutable_data_ptr<scalar_t>(), dw.mutable_data_ptr<scalar_t>(), db.mutable_data_ptr<scalar_t>(),
                     v.size(0), C, spatial(v), training, eps, a, slope, saved_is_output,
                     c10::cuda::getCurrentCUDAStream()),
                 op);
  });
  return {dx, dw, db};
}

at::Tensor add_relu_cuda(const at::Tensor& a_in, const at::Tensor& b_in) {
  constexpr const char* op = "medcnn::add_relu";
  check_pair(a_in, b_in, op, "a", "b");
  const c10::cuda::CUDAGuard guard(a_in.device());
  const auto fmt = a_in.suggest_memory_format();
  const at::Tensor a = a_in.contiguous(fmt), b = b_in.contiguous(fmt);
  at::Tensor y = at::empty_like(a, fmt);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), op, [&] {
    check_launch(cuda::add_relu_forward<scalar_t>(a.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(),
                                                  y.mutable_data_ptr<scalar_t>(), a.numel(),
                                                  c10::cuda::getCurrentCUDAStream()),
                 op);
  });
  return y;
}

at::Tensor relu_backward_cuda(const at::Tensor& grad, const at::Tensor& out_in) {
  constexpr const char* op = "medcnn::relu_backward";
  check_pair(grad, out_in, op, "grad", "out");
  const c10::cuda::CUDAGuard guard(out_in.device());
  const auto fmt = out_in.suggest_memory_format();
  const at::Tensor out = out_in.contiguous(fmt), g = grad.contiguous(fmt);
  at::Tensor dx = at::empty_like(out, fmt);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), op, [&] {
    check_launch(cuda::relu_backward<scalar_t>(g.const_data_ptr<scalar_t>(), out.const_data_ptr<scalar_t>(),
                                               dx.mutable_data_ptr<scalar_t>(), out.numel(),
                                               c10::cuda::getCurrentCUDAStream()),
                 op);
  });
  return dx;
}

// Flat layout of a bias_act tensor in `fmt`: channels-last (N, S, C) or contiguous (N, C, S).
bool channels_last_layout(at::MemoryFormat fmt) { return fmt != at::MemoryFormat::Contiguous; }

at::Tensor bias_act_cuda(const at::Tensor& x_in, const Opt& bias, c10::string_view act, double slope, double gain) {
  constexpr const char* op = "medcnn::bias_act";
  const Act a = check_bias_act_args(x_in, bias, std::string(act), slope, gain, op);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto fmt = x_in.suggest_memory_format();
  const at::Tensor x = x_in.contiguous(fmt), b = contiguous_or_undefined(bias);
  at::Tensor y = at::empty_like(x, fmt);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), op, [&] {
    check_launch(cuda::bias_act_forward<scalar_t>(x.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(b),
                                                  y.mutable_data_ptr<scalar_t>(), x.size(0), x.size(1), spatial(x),
                                                  channels_last_layout(fmt), a, slope, gain,
                                                  c10::cuda::getCurrentCUDAStream()),
                 op);
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> bias_act_backward_cuda(const at::Tensor& grad, const at::Tensor& out_in,
                                                          c10::string_view act, double slope, double gain) {
  constexpr const char* op = "medcnn::bias_act_backward";
  const Act a = check_bias_act_args(out_in, std::nullopt, std::string(act), slope, gain, op);
  check_same_device_dtype(grad, out_in, op, "grad", "out");
  check_same_shape(grad, out_in, op, "grad", "out");
  const c10::cuda::CUDAGuard guard(out_in.device());
  const auto fmt = out_in.suggest_memory_format();
  const at::Tensor out = out_in.contiguous(fmt), g = grad.contiguous(fmt);
  at::Tensor dx = at::empty_like(out, fmt);
  at::Tensor db = at::empty({out.size(1)}, out.options());
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), op, [&] {
    check_launch(cuda::bias_act_backward<scalar_t>(g.const_data_ptr<scalar_t>(), out.const_data_ptr<scalar_t>(),
                                                   dx.mutable_data_ptr<scalar_t>(), db.mutable_data_ptr<scalar_t>(),
                                                   out.size(0), out.size(1), spatial(out), channels_last_layout(fmt),
                                                   a, slope, gain, c10::cuda::getCurrentCUDAStream()),
                 op);
  });
  return {dx, db};
}

// Soft Dice statistics: contiguous copies of the inputs; the label check reads one int back (synchronizes).
int64_t dice_spatial(const at::Tensor& x) {
  int64_t s = 1;
  for (int64_t d = 2; d < x.dim(); ++d) s *= x.size(d);
  return s;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> soft_dice_stats_cuda(const at::Tensor& logits_in,
                                                                    const at::Tensor& target_in,
                                                                    c10::string_view activation) {
  constexpr const char* op = "medcnn::soft_dice_stats";
  const DiceAct act = parse_dice_activation(std::string(activation), op);
  const bool labels = check_soft_dice_args(logits_in, target_in, op);
  const int64_t N = logits_in.size(0), C = logits_in.size(1), S = dice_spatial(logits_in);
  TORCH_CHECK_VALUE(C <= cuda::kSoftDiceMaxChannels, op, ": the CUDA kernel handles up to ",
                    cuda::kSoftDiceMaxChannels, " channels, got ", C);
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const at::Tensor logits = logits_in.contiguous(), target = target_in.contiguous();
  at::Tensor inter = at::zeros({N, C}, logits.options()), psum = at::zeros({N, C}, logits.options());
  at::Tensor gsum = at::zeros({N, C}, logits.options());
  if (logits.numel() == 0) return {inter, psum, gsum};
  at::Tensor workspace = at::empty({cuda::soft_dice_workspace_size(N, C, S)}, logits.options().dtype(at::kDouble));
  at::Tensor bad = at::zeros({1}, logits.options().dtype(at::kInt));
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), op, [&] {
    check_launch(cuda::soft_dice_stats_forward<scalar_t>(
                     logits.const_data_ptr<scalar_t>(), labels ? target.const_data_ptr<int64_t>() : nullptr,
                     labels ? nullptr : target.const_data_ptr<scalar_t>(), inter.mutable_data_ptr<scalar_t>(),
                     psum.mutable_data_ptr<scalar_t>(), gsum.mutable_data_ptr<scalar_t>(),
                     workspace.mutable_data_ptr<double>(), bad.mutable_data_ptr<int>(), N, C, S,
                     static_cast<int>(act), c10::cuda::getCurrentCUDAStream()),
                 op);
  });
  TORCH_CHECK_VALUE(!labels || bad.item<int>() == 0, op, ": a target label is outside [0, ", C, "): the logits have ",
                    C, " channels");
  return {inter, psum, gsum};
}

at::Tensor soft_dice_stats_backward_cuda(const at::Tensor& grad_inter, const at::Tensor& grad_psum,
                                         const at::Tensor& logits_in, const at::Tensor& target_in,
                                         c10::string_view activation) {
  constexpr const char* op = "medcnn::soft_dice_stats_backward";
  const DiceAct act = parse_dice_activation(std::string(activation), op);
  const bool labels = check_soft_dice_args(logits_in, target_in, op);
  check_soft_dice_grad(grad_inter, logits_in, op, "grad_inter");
  check_soft_dice_grad(grad_psum, logits_in, op, "grad_psum");
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const at::Tensor logits = logits_in.contiguous(), target = target_in.contiguous();
  const at::Tensor gi = grad_inter.contiguous(), gp = grad_psum.contiguous();
  at::Tensor dz = at::empty_like(logits, at::MemoryFormat::Contiguous);
  if (logits.numel() == 0) return dz;
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), op, [&] {
    check_launch(cuda::soft_dice_stats_backward<scalar_t>(
                     gi.const_data_ptr<scalar_t>(), gp.const_data_ptr<scalar_t>(), logits.const_data_ptr<scalar_t>(),
                     labels ? target.const_data_ptr<int64_t>() : nullptr,
                     labels ? nullptr : target.const_data_ptr<scalar_t>(), dz.mutable_data_ptr<scalar_t>(),
                     logits.size(0), logits.size(1), dice_spatial(logits), static_cast<int>(act),
                     c10::cuda::getCurrentCUDAStream()),
                 op);
  });
  return dz;
}

// affine_grid's normalized output coordinates of an axis of n voxels, with the same ATen ops (same values).
at::Tensor warp_base(int64_t n, bool align, const at::TensorOptions& opts) {
  if (n <= 1) return at::zeros({1}, opts);
  at::Tensor r = at::linspace(-1, 1, n, opts);
  return align ? r : at::div(at::mul(r, n - 1), n);
}

struct WarpBases {
  at::Tensor x, y, z;
  cuda::AffineWarpShape shape;
};

WarpBases warp_bases(const at::Tensor& t, bool align, int64_t dims) {
  const int64_t d = t.dim();
  const bool cl = !t.is_contiguous() && t.size(1) > 1;
  const cuda::AffineWarpShape shape{t.size(0), t.size(1), dims == 3 ? t.size(2) : 1, t.size(d - 2), t.size(d - 1),
                                    static_cast<int>(dims), cl};
  return {warp_base(shape.W, align, t.options()), warp_base(shape.H, align, t.options()),
          warp_base(shape.D, align, t.options()), shape};
}

std::tuple<at::Tensor, at::Tensor> affine_warp_cuda(const at::Tensor& image_in, const at::Tensor& theta_in,
                                                    const Opt& mask_in, c10::string_view mode,
                                                    c10::string_view padding_mode, bool align_corners) {
  constexpr const char* op = "medcnn::affine_warp";
  const AffineWarpMode m =
      check_affine_warp_args(image_in, theta_in, mask_in, std::string(mode), std::string(padding_mode), op);
  const c10::cuda::CUDAGuard guard(image_in.device());
  const at::Tensor image = image_in.contiguous(image_in.suggest_memory_format()), theta = theta_in.contiguous();
  at::Tensor out = at::empty_like(image, image.suggest_memory_format());
  const bool has_mask = mask_in.has_value() && mask_in->defined();
  const at::Tensor mask = has_mask ? mask_in->contiguous(mask_in->suggest_memory_format()) : at::Tensor();
  at::Tensor mask_out = has_mask ? at::empty_like(mask, mask.suggest_memory_format()) : at::empty({0}, image.options());
  const WarpBases b = warp_bases(image, align_corners, m.dims);
  const bool mask_cl = has_mask && !mask.is_contiguous() && mask.size(1) > 1;
  AT_DISPATCH_FLOATING_TYPES(image.scalar_type(), op, [&] {
    check_launch(cuda::affine_warp_forward<scalar_t>(
                     image.const_data_ptr<scalar_t>(), theta.const_data_ptr<scalar_t>(), b.x.const_data_ptr<scalar_t>(),
                     b.y.const_data_ptr<scalar_t>(), b.z.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                     has_mask ? mask.const_data_ptr() : nullptr, has_mask ? mask_out.mutable_data_ptr() : nullptr,
                     has_mask ? mask.size(1) : 0, has_mask ? static_cast<int>(mask.element_size()) : 0, mask_cl,
                     b.shape, m.nearest, static_cast<int>(m.padding), align_corners,
                     c10::cuda::getCurrentCUDAStream()),
                 op);
  });
  return {out, mask_out};
}

at::Tensor affine_warp_backward_cuda(const at::Tensor& grad_in, const at::Tensor& theta_in, c10::string_view mode,
                                     c10::string_view padding_mode, bool align_corners) {
  constexpr const char* op = "medcnn::affine_warp_backward";
  const AffineWarpMode m =
      check_affine_warp_args(grad_in, theta_in, std::nullopt, std::string(mode), std::string(padding_mode), op);
  const c10::cuda::CUDAGuard guard(grad_in.device());
  const auto fmt = grad_in.suggest_memory_format();
  const at::Tensor grad = grad_in.contiguous(fmt), theta = theta_in.contiguous();
  at::Tensor din = at::zeros_like(grad, fmt);
  const WarpBases b = warp_bases(grad, align_corners, m.dims);
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), op, [&] {
    check_launch(cuda::affine_warp_backward<scalar_t>(
                     grad.const_data_ptr<scalar_t>(), theta.const_data_ptr<scalar_t>(), b.x.const_data_ptr<scalar_t>(),
                     b.y.const_data_ptr<scalar_t>(), b.z.const_data_ptr<scalar_t>(), din.mutable_data_ptr<scalar_t>(),
                     b.shape, m.nearest, static_cast<int>(m.padding), align_corners,
                     c10::cuda::getCurrentCUDAStream()),
                 op);
  });
  return din;
}

}  // namespace

TORCH_LIBRARY_IMPL(medcnn, CUDA, m) {
  m.impl("lrn", &lrn_cuda);
  m.impl("lrn_backward", &lrn_backward_cuda);
  m.impl("bn_act", &bn_act_cuda);
  m.impl("bn_act_", &bn_act_inplace_cuda);
  m.impl("bn_act_backward", &bn_act_backward_cuda);
  m.impl("add_relu", &add_relu_cuda);
  m.impl("relu_backward", &relu_backward_cuda);
  m.impl("bias_act", &bias_act_cuda);
  m.impl("bias_act_backward", &bias_act_backward_cuda);
  m.impl("soft_dice_stats", &soft_dice_stats_cuda);
  m.impl("soft_dice_stats_backward", &soft_dice_stats_backward_cuda);
  m.impl("affine_warp", &affine_warp_cuda);
  m.impl("affine_warp_backward", &affine_warp_backward_cuda);
}

}  // namespace cuda_bindings
}  // namespace medcnn

#endif  // MEDCNN_WITH_CUDA
