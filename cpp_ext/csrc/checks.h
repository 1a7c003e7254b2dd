// Argument checks shared by the CPU kernels and the CUDA bindings, so both backends reject the same inputs with
// the same message ("medcnn::<op>: <argument> ..."). Python's trainsdk.ops._checks mirrors these for the
// reference implementation.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

#include "act.h"

namespace medcnn {

inline Act parse_act(const std::string& name, const char* op) {
  if (name == "identity") return Act::Identity;
  if (name == "relu") return Act::ReLU;
  if (name == "leaky_relu") return Act::LeakyReLU;
  TORCH_CHECK_VALUE(false, op, ": act must be one of 'identity', 'relu', 'leaky_relu', got '", name, "'");
  return Act::Identity;  // unreachable
}

// float32 or float64: the kernels are written for these two (float64 is there for gradcheck).
inline void check_floating(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", name,
                   " must be float32 or float64, got ", t.scalar_type());
}

// (N, C, *) inputs: at least 3 dims (1-D spatial), like torch.nn.LocalResponseNorm.
inline void check_nc_star(const at::Tensor& t, int64_t min_dim, const char* op, const char* name) {
  TORCH_CHECK_VALUE(t.dim() >= min_dim, op, ": ", name, " must have at least ", min_dim,
                    " dimensions (N, C, *spatial), got shape ", t.sizes());
}

inline void check_same_device_dtype(const at::Tensor& a, const at::Tensor& b, const char* op, const char* na,
                                    const char* nb) {
  TORCH_CHECK_VALUE(a.device() == b.device(), op, ": ", na, " and ", nb, " must be on the same device, got ",
                    a.device(), " and ", b.device());
  TORCH_CHECK_TYPE(a.scalar_type() == b.scalar_type(), op, ": ", na, " and ", nb,
                   " must have the same dtype, got ", a.scalar_type(), " and ", b.scalar_type());
}

inline void check_same_shape(const at::Tensor& a, const at::Tensor& b, const char* op, const char* na,
                             const char* nb) {
  TORCH_CHECK_VALUE(a.sizes() == b.sizes(), op, ": ", na, " and ", nb, " must have the same shape, got ",
                    a.sizes(), " and ", b.sizes());
}

// A per-channel parameter (weight, bias, running stats): absent, or 1-D of C values like x.
// Two tensors an elementwise op combines: floating point, same device, dtype and shape.
inline void check_pair(const at::Tensor& a, const at::Tensor& b, const char* op, const char* na, const char* nb) {
  check_floating(a, op, na);
  check_same_device_dtype(a, b, op, na, nb);
  check_same_shape(a, b, op, na, nb);
}

inline void check_per_channel(const std::optional<at::Tensor>& p, const at::Tensor& x, const char* op,
                              const char* name) {
  if (!p.has_value() || !p->defined()) return;
  const int64_t channels = x.size(1);
  TORCH_CHECK_VALUE(p->dim() == 1 && p->size(0) == channels, op, ": ", name, " must have shape (", channels,
                    ",) for an input with ", channels, " channels, got ", p->sizes());
  check_same_device_dtype(x, *p, op, "x", name);
}

inline void check_positive(int64_t v, const char* op, const char* name) {
  TORCH_CHECK_VALUE(v >= 1, op, ": ", name, " must be >= 1, got ", v);
}

inline void check_finite(double v, const char* op, const char* name) {
  TORCH_CHECK_VALUE(std::isfinite(v), op, ": ", name, " must be finite, got ", v);
}

inline void check_lrn_args(const at::Tensor& x, int64_t size, double alpha, double beta, double k, const char* op) {
  check_floating(x, op, "x");
  check_nc_star(x, 3, op, "x");
  check_positive(size, op, "size");
  check_finite(alpha, op, "alpha");
  check_finite(beta, op, "beta");
  check_finite(k, op, "k");
}

