// Direct 2-D convolution driver: y = act(conv(x, W) + b) and its backward pass, on blocked
// arrays; every contraction is one BRGEMM call over a batch of (channel block, tap) pairs
// named by offsets. Grouped convolutions are the same passes over a channel split (below);
// depthwise ones (groups = C = K) are stencils, not products (depthwise.h).
//
// Layouts (blocks row-major, channels past the real counts zero):
//   activations  [N][C/bc][H][W][bc]          f32 or bf16 (uint16 bits), whatever the groups
//   W forward    [K/ko][per][R][S] blocks of (ki × ko) in the kernel's B layout (bf16: VNNI-2,
//                i.e. [ki/2][ko][2]); block (j, t) holds the input channels of source block
//                q0[j] + t (channel_split; without groups ki = bc, ko = bk: [K/bk][C/bc][R][S])
//   W backward   the same for the transposed pass (results: input channels, blocks of Wᵀ)
// W itself (K, C/groups, R, S) as PyTorch holds it, its gradient and the bias stay plain f32.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>
#include "brgemm/brgemm.h"
#include "linear.h"  // sparse_policy
#include "packed_weights.h"
#include "plan.h"

namespace brgemm::layers {

struct conv_geometry {
  int64_t c = 1, k = 1, r = 1, s = 1;           // input and output channels, kernel rows and columns
  int64_t groups = 1;                           // output channel k reads the input channels of its
                                                // group k/(K/groups): c/(C/groups) == k/(K/groups)
  int64_t stride_h = 1, stride_w = 1, dil_h = 1, dil_w = 1;
  int64_t pad_t = 0, pad_b = 0, pad_l = 0, pad_r = 0;
  // Whether the dilated kernel fits an h × w input once padded (out_h and out_w are sizes only
  // then: C++ division truncates, so a kernel one row too large still gives 1 at stride 2).
  bool fits(int64_t h, int64_t w) const {
    return h + pad_t + pad_b >= dil_h * (r - 1) + 1 && w + pad_l + pad_r >= dil_w * (s - 1) + 1;
  }
  // Output size for an input of h × w that fits.
  int64_t out_h(int64_t h) const { return (h + pad_t + pad_b - dil_h * (r - 1) - 1) / stride_h + 1; }
  int64_t out_w(int64_t w) const { return (w + pad_l + pad_r - dil_w * (s - 1) - 1) / stride_w + 1; }
  int64_t group_c() const { return c / groups; }  // channels per group, in and out
  int64_t group_k() const { return k / groups; }
  // Depthwise: one input channel per group, as many outputs (a per-channel stencil, depthwise.h).
  bool depthwise() const { return groups > 1 && groups == c && groups == k; }
  // padding="same" (stride 1: the output keeps the input's size); an odd total puts the extra
  // row or column at the bottom or right, as PyTorch does.
  void pad_same() {
    const int64_t th = dil_h * (r - 1), tw = dil_w * (s - 1);
    pad_t = th / 2, pad_b = th - th / 2, pad_l = tw / 2, pad_r = tw - tw / 2;
  }
};

// The channel block for `channels`: below 16 the count itself (an RGB pixel is 3 values, so a
// row of the stem's 7 × 7 window is one reduction of 21 with nothing padded: the merged taps of
// conv_plan.cpp; bf16 and int8 weights are packed in pairs and quads of rows, zero-padded per
// block, and their kernels read no A past K); otherwise 64, 32 or 16, whichever pads least
// (ties to the larger block, which keeps the kernel's 64-wide tiles full).
int64_t conv_block(int64_t channels);

// Plain NCHW (n × c × hw) ↔ blocked [n][c/bc][hw][bc]; to_blocked zeroes the padded channels.
// Element types (brgemm/types.h): f32 and bf16 for training, u8 for int8 inference.
// Either side f32 or bf16 (f32 → bf16 rounds to nearest even), u8 on both sides, or f32 → u8
// quantized: clip(nearbyint(x / scale) + zero_point, 0, 255), ties to even, NaN → 0.
void conv_to_blocked(const void* x, element xt, int64_t n, int64_t c, int64_t hw, void* xb, element bt, int64_t bc,
                     float scale = 1.0f, int32_t zero_point = 0);
void conv_from_blocked(const void* xb, element bt, int64_t n, int64_t c, int64_t hw, int64_t bc, void* x,
                       element xt);
// The same from and to NHWC memory (n × hw × c, channels contiguous, e.g. a channels_last
// tensor), same element types and rounding, without going through NCHW.
void conv_to_blocked_nhwc(const void* x, element xt, int64_t n, int64_t c, int64_t hw, void* xb, element bt,
                          int64_t bc, float scale = 1.0f, int32_t zero_point = 0);
void conv_from_blocked_nhwc(const void* xb, element bt, int64_t n, int64_t c, int64_t hw, int64_t bc, void* x,
                            element xt);

// Channels under groups. A pass computes its result channels in blocks of ko (dividing the
// result's layout block bo) and reduces over source blocks of ki (dividing the source's bi):
// result block j reads the `per` source blocks q0[j] .. q0[j] + per − 1, those that meet the
// groups of its channels (the weights are zero outside a result channel's group: a block
// holding several small groups is block-diagonal, a large group spans whole blocks). A kernel
// reads a ki-wide part of a bi-wide pixel (lda stays the layout's) and writes a ko-wide part of
// a bo-wide one, so the activations keep their layout (conv_block of the channel count) whatever
// the groups. Source block q lies in layout block q / (bi/ki), at channel (q mod (bi/ki))·ki.
// groups = 1: ki = bi, ko = bo, per = every source block, q0 = 0: the ungrouped pass exactly.
struct channel_split {
  int64_t ki = 0, ko = 0, per = 0;
  std::vector<int64_t> q0;                 // per result block (res·bo/ko of them)
  int64_t subs(int64_t bo) const { return bo / ko; }
};
// src and res channels (counts, not padded) in layout blocks bi and bo, in `groups`; ki a
// multiple of align (the kernel's k-pack: 1 for f32, 2 for bf16, 4 for int8) when bi is (a
// short odd block, e.g. 6 channels in groups of 3 in bf16, takes any divisor: the packed blocks
// are padded to the pack and the kernels read no A past K). Among the block
// widths that divide the layout blocks, the one with the fewest k-steps of 16-lane vectors
// (redundant multiplies by zero included) plus a per-block overhead.
channel_split split_channels(int64_t src, int64_t res, int64_t groups, int64_t bi, int64_t bo, int64_t align);

// Plans (conv_plan.h): one direct-convolution pass set up for a call shape (its kernels, runs and
// offset tables), and a backward pass's (its data pass and the weight gradient's kernels).
struct conv_pass_plan;
struct conv_backward_plan;
class depthwise_conv;  // depthwise.h: groups = C = K
class winograd_conv;   // winograd.h: 3×3 stride 1 as Winograd F(m×m, 3×3)
// What a plan depends on besides the layer: the call's size, the ISA its kernels were
// dispatched for, the threads it splits the work for, and the epilogue's optional stages.
struct conv_plan_key {
  int64_t n, h, w;
  int32_t level, threads, bias, z, zero, data, add;
  int32_t sparse;  // 0 dense, else the block index's generation (conv_layer: block-sparse)
};

// Block-sparse when at most this fraction of a pass's weight blocks (ki × ko per result block,
// source block and tap) holds a nonzero (policy automatic). The kept blocks' batches are the
// dense pass's with elements left out, so the sparse tables pay as soon as a few blocks go:
// measured in docs/api.md (bench --sparse).
constexpr double conv_sparse_crossover = 0.95;

class conv_layer {
 public:
  // t is f32 or bf16 (bf16 activations and packed weights, f32 accumulation, master weights and
  // gradients). A depthwise geometry (groups = C = K) runs as per-channel stencils
  // (depthwise.h); any other grouping as BRGEMMs over the channel split above.
  conv_layer(dtype t, const conv_geometry& g, brgemm::activation act);

