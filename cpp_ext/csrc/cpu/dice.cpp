// Soft Dice statistics on the CPU: per (n, c), I = sum p*g, P = sum p and G = sum g over the spatial positions,
// where p is the softmax over channels, the sigmoid or the logits themselves, and g the one-hot of a label map or a
// dense target. One read of the logits: neither the probabilities nor the one-hot is ever written out (the PyTorch
// composite and MONAI's DiceLoss each write several full-size intermediates). Backward recomputes p and applies the
// activation's Jacobian in the same pass: with a_c = dI_c * g_c + dP_c, the gradient reaching p_c,
//   softmax: dz_c = p_c * (a_c - sum_k p_k a_k),   sigmoid: dz_c = a_c * p_c * (1 - p_c),   none: dz_c = a_c.
// G does not depend on the logits, so its gradient never reaches them (the Python side handles a dense target's).
//
// Layout: contiguous (N, C, S); channels-last or strided inputs are copied to contiguous first (correct, not fast),
// and the gradient is contiguous. Threads take tasks (runs of blocks of pixels of one image) as they come free; each
// task sums into its own slot in double, and the slots are added in order at the end: deterministic results.
// The softmax runs on 16-pixel chunks across all channels, so each pixel's max, sum (and in backward the Jacobian's
// inner product) stay in registers; backward writes dz from the same chunk.
// Labels index nothing: one outside [0, C) only raises (forward) or matches no channel (backward).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <omp.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "cpu_utils.h"

namespace medcnn {
namespace cpu {
namespace {

enum Stat : int { kInter = 0, kPsum = 1, kGsum = 2, kNumStats = 3 };

// e^x in float, branch-free so `omp simd` loops vectorize it (glibc's expf stays a scalar call without
// -ffast-math): Cephes' expf, x = n ln2 + r with |r| <= ln2 / 2 and a degree-6 polynomial, about 1 ulp. Results
// below e^-87 (~1.6e-38, where float turns subnormal) flush to 0, x > 88 gives e^88; NaN stays NaN.
inline float exp_simd(float x_in) {
  float x = x_in < -87.0f ? -87.0f : x_in;
  x = x > 88.0f ? 88.0f : x;
  const float shifted = x * 1.44269504088896341f + 12582912.0f;  // + 1.5 * 2^23: round(x / ln2) in the low bits
  const float n = shifted - 12582912.0f;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;  // x - n ln2, ln2 split in two (Cephes C1, C2)
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  uint32_t bits;
  std::memcpy(&bits, &shifted, sizeof(bits));
  bits = (bits - 0x4B400000u + 127u) << 23;  // 2^n as a float's bits
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  const float y = (p * r * r + r + 1.0f) * scale;
  return x_in < -87.0f ? 0.0f : y;
}

// float64 is there for gradcheck: exact libm exp.
inline double exp_simd(double x) { return std::exp(x); }

struct Geometry {
  int64_t N, C, S;
  int64_t block;  // pixels per block (one pass of the per-block loops)
  int64_t blocks;  // blocks per image
  int64_t tasks;   // tasks per image: runs of kTaskBlocks blocks, the unit threads take (and of the partial sums)
  int64_t all_tasks() const { return N * tasks; }
};

constexpr int64_t kTaskBlocks = 16;

Geometry geometry(const at::Tensor& logits) {
  const int64_t N = logits.size(0), C = logits.size(1), S = spatial_numel(logits);
  // About 1024 values per block (256 pixels of 4 classes): the block's scratch rows stay in L1 between passes, and
  // consecutive blocks of a channel row share a 4 KiB page, so the hardware prefetchers keep streaming.
  const int64_t block = std::clamp<int64_t>(1024 / std::max<int64_t>(C, 1) / 16 * 16, 32, 512);
  const int64_t blocks = (S + block - 1) / block;
  return {N, C, S, block, blocks, (blocks + kTaskBlocks - 1) / kTaskBlocks};
}

// One work item: n pixels of one image, and this thread's scratch rows of ld values.
template <typename T>
struct Block {
  const T* z = nullptr;  // logits: C rows of stride S
  const T* t = nullptr;  // target: the label values (`lf`) or the dense target (C rows of stride S)
  int64_t S = 0, C = 0, n = 0, ld = 0;
  T* p = nullptr;    // C rows: probabilities (softmax: unnormalized, e^(z_c - max_k z_k))
  T* inv = nullptr;  // softmax: 1 / sum_c e^(z_c - max_k z_k)
  T* lf = nullptr;   // the labels as values of T

