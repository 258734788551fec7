// The public, ISA-neutral API of the batch-reduce GEMM core (csrc/). Layers and the Python
// bindings include only the headers of csrc/include/brgemm/ (this one, types.h which it
// includes, ktanh_table.h); nothing here knows what a layer is.
//
//   C[M×N] = beta·C + Σ_{i<count} A_i[M×K] · B_i[K×N]
//
// Row-major, leading dimensions (lda, ldb, ldc) in elements. Use: describe the kernel once
// (desc) → dispatch() returns a cached kernel → execute() it as often as needed with a batch.
// The core reports errors as status codes and never throws; the bindings turn them into
// Python exceptions that name the argument.
#pragma once
#include <cstdint>
#include "brgemm/types.h"  // element, dtype, out_type and what each dtype reads and writes

namespace brgemm {

// Ordered: each level includes everything below it.
enum class isa : int { scalar = 0, avx2, avx512, avx512_vnni, avx512_bf16 };
constexpr int isa_count = 5;

enum class batch_kind : int { stride = 0, offset, address };

enum class status : int {
  ok = 0,
  bad_m, bad_n, bad_k, bad_lda, bad_ldb, bad_ldc, bad_beta, bad_dtype, bad_batch_kind,
  bad_epilogue,        // an epilogue this dtype cannot have (see epilogue_desc)
  bad_ukernel,         // no such microkernel name, or not for this dtype
  isa_not_built,       // the build left this ISA out (compiler lacked its flags)
  isa_not_supported,   // the CPU (or OS, for the zmm state) lacks it
};
const char* status_message(status s);

// --- ISA detection and capping (csrc/core/isa.cpp) --------------------------------------
const char* isa_name(isa level);
bool isa_from_name(const char* name, isa* out);
isa detected_isa();                 // best level the CPU + OS support (CPUID, XGETBV), cached
bool isa_built(isa level);          // compiled into this build
bool isa_available(isa level);      // built and supported
isa active_isa();                   // what dispatch uses now
status set_isa_cap(isa level);      // cap the level; fails if not available
void clear_isa_cap();

// --- Threads used by the layer drivers ---------------------------------------------------
void set_num_threads(int n);        // n ≥ 1
int num_threads();

// --- Epilogues -----------------------------------------------------------------------------
// Stages applied to each tile's accumulator before it is stored, in this order (a stage
// that is off is skipped):
//   1. v = acc + beta·prev              prev: the accumulator so far (C itself, or
//                                       epilogue_args::acc_in when C has another type)
//   2. int8 only: v = scale · (v + row_offset[i] + col_offset[j])   s32 → f32 (exact sum,
//                                       then one rounding to f32, then the product)
//   3. v = v + bias[j]                  f32
//      v = v + add[i][j]                a second tensor of C's shape (the residual add), in
//                                       the output's element type: f32 or bf16; for a u8
//                                       output u8 with its own quantization:
//                                       v = v + add_scale·(f32)(add[i][j] − add_zero)
//   4. v = activation(v)                relu: max(v, 0), NaN stays NaN; relu6: min(max(v, 0), 6)
//                                       (MobileNet's); or one of the element-wise functions below
//   5. store as out:  f32 | bf16 (round to nearest even, NaN stays NaN)
//                     | u8/s8: q = clip(nearbyint(v / out_scale) + out_zero_point)  (ties to
//                       even, saturating; NaN → the lower bound)
//                     | acc (f32, or s32 for int8: stages 2–4 must be off, offsets allowed)
// Every stage is an exact IEEE operation (no fused multiply-add), so every ISA's epilogue
// gives bit-identical results to the scalar twin for the same accumulator. Stage 5's choice is
// an out_type (types.h), whose element type is out_element(dtype, out).
enum class activation : int { none = 0, relu, tanh, sigmoid, gelu, swish, ktanh, ksigmoid, kgelu, kswish, relu6 };
constexpr int activation_count = 11;
enum class scale_kind : int { none = 0, tensor, column };

// What the epilogue does: part of the kernel's description (and its cache key).
struct epilogue_desc {
  out_type out = out_type::acc;
  activation act = activation::none;
  bool bias = false;
  scale_kind scale = scale_kind::none;   // int8 only
  bool row_offset = false, col_offset = false;  // int8 only; s8s8 needs col_offset
  bool add = false;                       // f32, bf16 or u8 output only
  bool any() const {
    return out != out_type::acc || act != activation::none || bias || scale != scale_kind::none || row_offset ||
           col_offset || add;
  }
};

// The epilogue's data for one execute() call, indexed from C's first row and column.
struct epilogue_args {
  const float* bias = nullptr;          // n
  const float* scale = nullptr;         // 1 (tensor) or n (column)
  const int32_t* row_offset = nullptr;  // m, e.g. −zp(B)·rowsum(A): zero_point_row_offsets
  const int32_t* col_offset = nullptr;  // n, e.g. k·zp(A)·zp(B) − zp(A)·colsum(B), s8s8: −128·colsum(B)
                                        //   more: zero_point_col_offsets
  float out_scale = 1.0f;               // u8/s8 output
  int32_t out_zero_point = 0;
  const void* acc_in = nullptr;         // prev for beta when C's type is not the accumulator's
  int64_t ld_acc_in = 0;                // (elements of the accumulator type)
  const void* add = nullptr;            // m × n, the output's element type (f32, bf16 bits, u8)
  int64_t ld_add = 0;                   // (elements)
  float add_scale = 1.0f;               // u8 add: its real value in v's units is
  int32_t add_zero = 0;                 //   add_scale·(add − add_zero)

