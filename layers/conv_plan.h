// The direct convolution's plans (private to conv.cpp and conv_plan.cpp; depthwise.cpp borrows
// the rows' taps, tap and the axes): how a pass's result
// columns split into runs that see the same taps, the kernels and offset tables built once per
// call shape (build_pass), and the loop that only invokes them (run_pass).
#pragma once
#include <algorithm>
#include <cstdint>
#include <omp.h>
#include <utility>
#include <vector>
#include "conv.h"

namespace brgemm::layers {

// A tap of a run: its index along the axis, and the source position it reads for the run's
// first result (sources then advance by the axis' source step per result).
struct tap {
  int64_t t, src;
};
struct run {
  int64_t p0, m;
  std::vector<tap> taps;
};

// The source position result p reads through tap t, or −1 when it reads none.
struct forward_axis {  // results are outputs: src = p·stride − pad + t·dil, inside the input
  int64_t in, stride, pad, dil;
  int64_t operator()(int64_t p, int64_t t) const {
    const int64_t q = p * stride - pad + t * dil;
    return q >= 0 && q < in ? q : -1;
  }
};
struct backward_axis {  // results are inputs: the output that read input p through tap t
  int64_t out, stride, pad, dil;
  int64_t operator()(int64_t p, int64_t t) const {
    const int64_t q = p + pad - t * dil;
    if (q < 0 || q % stride) return -1;
    return q / stride < out ? q / stride : -1;
  }
};

template <class Axis>
std::vector<tap> taps_at(int64_t p, int64_t taps, const Axis& src) {
  std::vector<tap> out;
  for (int64_t t = 0; t < taps; ++t)
    if (const int64_t q = src(p, t); q >= 0) out.push_back({t, q});
  return out;
}

// The results 0..n−1 of an axis, class by class (p ≡ q mod step), cut into runs of consecutive
// class members that see the same taps, each tap's source advancing by src_step.
template <class Axis>
std::vector<run> make_runs(int64_t n, int64_t step, int64_t src_step, int64_t taps, const Axis& src) {
  std::vector<run> runs;
  for (int64_t q = 0; q < step; ++q) {
    bool open = false;  // runs.back() is of this class
    for (int64_t p = q; p < n; p += step) {
      std::vector<tap> here = taps_at(p, taps, src);
      if (open) {
        run& r = runs.back();
        bool same = r.taps.size() == here.size();
        for (size_t i = 0; same && i < here.size(); ++i)
          same = here[i].t == r.taps[i].t && here[i].src == r.taps[i].src + r.m * src_step;
        if (same) {
          ++r.m;
          continue;
        }
      }
      runs.push_back({p, 1, std::move(here)});
      open = true;
    }
  }
  return runs;
}

// A 1×1, stride-1, unpadded convolution reads each image as one long row, so g rows (g dividing
// h, g·w ≤ 128) become one: the kernel sees runs of g·w columns instead of w.
void merge_rows(const conv_geometry& g, int64_t& h, int64_t& w);

// The kernels of one call shape over a reduction in chunks: the last chunk's (with the
// epilogue; beta 1 after earlier chunks), the first's (beta 0) and the middle ones' (beta 1);
// `name`: a microkernel by name (narrow_ukernel), or dispatch's choice.
struct chunk_kernels {
  const kernel *last = nullptr, *first = nullptr, *mid = nullptr;
  status make(desc d, int64_t chunks, const char* name = nullptr) {
    d.beta = chunks > 1 ? 1.0f : 0.0f;
    if (status s = dispatch(d, &last, name); s != status::ok) return s;
    d.ep = epilogue_desc{};
    d.beta = 0.0f;
    if (chunks > 1)
      if (status s = dispatch(d, &first, name); s != status::ok) return s;
    d.beta = 1.0f;
    if (chunks > 2)
      if (status s = dispatch(d, &mid, name); s != status::ok) return s;
    return status::ok;
  }
  const kernel& at(int64_t ch, int64_t chunks) const { return ch + 1 == chunks ? *last : ch == 0 ? *first : *mid; }
};

// The shape of one direct-convolution pass (forward, or backward data):
//   res[n][j][row][col…] = epilogue(Σ_{q, taps} src[n][q][src row][src col…] · wts[j][q][r][s])
// everything its plan depends on, no pointers.
struct pass_shape {
  dtype t;
  int64_t n, red, res, taps_r, taps_s;     // images, source and result layout blocks, kernel taps
  int64_t bi, bo;                          // channel blocks of the source and of the result
  int64_t src_rows, src_cols, src_step;    // source columns advance src_step per result column
  int64_t res_rows, res_cols, res_step;    // a run writes every res_step-th column
  int64_t src_row_step;                    // source rows per result row (0: not uniform)
  epilogue_desc e;
  bool z = false;                          // the activation runs after the epilogue (into z)
  bool merge = false;                      // column taps may merge (a forward pass: build_pass)
  int threads;
};

// What one call of a pass reads and writes. An int8 source with a zero point z reads real zeros
// as z where the padding is: the epilogue subtracts z·Σ W over the taps each run reads
// (col_offset).
struct pass_data {
  const void* src;
  const char* wts;                         // [result block][per][taps_r][taps_s] blocks of ki × ko
  const char* wts_rows = nullptr;          // the same by kernel row where packs_rows (build_pass)
  epilogue_args ea;                        // from result channel 0 (bias, int8 scale, u8 output)
  const int32_t* tapsum = nullptr;         // int8 with a zero point: [result block][taps_r][taps_s][ko]
  int32_t zero = 0;                        //   Σ_c W of each tap, and the source's zero point
  void* out;
  float* z = nullptr;                      // with z: out = act(z), z = the epilogue's result (f32)
  const void* add = nullptr;               // the residual, laid out as the epilogue's output
  brgemm::activation act = activation::none;
  bool scale = false;                      // DFP-16 (dfp_conv.h): out ← out·2^scale_e on the
  int32_t scale_e = 0;                     //   group's finished rows, while they are in cache
  float* plain = nullptr;                  // f32 results: the finished rows also written plain
  int64_t plain_c = 0;                     //   (NCHW, plain_c channels) while they are in cache
  double* moments = nullptr;               // [n][res][rows][2][bo]: row_moments of each row of
  int64_t moment_cols = 0;                 //   moment_cols pixels (result rows merged: several a row)
};

// Whether a short block's forward weights are also packed by kernel row ((S·ki) × ko per result
// block and row): a merged run (build_pass) reads its window row as one reduction, and when ki
// is not a whole number of the dtype's packed rows (bf16 pairs, int8 quads: an RGB pixel's 3)
// the taps' blocks, each padded, do not line up as that row's matrix. Ungrouped layers only.
inline bool packs_rows(dtype t, int64_t ki, int64_t bi) { return ki == bi && bi < 16 && ki % dtype_kpack(t) != 0; }

// The forward weights of an ungrouped layer by kernel row, where packs_rows says a merged run
// needs them (conv.cpp; T: float for f32 and bf16, int8_t for u8s8).
template <class T>
void pack_rows(dtype t, const conv_geometry& g, int64_t ki, int64_t ko, const T* w, char* dst);

// The result rows and column runs of a forward pass over an input of h × w (merged rows).
std::vector<std::vector<tap>> forward_rows(const conv_geometry& g, int64_t h, int64_t oh);
std::vector<run> forward_runs(const conv_geometry& g, int64_t w, int64_t ow);

// A row of `cols` pixels of `width` lanes (f32, or bf16 bits) → m[0..width): each lane's mean,
// m[width..2·width): its Σ (y − mean)², in double (conv.h's moments: a BatchNorm's statistics,
// combined row by row in a fixed order by batch_norm_statistics_of_rows).
void row_moments(const void* row, bool bf16, int64_t cols, int64_t width, double* m);

// One direct-convolution pass set up for its shape (see run_pass). Result rows come in groups
// per work item (a result layout block, an image, a group of rows; the item walks the block's
// ko-wide parts in turn, channel_split); the reduction blocks q in chunks whose weight blocks (for one j) fit in L2, so
// that each chunk is reused by every row of the group: with a small image (7 × 7) one row alone
// reuses a weight block five times, too few to outrun L3. Partial sums go to the result itself
// (f32) or to a per-thread accumulator tile (bf16 results, int8).
//
// The batch offsets are tables built here, not per call: a batch's A offsets relative to its
// image, first source row and column, and its B offsets relative to its result block j, depend
// only on the row's taps (rows with the same taps at the same distances share a class), the run,
// the chunk and the phase of q0 inside its layout block (one phase without groups); the rest
// goes into the batch's base addresses.
struct conv_pass_plan {
  pass_shape p;
  channel_split ch;                        // result blocks of ch.ko, reduction blocks of ch.ki
  std::vector<int64_t> phase;              // per result block: its table set (q0's phase)
  std::vector<std::vector<tap>> rows;      // taps of each result row
  std::vector<run> runs;                   // runs of result columns that see the same taps
  int64_t per, chunks, group, groups, ldc;
  bool tile;                               // partial sums in a per-thread tile
  bool images_outer = false;               // work items image by image (build_pass)
  std::vector<int64_t> merged;             // per run: column taps per batch element (1, or all)
  bool rows_w = false;                     // merged runs read pass_data::wts_rows
  std::vector<chunk_kernels> kr;           // per run (runs differ in M, merged ones in K)
  std::vector<chunk_kernels> kc;           // down a column, by the stack's height
  std::vector<std::vector<std::pair<int64_t, int64_t>>> stacks;  // per group: (first row, rows)
  std::vector<int64_t> row_class, row_base;  // per result row: its class, its first tap's source row
  std::vector<int64_t> offs_a, offs_w;     // the tables, one after another
  int64_t classes = 0;
  std::vector<std::pair<int64_t, int64_t>> table;  // [((phase·classes + class)·runs + run)·chunks + chunk]: (first, count)
  const std::pair<int64_t, int64_t>& at(int64_t ph, int64_t cls, size_t u, int64_t c) const {
    return table[((ph * classes + cls) * (int64_t)runs.size() + (int64_t)u) * chunks + c];
  }
};

// Backward: the data pass (when dX is asked for), and for the weight gradient per kernel column
// tap s the output columns it reads inside the input, [lo, lo + len), and its kernels (beta 0
// and beta 1; null when the tap reads nothing).
// row_a[r], row_b[r]: the weight gradient's batch offsets (the rows' part) for kernel row r,
// one entry per output row that reads inside the input through r; row_at[r][row]: how many of
// the output rows before `row` do, so rows [first, last) are entries [row_at[first],
// row_at[last]).
struct conv_backward_plan;

// Backward data with the input channels fewer than a vector (one block of bc < 16: the stem's
// RGB), where a result row would fill bc of a kernel row's 16 lanes: transposed, the vector along
// pixels. Per output row o and piece of a stride class's columns (≤ 64 of them), the kernel
// rows (r, c) of every row tap at once (dilation 1: the input rows o·stride − pad + r are
// consecutive), added into dXᵀ (rows (ih, c), per thread):
//   dXᵀ[(ih0 + r, c)][piece] += Σ_{column taps s, result blocks j} Wst[j][s][r][c][·] · dZᵀ[j][·][o][cols_s]
// with Wst (stacked_weights) W by (block, column tap, row tap, input channel) and dZᵀ dZ
// transposed ([n][kb][bk][oh][row]: each output row between `left` and `row − left − ow` zero
// columns, so that a class is one run of all its column taps: runs split at the borders were
// pieces of one or two columns, each the cost of a 16-column one). Then dXᵀ is transposed into
// dX's class columns. Border rows stack fewer row taps.
struct transposed_data_plan {
  struct piece {
    int64_t p0, m;                           // first input column, columns (every stride-th)
    int64_t first, count;                    // its batch in offs_a / offs_b
  };
  std::vector<piece> pieces;
  std::vector<const kernel*> kern;         // [piece·oh + o] (null: no row tap reads inside)
  std::vector<int64_t> r_lo;               // per output row: its first row tap inside the input
  std::vector<int64_t> offs_a, offs_b;
  int64_t bc = 0, bk = 0, kb = 0, h = 0, w = 0, oh = 0, ow = 0, r = 0, stride_h = 1, stride_w = 1, pad_t = 0;
  int64_t left = 0, row = 0;               // dZᵀ's output rows: zero columns on the left, width
  int threads = 1;
};
constexpr int64_t transposed_piece = 64;
// Wst for an ungrouped layer's plain (K, C, R, S) f32 weights: [kb][S][R][bc][bk], zero past K.
void stacked_weights(const conv_geometry& g, int64_t bc, int64_t bk, const float* w, float* dst);
// Builds it for an ungrouped layer of geometry g (dilation 1 along h) on an h × w input.
status build_transposed_data(transposed_data_plan& pl, const conv_geometry& g, int64_t h, int64_t w, int64_t bc,
                             int64_t bk, int64_t kb, int threads);
// dZᵀ with its zero columns from dZ (blocked f32, n images): n·kb·bk·oh·row floats.
void transposed_data_dz(const transposed_data_plan& pl, int64_t n, const float* dz, float* dzt);
// dX (blocked, n images) from dZᵀ and Wst.
void run_transposed_data(const transposed_data_plan& pl, int64_t n, const float* wst, const float* dzt, float* gx);

struct conv_backward_plan {
  conv_pass_plan data;
  transposed_data_plan data_t;             // instead of data where conv.cpp chooses it
  std::vector<int64_t> lo, len;
  std::vector<const kernel*> kw, kw_add;
  std::vector<std::vector<int64_t>> row_a, row_b, row_at;
};

// The microkernel for kernels n ≤ 16 wide (conv_plan.cpp), or null for dispatch's choice.
const char* narrow_ukernel(dtype t, int64_t n);

// The bias gradient from per-plane column sums colsum[n][kb][bk]: bg[k] = (accumulate ? bg[k] : 0)
// + Σ over the images, in image order.
inline void bias_from_sums(const float* colsum, int64_t n, int64_t kb, int64_t bk, int64_t k, bool accumulate,
                           float* bg) {
  for (int64_t c = 0; c < k; ++c) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; ++i) s += colsum[(i * kb + c / bk) * bk + c % bk];
    bg[c] = (accumulate ? bg[c] : 0.0f) + s;
  }
}