// Batch norm + activation arguments. `invertible` asks for the InPlace-ABN form, which recovers the
// normalized input from the output: only possible when the activation is a bijection.
inline Act check_bn_act_args(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                             const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& running_mean,
                             const std::optional<at::Tensor>& running_var, bool training, double eps,
                             const std::string& act, double negative_slope, bool invertible, const char* op) {
  check_floating(x, op, "x");
  check_nc_star(x, 2, op, "x");
  check_per_channel(weight, x, op, "weight");
  check_per_channel(bias, x, op, "bias");
  check_per_channel(running_mean, x, op, "running_mean");
  check_per_channel(running_var, x, op, "running_var");
  TORCH_CHECK_VALUE(eps > 0 && std::isfinite(eps), op, ": eps must be positive, got ", eps);
  check_finite(negative_slope, op, "negative_slope");
  const bool has_stats = running_mean.has_value() && running_mean->defined() && running_var.has_value() &&
                         running_var->defined();
  TORCH_CHECK_VALUE(training || has_stats, op, ": running_mean and running_var are required when training=False");
  const Act a = parse_act(act, op);
  if (invertible) {
    TORCH_CHECK_VALUE(a == Act::Identity || (a == Act::LeakyReLU && negative_slope > 0), op,
                      ": the in-place / output-saving form needs an invertible activation ('identity', or "
                      "'leaky_relu' with negative_slope > 0), got act='", act, "', negative_slope=", negative_slope);
  }
  return a;
}

// Bias + activation with gain. Backward works from the output, so the output must carry the sign of the
// activation's input: gain > 0, and negative_slope >= 0 for leaky_relu.
inline Act check_bias_act_args(const at::Tensor& x, const std::optional<at::Tensor>& bias, const std::string& act,
                               double negative_slope, double gain, const char* op) {
  check_floating(x, op, "x");
  check_nc_star(x, 2, op, "x");
  check_per_channel(bias, x, op, "bias");
  const Act a = parse_act(act, op);
  check_finite(negative_slope, op, "negative_slope");
  TORCH_CHECK_VALUE(a != Act::LeakyReLU || negative_slope >= 0, op,
                    ": negative_slope must be >= 0 (backward recovers the activation's slope from the sign of the "
                    "output), got ", negative_slope);
  TORCH_CHECK_VALUE(std::isfinite(gain) && gain > 0, op,
                    ": gain must be finite and > 0 (backward recovers the activation's slope from the sign of the "
                    "output), got ", gain);
  return a;
}

// Batched affine warp (F.affine_grid + F.grid_sample semantics). padding: 0 zeros, 1 border, 2 reflection.
struct AffineWarpMode {
  int64_t dims;  // spatial dims: 2 or 3
  bool nearest;
  int64_t padding;
};

// image (N, C, H, W) / (N, C, D, H, W) float, theta (N, 2, 3) / (N, 3, 4) of the same dtype and device, and an
// optional mask (N, Cm, *spatial) of any dtype whose elements are 1, 2, 4 or 8 bytes (copied as raw values).
inline AffineWarpMode check_affine_warp_args(const at::Tensor& image, const at::Tensor& theta,
                                             const std::optional<at::Tensor>& mask, const std::string& mode,
                                             const std::string& padding, const char* op) {
  check_floating(image, op, "image");
  TORCH_CHECK_VALUE(image.dim() == 4 || image.dim() == 5, op,
                    ": image must be (N, C, H, W) or (N, C, D, H, W), got shape ", image.sizes());
  const int64_t dims = image.dim() - 2;
  for (int64_t d = 2; d < image.dim(); ++d) {
    TORCH_CHECK_VALUE(image.size(d) > 0, op, ": image must have non-empty spatial dimensions, got shape ",
                      image.sizes());
  }
  check_same_device_dtype(image, theta, op, "image", "theta");
  TORCH_CHECK_VALUE(theta.dim() == 3 && theta.size(0) == image.size(0) && theta.size(1) == dims &&
                        theta.size(2) == dims + 1,
                    op, ": theta must have shape (", image.size(0), ", ", dims, ", ", dims + 1,
                    ") for an image of shape ", image.sizes(), ", got ", theta.sizes());
  if (mask.has_value() && mask->defined()) {
    const at::Tensor& m = *mask;
    TORCH_CHECK_VALUE(m.device() == image.device(), op, ": image and mask must be on the same device, got ",
                      image.device(), " and ", m.device());
    bool same = m.dim() == image.dim() && m.size(0) == image.size(0);
    for (int64_t d = 2; same && d < image.dim(); ++d) same = m.size(d) == image.size(d);
    TORCH_CHECK_VALUE(same, op, ": mask must have the image's batch size and spatial size (N, C_mask, *spatial), "
                      "got image ", image.sizes(), " and mask ", m.sizes());
    const int64_t es = m.element_size();
    TORCH_CHECK_TYPE(!c10::isComplexType(m.scalar_type()) && !c10::isQIntType(m.scalar_type()) &&
                         (es == 1 || es == 2 || es == 4 || es == 8),
                     op, ": mask must be a real (bool, integer or floating-point) tensor, got ", m.scalar_type());
  }
  TORCH_CHECK_VALUE(mode == "bilinear" || mode == "nearest", op,
                    ": mode must be 'bilinear' (trilinear for 3-D) or 'nearest', got '", mode, "'");
  const int64_t pad = padding == "zeros" ? 0 : padding == "border" ? 1 : padding == "reflection" ? 2 : -1;
  TORCH_CHECK_VALUE(pad >= 0, op, ": padding_mode must be one of 'zeros', 'border', 'reflection', got '", padding,
                    "'");
  return {dims, mode == "nearest", pad};
}