  // The same data seen from C's element (m0, n0), for a sub-block of C.
  epilogue_args at(int64_t m0, int64_t n0, scale_kind scale, dtype t, int64_t add_bytes = 4) const {
    epilogue_args s = *this;
    if (bias) s.bias = bias + n0;
    if (scale == scale_kind::column) s.scale = this->scale + n0;
    if (row_offset) s.row_offset = row_offset + m0;
    if (col_offset) s.col_offset = col_offset + n0;
    if (acc_in) s.acc_in = (const char*)acc_in + (m0 * ld_acc_in + n0) * dtype_c_bytes(t);
    if (add) s.add = (const char*)add + (m0 * ld_add + n0) * add_bytes;
    return s;
  }
};

// --- Describing and dispatching a kernel ------------------------------------------------
struct desc {
  dtype type = dtype::f32;
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;
  batch_kind batch = batch_kind::stride;
  float beta = 0.0f;  // 0: C is written, never read (it may hold NaN); otherwise beta·C is added
                      // (int8: 0 or 1 only, on the s32 accumulator; with an output type
                      // other than the accumulator's, prev is epilogue_args::acc_in)
  epilogue_desc ep;   // ldc counts elements of the output type
  bool overlap_a = false;  // A's rows may overlap (lda < k): a convolution's windows of adjacent
                           // pixels read as one row each; A is only read. Drivers only.
};

// How the i-th A and B blocks are found. Offsets and strides are in elements; only the fields
// of the kernel's batch kind are read.
struct batch_ref {
  int64_t count = 0;                                // number of (A_i, B_i) pairs, ≥ 0
  const void* a = nullptr;                          // stride, offset: base addresses
  const void* b = nullptr;
  int64_t stride_a = 0, stride_b = 0;               // stride: A_i = a + i·stride_a (elements
  const int64_t* offs_a = nullptr;                  //   of A's / B's storage type); offset:
                                                    //   A_i = a + offs_a[i]
  const int64_t* offs_b = nullptr;
  const void* const* addr_a = nullptr;              // address: A_i = addr_a[i]
  const void* const* addr_b = nullptr;
};

// The microkernel contract. A ukernel computes one register tile of C:
//   C[m×n] = beta·C + Σ_i A_i[m×k]·B_i[k×n],  1 ≤ m ≤ MR, 1 ≤ n ≤ NR,
// where A_i = block_i(a) + a_off and B_i = block_i(b) + b_off (offsets in elements of A's and
// B's storage; B's columns start at b_off = n0·KP in a packed layout). Edge tiles (m < MR,
// n < NR) are the ukernel's own job (smaller instances in M, masks in N). beta = 0 must never
// read C; count = 0 gives beta·C. It reads exactly the m×k elements of A, the ceil(k/KP)
// packed rows × n columns of B, and the m×n elements of C named above.
//
// With `et` set (AVX-512 kernels only, whole-width tiles n = NR, activations none, relu and
// relu6, outputs other than int8's s32), the ukernel runs the epilogue `ed` on its accumulators
// as they are in registers and stores into et->out; c and beta are then not used (beta is
// et->beta, prev et->prev, as for the scratch-tile epilogue).
struct epilogue_tile;
struct ukernel_args {
  const batch_ref* batch;
  batch_kind kind;
  int64_t a_off, b_off;
  int64_t k, lda, ldb, ldc;
  void* c;
  int m, n;
  float beta;
  const epilogue_desc* ed = nullptr;
  const epilogue_tile* et = nullptr;
  // With et (kernel::in_registers: the zmm skeleton): `tiles` tiles of m rows one below the
  // other, A's rows and et's output m rows further on per tile (the skeleton prefetches each
  // tile's output rows). execute() asks for more than one only when the epilogue reads nothing
  // by row (no prev, row offsets or residual): the per-tile set-up of a short reduction (K = 64:
  // a tile is some 800 cycles) is then paid once per run of tiles.
  int tiles = 1;
};
using ukernel_fn = void (*)(const ukernel_args&);

// One entry of the dispatch table (csrc/core/dispatch.cpp): the kernel and its geometry
// travel together so they cannot drift apart.
struct ukernel_info {
  const char* name;  // ukernel_<dtype>_<MR>x<NR>[c<KP>]__<isa>
  dtype type;
  isa level;
  int mr, nr, kp;
  ukernel_fn fn;
};
int ukernel_count();                     // every entry of this build, reference first
const ukernel_info* ukernel_at(int i);
const ukernel_info* find_ukernel(const char* name);

// One tile of the epilogue: an m×n accumulator (m ≤ MR, any n) into the output, with the
// epilogue_args already offset to the tile's first row and column.
struct epilogue_tile {
  const void* acc;
  int64_t ld_acc;
  const void* prev;      // null when beta = 0
  int64_t ld_prev;
  float beta;
  void* out;
  int64_t ldc;
  int64_t m, n;
  const epilogue_args* ep;
};
using epilogue_fn = void (*)(const epilogue_desc& d, dtype t, const epilogue_tile& tile);

struct kernel {
  desc d;
  const ukernel_info* uk;
  epilogue_fn epilogue;  // the active ISA's epilogue, or null when d.ep has no stage
  bool in_registers;     // the ukernel runs the epilogue on its accumulators (ukernel_args::et)
};

// Returns the cached kernel for d (thread-safe; the same desc and ukernel give the same
// kernel). ukernel_name = nullptr picks the best microkernel for the active ISA.
status dispatch(const desc& d, const kernel** out, const char* ukernel_name = nullptr);

// Runs the kernel: tiles C by the ukernel's MR × NR and calls it on every tile; with an
// epilogue, the ukernel applies it to its accumulators where it can (kernel::in_registers),
// else each tile is computed into a scratch tile and the epilogue stores it into C while it is
// in L1. The caller guarantees that every block the batch names is inside its array and
// that ep holds every array the kernel's epilogue_desc names (the bindings check both).
void execute(const kernel& kr, const batch_ref& batch, void* c, const epilogue_args* ep = nullptr);

// --- int8 zero points (csrc/core/zero_point.cpp) -------------------------------------------
// With zero points za (of A) and zb (of B), the product of the real values is
//   Σ_k (a − za)·(b − zb) = Σ_k a·b − za·colsum_j(B) − zb·rowsum_i(A) + K·za·zb,
// and the s8s8 kernels sum (a + 128)·b, so their column term is −(za + 128)·colsum_j(B). These
// compute the terms into epilogue_args::col_offset (n values) and row_offset (m values),
// modulo 2^32 as the s32 accumulator wraps; K is the whole reduction (k × the batch count).
struct zero_points {
  int32_t a = 0, b = 0;
};
int32_t zero_point_a_shifted(dtype t, int32_t a_zero);   // what multiplies colsum: za, +128 for s8s8
bool zero_points_need_col_offset(dtype t, zero_points z);  // (the row offset: whenever z.b ≠ 0)
// col[j] = K·za·zb − (za + 128 for s8s8)·Σ_r colsum[r][j]: `count` rows of n column sums of
// B, added (one per B block, or per part of one); not read when that factor is 0.
void zero_point_col_offsets(dtype t, zero_points z, int64_t k_total, const int32_t* const* colsum, int64_t count,
                            int64_t n, int32_t* col);
// row[i] = −zb·Σ_blocks Σ_c A_block[i][c] over the m × k blocks of A the batch names.
void zero_point_row_offsets(dtype t, zero_points z, const batch_ref& batch, batch_kind kind, int64_t m, int64_t k,
                            int64_t lda, int32_t* row);

// --- Packing B (csrc/core/pack.cpp) ---------------------------------------------------
// Writes B (k × n, row stride ld_src, in B's storage type) into the kernel's layout for t:
// ceil(k/KP) rows of ldb ≥ n columns × KP, zero-padded in K and past n. For int8 also
// writes colsum[j] = Σ_k B[k][j] (what a zero point or the s8 → u8 shift subtracts), unless
// colsum is null.
status pack_b(dtype t, const void* src, int64_t k, int64_t n, int64_t ld_src, void* dst, int64_t ldb,
              int32_t* colsum);
int64_t packed_b_elements(dtype t, int64_t k, int64_t ldb);  // size of dst in B elements

// The same packing cut into column panels of panel_width: panel p holds columns
// [p·panel_width, (p+1)·panel_width) as its own packed matrix with ldb = panel_width (columns
// past n zero), and the panels follow each other. A gemm column tile then reads one
// contiguous block instead of a row-strided panel it would have to copy first.
constexpr int64_t panel_width = 64;
enum class b_layout : int { rows = 0, panels };
status pack_b_panels(dtype t, const void* src, int64_t k, int64_t n, int64_t ld_src, void* dst, int32_t* colsum);
int64_t panel_elements(dtype t, int64_t k);  // one panel, in B elements

// --- Element-wise functions (csrc/kernels/eltwise_twin.h, per-ISA eltwise.cpp) ----------
// The activations of the epilogue's stage 4, over whole arrays, on the active ISA:
//   tanh, sigmoid = 1/(1 + e^-x), gelu = x/2·(1 + erf(x/√2)), swish = x·sigmoid(x): libm,
//     element by element (the exact references);
//   ktanh: K-TanH (Kundu et al., arXiv 1909.07729) on the bf16 bit fields of x (f32 is
//     truncated to bf16 first): integer operations and a 32-entry table (brgemm/ktanh_table.h);
//     |error| ≤ 0.00893 for every finite bf16 input (≤ 0.0118 for f32 ones, truncation
//     included); ±inf → ±1; NaN stays NaN;
//   ksigmoid = (1 + ktanh(x/2))/2, kswish = x·ksigmoid(x),
//   kgelu = x/2·(1 + ktanh(√(2/π)·(x + 0.044715·x³))).
// IEEE operations in a fixed order, so every ISA gives the scalar twin's bits. bf16 arrays are
// their uint16 bits; a bf16 result is rounded to nearest even from the f32 one.
void activation_f32(activation a, const float* x, float* y, int64_t n);
void activation_bf16(activation a, const uint16_t* x, uint16_t* y, int64_t n);
// grad_x = grad_y · f'(x): from the output y for relu, relu6 (0 < y < 6), tanh, sigmoid, ktanh and ksigmoid
// (1 − y², y·(1 − y)), from the input x for gelu, swish and the k-versions of them.
void activation_backward_f32(activation a, const float* grad_y, const float* x, const float* y, float* grad_x,
                             int64_t n);
bool activation_backward_needs_x(activation a);
// The softmax family on one row of n ≥ 1 values (layers/eltwise.cpp runs it over rows and
// threads). order 0: the exact softmax e^(x_j − max x) / Σ e^(x − max x); order n even, 2..16:
// the Taylor softmax P_n(x_j) / Σ P_n(x), P_n(z) = Σ_{i≤n} z^i/i! by Horner (not shift-invariant).
// - e^z: a vectorised exp (range reduction by ln 2, a degree-6 polynomial by fused
//   multiply-adds, 2^n added into the exponent): within 0.89 ulp of e^z (measured over every
//   float z in [−87, 0]), +0 below −87 (so probabilities under e^-87 ≈ 1.6e-38 come out 0).
// - The row sum: 16 float lanes (value j → lane j mod 16), widened into 16 double lanes every
//   1024 values, then added in lane order in double; y = e·(1/Σ) with the reciprocal rounded to
//   float once. Relative error of Σ ≤ (min(n, 1024)/16 + 2)·2^-24 on top of the terms' own.
// - Special values (exact): NaN anywhere in a row, a row of only −inf (no finite maximum) or a
//   row holding +inf → every value the quiet NaN 0x7FC00000 (as torch.softmax gives NaN); −inf
//   entries of a row with a finite maximum → 0. Taylor: a NaN or ±inf entry makes the row's sum
//   NaN or inf (NaN there, 0 or NaN elsewhere); finite while the row's Σ P_n stays below FLT_MAX.
// Every step is an IEEE operation in a fixed order (fused multiply-adds where written, nothing
// else contracted), so every ISA gives the scalar twin's bits (csrc/kernels/softmax_twin.h; a
// Taylor NaN's sign and payload excepted). bf16 rows are widened on
// load and rounded to nearest even on store; softmax_bf16 keeps e_j in `work` (n floats).
// y may be x itself.
void softmax_f32(int order, const float* x, float* y, int64_t n);
void softmax_bf16(int order, const uint16_t* x, uint16_t* y, int64_t n, float* work);
// grad_x of `rows` consecutive rows of n values given grad_y (a row's result does not depend on
// the others: several rows at once let the kernel overlap one row's sums with the previous
// row's update). Exact (order 0), from the output y: y_j·(g_j − d) with d = Σ g·y (x unused).
// Taylor, from the input x alone (y unused): S = Σ P_n(x), d = Σ g·P_n(x) / S (= ⟨g, y⟩),
// grad_x_j = (P_{n−1}(x_j)·(1/S))·(g_j − d). Sums as above.
void softmax_backward_f32(int order, const float* x, const float* y, const float* grad_y, float* grad_x, int64_t rows,
                          int64_t n);
void softmax_backward_bf16(int order, const uint16_t* x, const uint16_t* y, const uint16_t* grad_y, uint16_t* grad_x,
                           int64_t rows, int64_t n);
// bf16 bits ↔ f32 arrays (f32 → bf16 rounds to nearest even, NaN stays NaN), as the epilogue does.
void bf16_to_f32(const uint16_t* x, float* y, int64_t n);
void f32_to_bf16(const float* x, uint16_t* y, int64_t n);
// f32 → bf16 rounded stochastically: up with probability (the 16 dropped bits)/2¹⁶, so the
// expected result is x (Gupta et al., "Deep Learning with Limited Numerical Precision", 2015).
// The random bits are a hash of (seed, first + i): reproducible, whatever the threading.
void f32_to_bf16_stochastic(const float* x, uint16_t* y, int64_t n, uint64_t seed, uint64_t first);
// Dropout (Srivastava et al., JMLR 2014) over positions first … first + n − 1 of an array:
// y[i] = x[i] · (kept ? 1/(1 − p) : 0), as PyTorch's (a NaN stays NaN, dropped or not), each
// value kept with probability 1 − p to within 2⁻³². Whether position j is kept is a hash of
// (seed, j) alone (dropout_twin.h): reproducible whatever the threading, and the backward pass
// (the same call on ∂y) drops the same positions. p in [0, 1]; p = 1 drops all. x may be y.
void dropout(const float* x, float* y, int64_t n, double p, uint64_t seed, uint64_t first);
// What a kernel call needs: counters lo … lo + n − 1 (no 32-bit wrap), the keys from (seed, the
// positions' high 32 bits), the threshold ⌊p·2³²⌉ (kept: hash ≥ threshold) and 1/(1 − p).
struct dropout_key {
  uint32_t lo, k0, k1, threshold;
  float scale;
};
// dst (cols × rows, row stride ld_dst) = srcᵀ (src: rows × cols, row stride ld_src; strides in
// elements) for elements of `bytes` = 4, 2 or 1 bytes; src and dst must not overlap. A copy:
// the same bytes on every ISA (AVX-512 16 × 16 and AVX2 8 × 8 register tiles for 32-bit
// elements, 8 × 8 for 16-bit ones; 8-bit ones element by element).
void transpose_elements(const void* src, int64_t rows, int64_t cols, int64_t ld_src, void* dst, int64_t ld_dst,
                        int bytes);
// The VNNI-2 form of a row-major rows × cols block of 16-bit elements (rows even; an odd last row
// is ignored): rows 2p and 2p + 1 interleaved element by element into row p of dst (2·cols
// elements). A copy, the same bytes on every ISA (8 columns at a time in SSE2 registers).
void interleave_pairs_b16(const uint16_t* src, int64_t rows, int64_t cols, uint16_t* dst);

// --- Recurrent gates (csrc/kernels/rnn_twin.h, per-ISA rnn.cpp) ------------------------------
// One LSTM step's element-wise work on m rows of one block of 16 hidden units, after the step's
// product: per row, the pre-activations are pre + add (the product's tile; Gx or the bias),
// i, f, g, o (16 floats each, in that order), then
//   c = fma(σ(f), c_prev, σ(i)·tanh(g)),   h = σ(o)·tanh(c),
// written to c and h (f32), to h16 (h rounded to bf16, nearest even; the next step's A), to y
// (its first y_units values; or to y16, as h16's values) and to act (σ(i), σ(f), tanh(g), σ(o): what backward reads); every
// output but c may be null. σ and tanh: the gates' polynomial exponential (rnn_twin.h: x
// clamped to ±87, e^r by a degree-7 Taylor polynomial in fused multiply-adds, within 2e-7 of
// the true functions), or with ktanh K-TanH's ksigmoid and ktanh (brgemm.h's activations).
// The same IEEE operations in the same order on every ISA (the scalar twin's bits). Row r of
// an array starts at its pointer + r × its ld (ld_add = 0: one row for all).
struct lstm_gate_rows {
  int64_t m = 0;
  const float* pre = nullptr;
  int64_t ld_pre = 0;
  const float* add = nullptr;
  int64_t ld_add = 0;
  const float* c_prev = nullptr;
  int64_t ld_c_prev = 0;
  float* c = nullptr;
  int64_t ld_c = 0;
  float* h = nullptr;
  int64_t ld_h = 0;
  uint16_t* h16 = nullptr;
  int64_t ld_h16 = 0;
  float* y = nullptr;
  uint16_t* y16 = nullptr;
  int64_t ld_y = 0, y_units = 16;
  float* act = nullptr;
  int64_t ld_act = 0;
  bool ktanh = false;
};
void lstm_gates(const lstm_gate_rows& r);
// The GRU's: pre holds the recurrent product's r, z, n (48 floats a row), add Gx's r, z, n, then
//   r = σ(.), z = σ(.), hn = pre_n + bhn, n = tanh(fma(r, hn, add_n)),
//   h = fma(1 − z, n, z·h_prev),
// written as the LSTM's (c, c_prev unused; h_prev read with ld_c_prev; act: r, z, n, hn).
void gru_gates(const lstm_gate_rows& r, const float* bhn);

// One step's backward through the gates on m rows of one block of 16 units, from the forward's
// act (σ(i), σ(f), tanh(g), σ(o); GRU: r, z, n, hn). d = dh + dy (dy: null, or its first y_units
// values added); then for the LSTM, with t = tanh(c) as the forward computed it,
//   dc' = dc + d·o·(1 − t·t);  dgx = (dc'·g·i(1−i), dc'·c_prev·f(1−f), dc'·i·(1−g·g), d·t·o(1−o));
//   dc = dc'·f,  dh = 0,  dgh = dgx (when dgh is not null);
// for the GRU (h_prev read with ld_c_prev, c unused),
//   dn = d·(1−z)·(1−n·n);  dgx = (dn·hn·r(1−r), d·(h_prev − n)·z(1−z), dn);  dgh = (dgx_r, dgx_z, dn·r);
//   dh = d·z.
// Each product left to right, no fused multiply-adds: the same bits on every ISA.
struct gate_grad_rows {
  int64_t m = 0;
  const float* act = nullptr;
  int64_t ld_act = 0;
  const float* c = nullptr;
  int64_t ld_c = 0;
  const float* c_prev = nullptr;
  int64_t ld_c_prev = 0;
  float* dh = nullptr;
  int64_t ld_dh = 0;
  const float* dy = nullptr;
  int64_t ld_dy = 0, y_units = 16;
  float* dc = nullptr;
  int64_t ld_dc = 0;
  float* dgx = nullptr;
  int64_t ld_dgx = 0;
  float* dgh = nullptr;
  int64_t ld_dgh = 0;
  bool ktanh = false;
};
void lstm_gates_backward(const gate_grad_rows& r);
void gru_gates_backward(const gate_grad_rows& r);

// s[c] += Σ_r a[r·ld + c] for c < w: each column summed in double, in row order (a bias's
// gradient; the order makes the result the same on every ISA).
void column_sums(const float* a, int64_t rows, int64_t ld, int64_t w, double* s);

// --- Peak measurement (csrc/core/peak.cpp) ----------------------------------------------
// dot_s16s16: vpdpwssd with VNNI, else vpmaddwd + vpaddd (avx512, then avx2).
enum class peak_op : int { fma_f32 = 0, dot_bf16, dot_u8s8, dot_s16s16 };
// Runs the op's register-only loop on `threads` threads for about `seconds`; returns
// GFLOP/s (GOP/s), or a negative value when this build or CPU lacks the op.
double measure_peak(peak_op op, int threads, double seconds);
// Triad a = b + s·c over arrays of `bytes_per_array`; returns GB/s (3 arrays counted).
double measure_bandwidth(int threads, int64_t bytes_per_array, int repeats);

}  // namespace brgemm