// The weight gradient's column taps (pl.lo / len / kw / kw_add): for kernel column s, the output
// columns [lo, lo + len) that read an input column through it (along_w), and the block product
// over them, desc_of(len) (beta 0 writes, beta 1 adds); `narrow`: the tall tile for a kernel of
// n ≤ 16 (narrow_ukernel), else dispatch's choice.
template <class Plan, class DescOf>
inline status weight_gradient_taps(Plan& pl, int64_t taps, int64_t ow, const forward_axis& along_w, DescOf&& desc_of,
                                   bool narrow = false) {
  pl.lo.assign(taps, 0);
  pl.len.assign(taps, 0);
  pl.kw.assign(taps, nullptr);
  pl.kw_add.assign(taps, nullptr);
  for (int64_t s = 0; s < taps; ++s) {
    int64_t &lo = pl.lo[s], &len = pl.len[s];
    while (lo < ow && along_w(lo, s) < 0) ++lo;
    while (lo + len < ow && along_w(lo + len, s) >= 0) ++len;
    if (len == 0) continue;
    desc d = desc_of(len);
    const char* name = narrow ? narrow_ukernel(d.type, d.n) : nullptr;
    if (status st = dispatch(d, &pl.kw[s], name); st != status::ok) return st;
    d.beta = 1.0f;
    if (status st = dispatch(d, &pl.kw_add[s], name); st != status::ok) return st;
  }
  return status::ok;
}