  const conv_geometry& geometry() const { return g_; }
  int64_t bc() const { return bc_; }
  int64_t bk() const { return bk_; }
  bool bf16() const { return t_ == dtype::bf16; }
  bool needs_z() const { return activation_backward_needs_x(act_); }

  // The algorithm of forward and backward data: 0 direct, 2, 4 or 6 Winograd F(m×m, 3×3)
  // (winograd.h; the weight gradient stays direct), 1 Winograd with m by call shape, −1 auto
  // (winograd_auto_tile per call shape, direct where Winograd does not apply or pay). Returns the reason when a forced m cannot apply
  // (winograd_unsupported), else null. algorithm_used(): what the last forward ran (0 direct,
  // m), −1 before any.
  const char* set_algorithm(int algorithm);
  int algorithm() const { return algo_; }
  int algorithm_used() const { return used_; }

  // Packs w (K, C, R, S) and b (K, or null) when they differ from what was packed last (an
  // exact comparison with a snapshot: in-place writes are seen). Returns whether it packed.
  bool refresh(const float* w, const float* b);

  // Block-sparse passes: forward and backward data list only the weight blocks that hold a
  // nonzero (their packed bits), automatically when at most conv_sparse_crossover of them do,
  // or forced. Dense and sparse sum the kept products in the same order: with finite inputs the
  // results are bit-identical. Depthwise layers stay dense; a block-sparse layer's automatic
  // algorithm choice stays direct (Winograd's transformed weights are dense).
  void set_sparse_policy(sparse_policy p);
  sparse_policy policy() const { return policy_; }
  bool block_sparse() const { return sparse_gen_ > 0; }
  double block_density() const { return density_; }  // kept / all forward blocks (last packing)
  // The pruning mask (K, C/groups, R, S; 0 = pruned; null: none): the weight gradient skips the
  // forward blocks (ki × ko of one tap) it removes whole and writes their gradient as zero, as
  // for PyTorch's weight · mask (zero blocks written by hand keep their true gradient).
  void set_mask(const uint8_t* mask);