  Block(int64_t S_, int64_t C_, int64_t ld_, std::vector<T>& buf) : S(S_), C(C_), ld(ld_) {
    buf.resize(size_t((C + 2) * ld));
    p = buf.data();
    inv = p + C * ld;
    lf = inv + ld;
  }
  const T* zc(int64_t c) const { return z + c * S; }
};

// g_c at pixel i: one-hot of the label values (Labels: t is one row), or row c of the dense target (stride S).
template <bool Labels, typename T>
inline const T* target_row(const Block<T>& b, int64_t c) {
  return Labels ? b.t : b.t + c * b.S;
}

template <bool Labels, typename T>
inline T target_value(const T* tc, int64_t c, int64_t i) {
  if constexpr (Labels) return tc[i] == T(c) ? T(1) : T(0);
  else return tc[i];
}

// Labels of the block as values of T (exact for every valid label), so the per-channel loops compare lanes of the
// same width as p. Returns whether one lies outside [0, C).
template <typename T>
bool load_labels(const int64_t* lab, Block<T>& b) {
  int bad = 0;
  T* lf = b.lf;
  const int64_t C = b.C;
#pragma omp simd reduction(| : bad)
  for (int64_t i = 0; i < b.n; ++i) {
    lf[i] = T(lab[i]);
    bad |= int(lab[i] < 0) | int(lab[i] >= C);
  }
  b.t = lf;
  return bad != 0;
}

constexpr int64_t kChunk = 16;  // pixels per softmax chunk: one AVX-512 vector of float

// Softmax of pixels [i0, i0 + w) of the block, w <= kChunk: e_c = e^(z_c - max_k z_k) into p, inv = 1 / sum_c e_c
// and, with Grad, dot = sum_c p_c a_c (normalized), where a_c = dI_c g_c + dP_c is the gradient reaching p_c.
// Full (w == kChunk): every loop is a fixed-width vector op, and max, inv and dot stay in registers across the
// channel loops (the callers inline this with their own inv / dot arrays).
template <bool Full, bool Grad, bool Labels, typename T>
inline void softmax_chunk(const Block<T>& b, const T* gi, const T* gp, int64_t i0, int64_t w, T* inv, T* dot) {
  const int64_t len = Full ? kChunk : w;
  T m[kChunk];
  const T* z0 = b.zc(0) + i0;
#pragma omp simd
  for (int64_t j = 0; j < len; ++j) m[j] = z0[j];
  for (int64_t c = 1; c < b.C; ++c) {
    const T* zc = b.zc(c) + i0;
#pragma omp simd
    for (int64_t j = 0; j < len; ++j) m[j] = zc[j] > m[j] ? zc[j] : m[j];
  }
#pragma omp simd
  for (int64_t j = 0; j < len; ++j) inv[j] = dot[j] = T(0);
  for (int64_t c = 0; c < b.C; ++c) {
    const T* zc = b.zc(c) + i0;
    const T* tc = target_row<Labels>(b, c) + i0;
    T* pc = b.p + c * b.ld + i0;
    const T dI = Grad ? gi[c] : T(0), dP = Grad ? gp[c] : T(0);
#pragma omp simd
    for (int64_t j = 0; j < len; ++j) {
      const T e = exp_simd(zc[j] - m[j]);
      pc[j] = e;
      inv[j] += e;
      if constexpr (Grad) dot[j] += e * (dI * target_value<Labels>(tc, c, j) + dP);
    }
  }
#pragma omp simd
  for (int64_t j = 0; j < len; ++j) {
    inv[j] = T(1) / inv[j];
    dot[j] *= inv[j];
  }
}

// Forward softmax of the block: e_c into p, 1 / sum into b.inv (the stats pass applies it).
template <bool Full, bool Labels, typename T>
inline void softmax_forward_chunk(const Block<T>& b, int64_t i0, int64_t w) {
  T inv[kChunk], dot[kChunk];
  softmax_chunk<Full, false, Labels>(b, static_cast<const T*>(nullptr), static_cast<const T*>(nullptr), i0, w, inv,
                                     dot);
  T* out = b.inv + i0;
#pragma omp simd
  for (int64_t j = 0; j < (Full ? kChunk : w); ++j) out[j] = inv[j];
}

// Backward softmax of a chunk, straight to dz (C rows of stride S, at the block's first pixel):
// dz_c = p_c (a_c - sum_k p_k a_k). Streamed outputs go to p first (store_block copies them out).
template <bool Full, bool Labels, typename T>
inline void softmax_grad_chunk(const Block<T>& b, const T* gi, const T* gp, T* dz, bool stream, int64_t i0,
                               int64_t w) {
  const int64_t len = Full ? kChunk : w;
  T inv[kChunk], dot[kChunk];
  softmax_chunk<Full, true, Labels>(b, gi, gp, i0, w, inv, dot);
  for (int64_t c = 0; c < b.C; ++c) {
    T* pc = b.p + c * b.ld + i0;
    const T* tc = target_row<Labels>(b, c) + i0;
    T* out = stream ? pc : dz + c * b.S + i0;
    const T dI = gi[c], dP = gp[c];
#pragma omp simd
    for (int64_t j = 0; j < len; ++j) out[j] = pc[j] * inv[j] * (dI * target_value<Labels>(tc, c, j) + dP - dot[j]);
  }
}

// The block's probabilities into p (forward). Softmax leaves them unnormalized with the factor in inv: the stats
// pass applies it, one pass fewer.
template <DiceAct A, bool Labels, typename T>
void probabilities(const Block<T>& b) {
  const int64_t n = b.n;
  if constexpr (A == DiceAct::Softmax) {
    int64_t i0 = 0;
    for (; i0 + kChunk <= n; i0 += kChunk) softmax_forward_chunk<true, Labels>(b, i0, kChunk);
    if (i0 < n) softmax_forward_chunk<false, Labels>(b, i0, n - i0);
  } else {
    for (int64_t c = 0; c < b.C; ++c) {
      const T* zc = b.zc(c);
      T* pc = b.p + c * b.ld;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        if constexpr (A == DiceAct::Sigmoid) pc[i] = T(1) / (T(1) + exp_simd(-zc[i]));
        else pc[i] = zc[i];
      }
    }
  }
}

// p_c at pixel i from probabilities()' output.
template <DiceAct A, typename T>
inline T prob(const T* pc, const T* inv, int64_t i) {
  if constexpr (A == DiceAct::Softmax) return pc[i] * inv[i];
  else return pc[i];
}

// Adds the block's I, P, G of every channel to acc ((C, 3) doubles). Within the block each SIMD lane sums at most
// ld / lanes values in T (<= 32 for float); the block totals then add up in double.
template <DiceAct A, bool Labels, typename T>
void accumulate_stats(const Block<T>& b, acc_t* acc) {
  for (int64_t c = 0; c < b.C; ++c) {
    const T* pc = b.p + c * b.ld;
    const T* inv = b.inv;
    const T* tc = target_row<Labels>(b, c);
    T inter = 0, psum = 0, gsum = 0;
#pragma omp simd reduction(+ : inter, psum, gsum)
    for (int64_t i = 0; i < b.n; ++i) {
      const T v = prob<A>(pc, inv, i), g = target_value<Labels>(tc, c, i);
      inter += v * g;
      psum += v;
      gsum += g;
    }
    acc[c * kNumStats + kInter] += acc_t(inter);
    acc[c * kNumStats + kPsum] += acc_t(psum);
    acc[c * kNumStats + kGsum] += acc_t(gsum);
  }
}

// dz (C rows of stride S) of the block: softmax p_c (a_c - sum_k p_k a_k), sigmoid a_c p_c (1 - p_c), none a_c.
// Streamed outputs are computed in place into p and copied out with non-temporal stores.
template <DiceAct A, bool Labels, typename T>
void block_grad(const Block<T>& b, const T* gi, const T* gp, T* dz, bool stream) {
  if constexpr (A == DiceAct::Softmax) {
    int64_t i0 = 0;
    for (; i0 + kChunk <= b.n; i0 += kChunk) softmax_grad_chunk<true, Labels>(b, gi, gp, dz, stream, i0, kChunk);
    if (i0 < b.n) softmax_grad_chunk<false, Labels>(b, gi, gp, dz, stream, i0, b.n - i0);
  } else {
    probabilities<A, Labels>(b);
    for (int64_t c = 0; c < b.C; ++c) {
      T* pc = b.p + c * b.ld;
      const T* tc = target_row<Labels>(b, c);
      T* out = stream ? pc : dz + c * b.S;
      const T dI = gi[c], dP = gp[c];
#pragma omp simd
      for (int64_t i = 0; i < b.n; ++i) {
        const T a = dI * target_value<Labels>(tc, c, i) + dP;
        if constexpr (A == DiceAct::Sigmoid) out[i] = a * pc[i] * (T(1) - pc[i]);
        else out[i] = a;
      }
    }
  }
  if (stream) {
    for (int64_t c = 0; c < b.C; ++c) store_block(dz + c * b.S, b.p + c * b.ld, b.n, true);
  }
}

// Points b at block `blk` of image `img`: its logits, pixel count and target (labels are loaded into b.lf).
// Returns whether a label lies outside [0, C).
template <bool Labels, typename T>
bool seek(Block<T>& b, const Geometry& geo, int64_t img, int64_t blk, const T* z, const int64_t* lab, const T* g) {
  const int64_t s0 = blk * b.ld;
  b.n = std::min(b.ld, geo.S - s0);
  b.z = z + img * geo.C * geo.S + s0;
  if constexpr (Labels) return load_labels(lab + img * geo.S + s0, b);
  b.t = g + img * geo.C * geo.S + s0;
  return false;
}

// Tasks go to whichever thread is free (a descheduled thread on a shared machine does not hold the others up);
// each task's sums have their own slot, so the totals do not depend on which thread ran what.
// Forward: task k's (C, 3) sums go to partials + k * C * 3. Returns whether a label was invalid.
template <DiceAct A, bool Labels, typename T>
bool stats_kernel(const T* z, const int64_t* lab, const T* g, acc_t* partials, const Geometry& geo, int nt) {
  int bad = 0;
#pragma omp parallel num_threads(nt) reduction(| : bad)
  {
    std::vector<T> buf;
    Block<T> b(geo.S, geo.C, geo.block, buf);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < geo.all_tasks(); ++task) {
      const int64_t img = task / geo.tasks, first = (task % geo.tasks) * kTaskBlocks;
      for (int64_t blk = first; blk < std::min(first + kTaskBlocks, geo.blocks); ++blk) {
        bad |= int(seek<Labels>(b, geo, img, blk, z, lab, g));
        probabilities<A, Labels>(b);
        accumulate_stats<A, Labels>(b, partials + task * geo.C * kNumStats);
      }
    }
  }
  return bad != 0;
}

template <DiceAct A, bool Labels, typename T>
void backward_kernel(const T* z, const int64_t* lab, const T* g, const T* gi, const T* gp, T* dz,
                     const Geometry& geo, int nt) {
  const bool stream = should_stream(geo.N * geo.C * geo.S, sizeof(T));
#pragma omp parallel num_threads(nt)
  {
    std::vector<T> buf;
    Block<T> b(geo.S, geo.C, geo.block, buf);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < geo.all_tasks(); ++task) {
      const int64_t img = task / geo.tasks, first = (task % geo.tasks) * kTaskBlocks;
      for (int64_t blk = first; blk < std::min(first + kTaskBlocks, geo.blocks); ++blk) {
        seek<Labels>(b, geo, img, blk, z, lab, g);
        block_grad<A, Labels>(b, gi + img * geo.C, gp + img * geo.C, dz + img * geo.C * geo.S + blk * b.ld,
                              stream);
      }
    }
    stream_fence();
  }
}