// Soft Dice statistics: the activation that turns logits into probabilities. The CUDA launchers take it as an int
// (launchers.h is framework-free and does not include this header): static_cast<int>(DiceAct).
enum class DiceAct : int { Softmax = 0, Sigmoid = 1, None = 2 };

inline DiceAct parse_dice_activation(const std::string& name, const char* op) {
  if (name == "softmax") return DiceAct::Softmax;
  if (name == "sigmoid") return DiceAct::Sigmoid;
  if (name == "none") return DiceAct::None;
  TORCH_CHECK_VALUE(false, op, ": activation must be one of 'softmax', 'sigmoid', 'none', got '", name, "'");
  return DiceAct::None;  // unreachable
}

// logits (N, C, *spatial) float32/float64; target an int64 label map (N, *spatial) or (N, 1, *spatial), or a dense
// target (one-hot or soft labels) of the logits' dtype and shape. Returns true for a label map.
inline bool check_soft_dice_args(const at::Tensor& logits, const at::Tensor& target, const char* op) {
  check_floating(logits, op, "logits");
  check_nc_star(logits, 3, op, "logits");
  TORCH_CHECK_VALUE(logits.device() == target.device(), op, ": logits and target must be on the same device, got ",
                    logits.device(), " and ", target.device());
  if (target.scalar_type() == at::kLong) {
    const auto spatial = logits.sizes().slice(2);
    const bool plain = target.dim() == logits.dim() - 1 && target.sizes().slice(1) == spatial;
    const bool singleton = target.dim() == logits.dim() && target.size(1) == 1 && target.sizes().slice(2) == spatial;
    TORCH_CHECK_VALUE((plain || singleton) && target.size(0) == logits.size(0), op,
                      ": a label-map target must have shape (N, *spatial) or (N, 1, *spatial) for logits of shape ",
                      logits.sizes(), ", got ", target.sizes());
    return true;
  }
  TORCH_CHECK_TYPE(target.scalar_type() == logits.scalar_type(), op,
                   ": target must be an int64 label map or a dense target of the logits' dtype (",
                   logits.scalar_type(), "), got ", target.scalar_type());
  check_same_shape(logits, target, op, "logits", "target");
  return false;
}

// Gradients of the (N, C) statistics: the logits' dtype and device, shape (N, C).
inline void check_soft_dice_grad(const at::Tensor& grad, const at::Tensor& logits, const char* op, const char* name) {
  check_same_device_dtype(logits, grad, op, "logits", name);
  TORCH_CHECK_VALUE(grad.dim() == 2 && grad.size(0) == logits.size(0) && grad.size(1) == logits.size(1), op, ": ",
                    name, " must have shape (N, C) = (", logits.size(0), ", ", logits.size(1), "), got ",
                    grad.sizes());
}

}  // namespace medcnn