  // yb = act(conv(xb) + b) for n images of h × w (yb: [n][K/bk][OH][OW][bk]). With zb (a
  // training forward of an activation whose derivative needs its input) the pre-activation
  // goes there too (f32, blocked like yb). With add (blocked like yb, of its type; f32 when
  // zb is given) the residual joins before the activation: yb = act(conv(xb) + b + add). add
  // must not overlap yb: partial sums may pass through yb before the epilogue reads add.
  // With moments (n·K/bk·OH·2·bk doubles, [n][K/bk][OH][2][bk]) each output row's mean and
  // Σ (y − mean)² per channel go there too (conv_plan.h's row_moments), gathered while the row
  // is in cache: a BatchNorm's statistics in training (batch_norm_statistics_of_rows).
  status forward(int64_t n, int64_t h, int64_t w, const void* xb, void* yb, float* zb, const void* add = nullptr,
                 double* moments = nullptr);
  // From gyb (f32, blocked like yb) and what forward saw: gxb (f32, blocked like xb; null to
  // skip), and dW (K, C, R, S), db (K) added to wg, bg when `accumulate`, else written.
  status backward(int64_t n, int64_t h, int64_t w, const float* gyb, const void* yb, const float* zb,
                  const void* xb, float* gxb, float* wg, float* bg, bool accumulate);
  // The same for a bf16 layer from a bf16 gyb (dY as a bf16 network's backward hands it on).
  status backward(int64_t n, int64_t h, int64_t w, const uint16_t* gyb, const void* yb, const float* zb,
                  const void* xb, float* gxb, float* wg, float* bg, bool accumulate);

 private:
  void pack(const float* w);
  status plan_backward_data(conv_pass_plan& data, int64_t n, int64_t h, int64_t w, int threads);
  // backward of a bf16 layer (conv_backward_bf16.cpp): dZ in bf16, the weight gradient's
  // products bf16 too; gyb f32, or bf16 when gy16.
  status backward_bf16(int64_t n, int64_t h, int64_t w, const void* gyb, bool gy16, const void* yb, const float* zb,
                       const void* xb, float* gxb, float* wg, float* bg, bool accumulate);
  // Backward data may run transposed (conv_plan.h's transposed_data_plan): f32, ungrouped, few
  // input channels, dilation 1 along h.
  bool stacks_rows() const { return t_ == dtype::f32 && bc_ < 16 && g_.groups == 1 && g_.dil_h == 1; }