// f(integral_constant<DiceAct, A>, bool_constant<labels>) for the runtime activation and target kind.
template <typename F>
void dispatch_dice(DiceAct act, bool labels, F&& f) {
  auto with_target = [&](auto A) {
    if (labels) f(A, std::true_type());
    else f(A, std::false_type());
  };
  switch (act) {
    case DiceAct::Softmax: with_target(std::integral_constant<DiceAct, DiceAct::Softmax>()); break;
    case DiceAct::Sigmoid: with_target(std::integral_constant<DiceAct, DiceAct::Sigmoid>()); break;
    default: with_target(std::integral_constant<DiceAct, DiceAct::None>()); break;
  }
}

// Names the first label outside [0, C): the error path only, after the kernel flagged one.
void raise_bad_label(const at::Tensor& target, int64_t C, const char* op) {
  const int64_t* t = target.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < target.numel(); ++i) {
    TORCH_CHECK_VALUE(t[i] >= 0 && t[i] < C, op, ": target label ", t[i], " (at flat index ", i,
                      ") is outside [0, ", C, "): the logits have ", C, " channels");
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> soft_dice_stats_cpu(const at::Tensor& logits_in,
                                                                   const at::Tensor& target_in,
                                                                   c10::string_view activation) {
  constexpr const char* op = "medcnn::soft_dice_stats";
  const DiceAct act = parse_dice_activation(std::string(activation), op);
  const bool labels = check_soft_dice_args(logits_in, target_in, op);
  const at::Tensor logits = logits_in.contiguous(), target = target_in.contiguous();
  const Geometry geo = geometry(logits);
  at::Tensor out[kNumStats];
  for (auto& t : out) t = at::zeros({geo.N, geo.C}, logits.options());
  if (logits.numel() == 0) return {out[kInter], out[kPsum], out[kGsum]};
  const int nt = num_threads(logits.numel());
  std::vector<acc_t> partials(size_t(geo.all_tasks() * geo.C * kNumStats), acc_t(0));  // (N, tasks, C, 3)
  bool bad = false;
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), op, [&] {
    dispatch_dice(act, labels, [&](auto A, auto L) {
      bad = stats_kernel<decltype(A)::value, decltype(L)::value>(
          logits.const_data_ptr<scalar_t>(), labels ? target.const_data_ptr<int64_t>() : nullptr,
          labels ? nullptr : target.const_data_ptr<scalar_t>(), partials.data(), geo, nt);
    });
  });
  if (bad) raise_bad_label(target, geo.C, op);
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), op, [&] {
    for (int s = 0; s < kNumStats; ++s) {
      scalar_t* o = out[s].mutable_data_ptr<scalar_t>();
      for (int64_t n = 0; n < geo.N; ++n) {
        for (int64_t c = 0; c < geo.C; ++c) {
          acc_t v = 0;  // in task order: the same sum whatever the threads
          for (int64_t k = n * geo.tasks; k < (n + 1) * geo.tasks; ++k) v += partials[(k * geo.C + c) * kNumStats + s];
          o[n * geo.C + c] = scalar_t(v);
        }
      }
    }
  });
  return {out[kInter], out[kPsum], out[kGsum]};
}