// The weight gradient's batch offsets per kernel row r (pl.row_a / row_b / row_at): over the n·oh
// output rows, image by image, that read an input row through r, offsets(i, o, ih) gives the
// row's part of the A and B offsets as a pair (the block's part is added to the base addresses).
template <class Plan, class Offsets>
inline void weight_gradient_rows(Plan& pl, int64_t taps, int64_t n, int64_t oh, const forward_axis& along_h,
                                 Offsets&& offsets) {
  pl.row_a.assign(taps, {});
  pl.row_b.assign(taps, {});
  pl.row_at.assign(taps, std::vector<int64_t>((size_t)(n * oh + 1), 0));
  for (int64_t r = 0; r < taps; ++r)
    for (int64_t row = 0; row < n * oh; ++row) {
      const int64_t i = row / oh, o = row % oh, ih = along_h(o, r);
      pl.row_at[r][row + 1] = pl.row_at[r][row] + (ih >= 0);
      if (ih < 0) continue;
      const std::pair<int64_t, int64_t> ab = offsets(i, o, ih);
      pl.row_a[r].push_back(ab.first);
      pl.row_b[r].push_back(ab.second);
    }
}

// The weight gradient's products, called inside a parallel region (its `omp for` binds to the
// caller's team; the caller's reduction of the parts follows in the same region). Each
// product(b, r0, r1, part, add) sums result rows [r0, r1) of weight block b into part (adding
// when `add`). rows_outer: each thread walks chunks of `chunk` rows over every block into its own
// parts (part(b, thread)); else the rows of each block are split `splits` ways (part(b, split)).
// A thread that got no chunk zeroes its parts (`blocks`·`blk` floats from part(0, thread)).
template <class Product, class Part>
inline void weight_gradient_parts(bool rows_outer, int64_t rows_total, int64_t chunk, int64_t blocks,
                                  int64_t splits, int64_t blk, Product&& product, Part&& part) {
  if (rows_outer) {
    const int tid = omp_get_thread_num();
    bool add = false;
#pragma omp for schedule(static)
    for (int64_t ch = 0; ch < ceil_div(rows_total, chunk); ++ch) {
      for (int64_t b = 0; b < blocks; ++b)
        product(b, ch * chunk, std::min(rows_total, (ch + 1) * chunk), part(b, tid), add);
      add = true;
    }
    if (!add) std::fill(part(0, tid), part(0, tid) + blocks * blk, 0.0f);  // no chunk came here
  } else {
#pragma omp for schedule(static)
    for (int64_t item = 0; item < blocks * splits; ++item) {
      const int64_t b = item / splits, sp = item % splits;
      product(b, rows_total * sp / splits, rows_total * (sp + 1) / splits, part(b, sp), false);
    }
  }
}

// Builds pl for the pass p over result rows `rows` (their row taps) and column runs `runs`:
// kernels, row classes, offset tables; grows the threads' scratch.
// Block-sparse: with `kept` ([result block j][per][taps_r][taps_s], nonzero where the weight
// block holds a nonzero) each result block gets its own table set (conv_pass_plan::phase is
// then j) listing only its kept blocks; run_pass is unchanged, and a chunk with none left is a
// batch of count 0 (beta·C, then the epilogue).
status build_pass(conv_pass_plan& pl, const pass_shape& p, std::vector<std::vector<tap>> rows,
                  std::vector<run> runs, channel_split ch, const std::vector<uint8_t>* kept = nullptr);
// Runs a planned pass on one call's data. Only invokes: every kernel, run and offset table is
// the plan's.
void run_pass(const conv_pass_plan& pl, const pass_data& x);

}  // namespace brgemm::layers
