// Operator schemas of the `medcnn` namespace: the one place that says what each op takes and returns.
//
// Kernels live beside this file (cpu/*.cpp, cuda/*.cu + cuda/bindings.cpp) and register with
// TORCH_LIBRARY_IMPL(medcnn, <backend>, m). Fake (meta) kernels and autograd formulas are registered from
// Python (trainsdk/ops/), so torch.export / torch.compile can trace every op without running it.
//
// Every op is functional (no input is written) except bn_act_, because torch.library only attaches autograd
// formulas to functional ops; running statistics are therefore updated by the Python wrapper from the batch
// statistics these ops return.
#include <torch/library.h>

TORCH_LIBRARY(medcnn, m) {
  // Cross-channel local response normalization with torch.nn.LocalResponseNorm's semantics:
  //   y = x / (k + alpha / size * sum_{window over channels} x^2) ^ beta,
  // window [c - size/2, c + (size-1)/2], zero outside [0, C). x: (N, C, *).
  m.def("lrn(Tensor x, int size, float alpha, float beta, float k) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // Gradient of lrn w.r.t. x, recomputing the window sums from x (nothing but x is kept for backward).
  m.def("lrn_backward(Tensor grad, Tensor x, int size, float alpha, float beta, float k) -> Tensor",
        {at::Tag::pt2_compliant_tag});

  // Batch norm followed by an activation ("identity" | "relu" | "leaky_relu"), x: (N, C, *).
  // training=True: normalizes with the batch statistics; false: with running_mean/running_var.
  // Returns (out, mean, var): the statistics used (biased batch variance when training).
  // save_output only selects what autograd keeps (the output instead of the input, InPlace-ABN style);
  // the kernel checks that the activation is invertible then.
  m.def("bn_act(Tensor x, Tensor? weight, Tensor? bias, Tensor? running_mean, Tensor? running_var, "
        "bool training, float eps, str act, float negative_slope, bool save_output) -> (Tensor, Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  // In-place bn_act: writes the output into x (InPlace-ABN). Returns (mean, var). No autograd formula can be
  // attached to a mutating op; trainsdk.ops wraps it in an autograd.Function for eager training.
  m.def("bn_act_(Tensor(a!) x, Tensor? weight, Tensor? bias, Tensor? running_mean, Tensor? running_var, "
        "bool training, float eps, str act, float negative_slope) -> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  // Gradients (x, weight, bias) of bn_act. `saved` is x, or the output when saved_is_output (then the
  // activation and the affine transform are inverted to recover the normalized input).
  m.def("bn_act_backward(Tensor grad, Tensor saved, Tensor? weight, Tensor? bias, Tensor mean, Tensor var, "
        "bool training, float eps, str act, float negative_slope, bool saved_is_output) -> (Tensor, Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});

  // relu(a + b) for residual blocks; a and b have the same shape.
  m.def("add_relu(Tensor a, Tensor b) -> Tensor", {at::Tag::pt2_compliant_tag});
  // grad * (out > 0): the gradient of add_relu for both of its inputs, from the saved output alone.
  m.def("relu_backward(Tensor grad, Tensor out) -> Tensor", {at::Tag::pt2_compliant_tag});

  // Bias + activation with gain (StyleGAN's fused_bias_act): y = act(x + bias[c]) * gain, x: (N, C, *),
  // bias (C,) or None, act "identity" | "relu" | "leaky_relu". gain must be > 0 and negative_slope >= 0, so the
  // output has the sign of act's input and backward can work from the output alone.
  m.def("bias_act(Tensor x, Tensor? bias, str act, float negative_slope, float gain) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // (dx, dbias) of bias_act from the saved output: dx = grad * gain * act'(out), dbias[c] = sum of dx over
  // everything but the channel dim (shape (C,), returned even when the forward had no bias).
  m.def("bias_act_backward(Tensor grad, Tensor out, str act, float negative_slope, float gain) -> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});

  // Batched affine warp: grid_sample(image, affine_grid(theta, image.shape, align_corners), mode, padding_mode,
  // align_corners) without the grid, image (N, C, H, W) / (N, C, D, H, W), theta (N, 2, 3) / (N, 3, 4), mode
  // "bilinear" | "nearest", padding_mode "zeros" | "border" | "reflection". The optional mask (N, Cm, *spatial, any
  // real dtype) is warped by nearest in the same pass and returned second (an empty (0,) tensor without a mask).
  m.def("affine_warp(Tensor image, Tensor theta, Tensor? mask, str mode, str padding_mode, bool align_corners) "
        "-> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  // Gradient of affine_warp's image output w.r.t. the image (the transposed warp: a scatter-add), same shape as grad.
  m.def("affine_warp_backward(Tensor grad, Tensor theta, str mode, str padding_mode, bool align_corners) -> Tensor",
        {at::Tag::pt2_compliant_tag});

  // Soft Dice statistics per (n, c) in one pass over the logits, without materializing probabilities or one-hot:
  // (I, P, G) = sums over the spatial dims of p*g, p and g, each (N, C) in the logits' dtype. logits (N, C, *),
  // activation "softmax" (over C) | "sigmoid" | "none" (logits are probabilities); target an int64 label map
  // (N, *) or (N, 1, *) with values in [0, C) (one-hot implied), or a dense target of the logits' dtype and shape.
  m.def("soft_dice_stats(Tensor logits, Tensor target, str activation) -> (Tensor, Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  // d/dlogits of soft_dice_stats from the gradients of I and P (G does not depend on the logits), recomputing the
  // probabilities per pixel. Contiguous (N, C, *) output.
  m.def("soft_dice_stats_backward(Tensor grad_inter, Tensor grad_psum, Tensor logits, Tensor target, str activation) "
        "-> Tensor",
        {at::Tag::pt2_compliant_tag});
}