at::Tensor soft_dice_stats_backward_cpu(const at::Tensor& grad_inter, const at::Tensor& grad_psum,
                                        const at::Tensor& logits_in, const at::Tensor& target_in,
                                        c10::string_view activation) {
  constexpr const char* op = "medcnn::soft_dice_stats_backward";
  const DiceAct act = parse_dice_activation(std::string(activation), op);
  const bool labels = check_soft_dice_args(logits_in, target_in, op);
  check_soft_dice_grad(grad_inter, logits_in, op, "grad_inter");
  check_soft_dice_grad(grad_psum, logits_in, op, "grad_psum");
  const at::Tensor logits = logits_in.contiguous(), target = target_in.contiguous();
  const at::Tensor gi = grad_inter.contiguous(), gp = grad_psum.contiguous();
  at::Tensor dz = at::empty_like(logits, at::MemoryFormat::Contiguous);
  if (logits.numel() == 0) return dz;
  const Geometry geo = geometry(logits);
  const int nt = num_threads(logits.numel());
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), op, [&] {
    dispatch_dice(act, labels, [&](auto A, auto L) {
      backward_kernel<decltype(A)::value, decltype(L)::value>(
          logits.const_data_ptr<scalar_t>(), labels ? target.const_data_ptr<int64_t>() : nullptr,
          labels ? nullptr : target.const_data_ptr<scalar_t>(), gi.const_data_ptr<scalar_t>(),
          gp.const_data_ptr<scalar_t>(), dz.mutable_data_ptr<scalar_t>(), geo, nt);
    });
  });
  return dz;
}

}  // namespace

TORCH_LIBRARY_IMPL(medcnn, CPU, m) {
  m.impl("soft_dice_stats", &soft_dice_stats_cpu);
  m.impl("soft_dice_stats_backward", &soft_dice_stats_backward_cpu);
}

}  // namespace cpu
}  // namespace medcnn