  dtype t_;
  conv_geometry g_;
  int64_t bc_, bk_;
  channel_split fs_, bs_;                      // forward (C → K) and backward data (K → C)
  brgemm::activation act_;
  bool has_bias_ = false;
  packed_weights w_seen_, b_seen_;             // w and b as packed last
  std::vector<float> bias_;                    // the bias padded to K/bk
  std::vector<char> fwd_, bwd_;                // packed weights (64-byte aligned inside)
  std::vector<char> bwd_t_;                    // f32, bc < 16: stacked_weights (conv_plan.h)
  std::vector<char> fwd_rows_;                 // forward by kernel row, where packs_rows says
  std::vector<char> dz_, dzt_, x32_, part_;    // backward scratch: grown, never shrunk
  plan_cache<conv_plan_key, conv_pass_plan> fwd_plans_;
  plan_cache<conv_plan_key, conv_backward_plan> bwd_plans_;
  std::shared_ptr<depthwise_conv> dw_;         // a depthwise layer's passes (not BRGEMMs)
  int algo_ = 0, used_ = -1;
  int64_t version_ = 0;                        // weights packed so far (the Winograd forms follow)
  sparse_policy policy_ = sparse_policy::automatic;
  std::vector<uint8_t> fwd_kept_, bwd_kept_;   // per packed block (fwd_, bwd_ order): nonzero
  int32_t sparse_gen_ = 0;                     // 0 dense, else changes with the kept blocks
  int32_t gen_ = 0;
  double density_ = 1.0;
  std::vector<uint8_t> masked_;                // per forward block: pruned whole by the mask
  void index_blocks();                         // the kept flags and the dense/sparse choice
  // F(2×2), F(4×4), F(6×6), made and packed when first used; a copied layer makes its own.
  struct winograd_forms {
    std::shared_ptr<winograd_conv> layer[3];
    int64_t version[3] = {-1, -1, -1};
    std::mutex mutex;
    winograd_forms() = default;
    winograd_forms(const winograd_forms&) {}
    winograd_forms& operator=(const winograd_forms&) { return *this; }
  } wg_;
  int tile_for(int64_t n, int64_t h, int64_t w) const;  // the m of a call shape (0: direct)
  winograd_conv* winograd(int m);              // wg_ for m, packed with the current weights
};

// The quantization of an int8 layer: real x = x_scale·(x_q − x_zero) for the u8 input;
// y_q = clip(nearbyint(y / y_scale) + y_zero, 0, 255) for a u8 output.
struct conv_quant {
  float x_scale = 1.0f, y_scale = 1.0f;
  int32_t x_zero = 0, y_zero = 0;
};
static_assert(sizeof(conv_quant) == 16, "refresh compares a conv_quant bytewise: no padding");

// int8 inference: u8 activations × s8 weights with one scale per output channel (zero point
// 0), exact s32 sums, then the epilogue
//   y = act(x_scale·w_scale[k]·Σ (x_q − x_zero)·w_q + b[k])
// stored as f32 (dequantized) or requantized u8: clip(nearbyint(y / y_scale) + y_zero). With no
// activation or ReLU the u8 output is computed as fbgemm does, in one multiply-add:
//   clip(nearbyint(act(m[k]·Σ (x_q − x_zero)·w_q + b[k]/y_scale)) + y_zero),
//   m[k] = (x_scale·w_scale[k])/y_scale (each step one f32 rounding).
// Padding is real zero, i.e. x_q = x_zero: the sums skip the padded taps and subtract
// x_zero·Σ w_q over the taps each run reads.
//   W forward   [K/bk][C/bc][R][S] blocks of (bc × bk), VNNI-4 ([⌈bc/4⌉][bk][4], zero rows
//               past bc).
class qconv_layer {
 public:
  // out is out_type::f32 or out_type::u8.
  qconv_layer(const conv_geometry& g, brgemm::activation act, out_type out);

  const conv_geometry& geometry() const { return g_; }
  int64_t bc() const { return bc_; }
  int64_t bk() const { return bk_; }
  out_type out() const { return out_; }

  // Packs w (K, C, R, S) s8 with w_scale (K) and b (K, or null) under q when anything differs
  // from what was packed last (exact comparisons). Returns whether it packed.
  bool refresh(const int8_t* w, const float* w_scale, const float* b, const conv_quant& q);
  // yb = the epilogue above for n u8 images of h × w (yb: [n][K/bk][OH][OW][bk], f32 or u8).
  // With add (u8, blocked like yb, not overlapping it; u8 outputs only) the residual
  // add_scale·(add − add_zero) joins y before the activation (a ResNet block's skip path).
  status forward(int64_t n, int64_t h, int64_t w, const uint8_t* xb, void* yb, const uint8_t* add = nullptr,
                 float add_scale = 1.0f, int32_t add_zero = 0);

 private:
  conv_geometry g_;
  int64_t bc_, bk_;
  channel_split fs_;
  brgemm::activation act_;
  out_type out_;
  conv_quant q_;
  bool has_bias_ = false, fold_ = false;
  packed_weights w_seen_, rest_seen_;          // w; w_scale, b and q as packed last
  std::vector<float> bias_, scale_;            // the epilogue's bias and scale, padded to K/bk
  std::vector<int32_t> tapsum_;                // [result block][R][S][ko]: Σ_c w_q of each tap
  std::vector<char> fwd_, fwd_rows_;           // per tap, and by kernel row where packs_rows says
  plan_cache<conv_plan_key, conv_pass_plan> fwd_plans_;
};

}  // namespace brgemm::layers
