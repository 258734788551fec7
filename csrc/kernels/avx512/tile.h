// The zmm microkernel skeleton, written once for the three AVX-512 levels (avx512/,
// avx512vnni/, avx512bf16/ include it): an MR × NR tile of C held in MR·NV zmm accumulators
// (NV = NR/16) for the whole batch. The skeleton zeroes them, walks the batch (block
// addresses, prefetch of the next A block), stores C with beta and the N mask, and picks the
// instance for an edge tile. A ukernel file supplies only its k-loop, as a struct:
//
//   struct my_kloop {                   // in the ukernel file's own namespace
//     using ta = ...;                   // element type of A
//     using tb = ...;                   // element type of (packed) B
//     using acc = __m512;               // f32 accumulators (any beta), or __m512i: s32 (beta 0 or 1)
//     const int64_t lda, ...;           // per-tile constants: set once, invariant in the k-loop
//     explicit my_kloop(const ukernel_args& p);
//     // c[m][v] += A_i[m, :]·B_i[:, 16v .. 16v+15] for one batch element; the last vector's
//     // columns past n are never read (load it under `last`).
//     template <int MR, int NV>
//     BRGEMM_KLOOP void run(const ta* a, const tb* b, __mmask16 last, acc (&c)[MR][NV]) const;
//   };
//   void ukernel_<name>(const ukernel_args& p) { zmm::pick<my_kloop, MR, NV>(p); }
//
// Everything here is in an unnamed namespace: each translation unit that includes it gets its
// own copy compiled with its own flags, so the linker can never merge an avx512vnni copy of a
// helper into the avx512 library (or the other way round).
// Edge tiles: M by smaller-MR instances, N by a mask on the last vector. beta = 0 never reads C.
#pragma once
#include <immintrin.h>
#include "../ukernels.h"
#include "../batch_block.h"
#include "epilogue_vec.h"

// Inlined into the tile (k-loop, register epilogue): a call keeps the accumulators in memory (int8: 2.5x slower).
#define BRGEMM_KLOOP inline __attribute__((always_inline))

namespace brgemm::kernels::zmm {
namespace {

inline void set_zero(__m512& x) { x = _mm512_setzero_ps(); }
inline void set_zero(__m512i& x) { x = _mm512_setzero_si512(); }

// f32: C = acc (beta 0, C not read), acc + C (beta 1), or acc + beta·C.
template <int MR, int NV>
inline void store(const ukernel_args& p, const __m512 (&acc)[MR][NV], __mmask16 last) {
  const __m512 beta = _mm512_set1_ps(p.beta);
#pragma GCC unroll 32
  for (int m = 0; m < MR; ++m) {
    float* c = (float*)p.c + m * p.ldc;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      const __mmask16 mask = v == NV - 1 ? last : (__mmask16)0xFFFF;
      __m512 r = acc[m][v];
      if (p.beta == 1.0f) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(mask, c + 16 * v));
      else if (p.beta != 0.0f) r = _mm512_fmadd_ps(beta, _mm512_maskz_loadu_ps(mask, c + 16 * v), r);
      _mm512_mask_storeu_ps(c + 16 * v, mask, r);
    }
  }
}

// s32: beta is 0 (write, never read C) or 1 (add to C).
template <int MR, int NV>
inline void store(const ukernel_args& p, const __m512i (&acc)[MR][NV], __mmask16 last) {
  const bool accumulate = p.beta != 0.0f;
#pragma GCC unroll 32
  for (int m = 0; m < MR; ++m) {
    int32_t* c = (int32_t*)p.c + m * p.ldc;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      const __mmask16 mask = v == NV - 1 ? last : (__mmask16)0xFFFF;
      __m512i r = acc[m][v];
      if (accumulate) r = _mm512_add_epi32(r, _mm512_maskz_loadu_epi32(mask, c + 16 * v));
      _mm512_mask_storeu_epi32(c + 16 * v, mask, r);
    }
  }
}

// A 64-column int8 tile through epilogue16::requantized_plain: with K = 64 the epilogue tested
// its stages for each of the 24 vectors (a third of a 1×1 64 → 256 u8 convolution's time).
// The sums started from the column offsets (plain_int8_start).
template <bool RELU, bool UNIT, bool ZP, class E, int MR>
BRGEMM_KLOOP void finish_int8_64(const E& e, const __m512i (&acc)[MR][4]) {
  const float* bi = e.bias ? e.bias : (const float*)zeros64;
#pragma GCC unroll 32
  for (int m = 0; m < MR; ++m) {
    __m512i q[4];
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) q[v] = e.template requantized_plain<RELU, UNIT, ZP>(acc[m][v], bi, 16 * v);
    e.store64(m, q);
  }
}
template <bool RELU, class E, int MR>
BRGEMM_KLOOP void finish_int8_64(const E& e, const __m512i (&acc)[MR][4]) {
  if (e.unit_scale) return e.zero_zp ? finish_int8_64<RELU, true, false>(e, acc) : finish_int8_64<RELU, true, true>(e, acc);
  return e.zero_zp ? finish_int8_64<RELU, false, false>(e, acc) : finish_int8_64<RELU, false, true>(e, acc);
}

// Where the sums of a 64-column int8 tile start when it finishes through finish_int8_64 (an
// int8 output, plain_int8): its column offsets (zeros64 without), added there before (s32
// adds: the same bits in any order; 24 vector adds fewer per tile). Null: from zero.
inline const int32_t* plain_int8_start(const ukernel_args& p) {
  if (p.ed->out != out_type::u8 && p.ed->out != out_type::s8) return nullptr;
  const epilogue16<true, out_type::u8, true> e(*p.ed, *p.et);
  return !e.plain_int8() ? nullptr : e.col_offset ? e.col_offset : zeros64;
}

// A float tile through epilogue16::put_plain (bias and ReLU tested once, not per vector).
template <bool BIAS, bool RELU, class E, int MR, int NV>
BRGEMM_KLOOP void finish_float(const E& e, const __m512 (&acc)[MR][NV]) {
#pragma GCC unroll 32
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) e.template put_plain<BIAS, RELU>(acc[m][v], m, 16 * v);
}

// The epilogue on the accumulators themselves (p.et set: a whole-width tile whose activation
// is none, relu or relu6), one instance per output type the accumulator can have.
template <bool INT8, out_type OUT, int MR, int NV, typename Acc>
BRGEMM_KLOOP void finish_as(const ukernel_args& p, const Acc (&acc)[MR][NV]) {
  const epilogue16<INT8, OUT, true> e(*p.ed, *p.et);
  if constexpr ((OUT == out_type::u8 || OUT == out_type::s8) && NV == 4)
    if (e.plain_int8()) return e.act == activation::relu ? finish_int8_64<true>(e, acc) : finish_int8_64<false>(e, acc);
  if constexpr (!INT8 && (OUT == out_type::bf16 || OUT == out_type::f32))
    if (e.plain_float()) {
      const bool relu = e.act == activation::relu;
      if (e.bias) return relu ? finish_float<true, true>(e, acc) : finish_float<true, false>(e, acc);
      return relu ? finish_float<false, true>(e, acc) : finish_float<false, false>(e, acc);
    }
#pragma GCC unroll 32
  for (int m = 0; m < MR; ++m) {
    const __m512i row_off = e.row_term(m);
    if constexpr ((OUT == out_type::u8 || OUT == out_type::s8) && NV == 4) {  // 64 bytes: one store
      __m512i q[4];
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v)
        q[v] = e.requantized(e.staged(e.value(acc[m][v], row_off, m, 16 * v, 0xFFFF), m, 16 * v, 0xFFFF, nullptr));
      e.store64(m, q);
    } else {
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) e.put(acc[m][v], row_off, m, 16 * v, (__mmask16)0xFFFF, nullptr);
    }
  }
}
template <int MR, int NV>
BRGEMM_KLOOP void finish(const ukernel_args& p, const __m512 (&acc)[MR][NV]) {
  if (p.ed->out == out_type::bf16) finish_as<false, out_type::bf16>(p, acc);
  else finish_as<false, out_type::f32>(p, acc);
}
template <int MR, int NV>
BRGEMM_KLOOP void finish(const ukernel_args& p, const __m512i (&acc)[MR][NV]) {
  switch (p.ed->out) {
    case out_type::u8: return finish_as<true, out_type::u8>(p, acc);
    case out_type::s8: return finish_as<true, out_type::s8>(p, acc);
    case out_type::bf16: return finish_as<true, out_type::bf16>(p, acc);
    default: return finish_as<true, out_type::f32>(p, acc);
  }
}

// One MR × 16·NV instance (p.m == MR, 16·(NV-1) < p.n ≤ 16·NV); EP: it may finish through the
// epilogue in registers (the whole-width instances).
template <class Loop, int MR, int NV, bool EP = false>
BRGEMM_KLOOP void tile_once(const ukernel_args& p) {
  using ta = typename Loop::ta;
  using tb = typename Loop::tb;
  const Loop loop(p);  // its per-tile constants, computed once as the k-loop's invariants
  const int64_t lda = p.lda;
  const __mmask16 last = (__mmask16)((1u << (p.n - 16 * (NV - 1))) - 1u);
  typename Loop::acc acc[MR][NV];
  const int32_t* start = nullptr;  // int8 sums that start from the column offsets (plain_int8_start)
  if constexpr (EP && NV == 4 && std::is_same_v<typename Loop::acc, __m512i>)
    if (p.et) start = plain_int8_start(p);
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    typename Loop::acc s;
    set_zero(s);
    if constexpr (std::is_same_v<typename Loop::acc, __m512i>)
      if (start) s = _mm512_loadu_si512(start + 16 * v);
#pragma GCC unroll 32
    for (int m = 0; m < MR; ++m) acc[m][v] = s;
  }

  for (int64_t i = 0; i < p.batch->count; ++i) {
    const ta* a = (const ta*)brgemm_block_a(p, i, sizeof(ta));
    const tb* b = (const tb*)brgemm_block_b(p, i, sizeof(tb));
    if (i + 1 < p.batch->count) {
      // The next A block's rows are far apart: fetch their first lines while this one runs.
      // Inline and in this form on purpose: in a function of its own gcc finds the prefetches
      // side-effect free and deletes the call; this loop is what gcc turns into the straight-line
      // prefetches the kernels were measured with.
      const char* next = (const char*)brgemm_block_a(p, i + 1, sizeof(ta));
#pragma GCC unroll 32
      for (int m = 0; m < MR; ++m)
        for (int64_t byte = 0; byte < p.k * (int64_t)sizeof(ta) && byte < 256; byte += 64)
          _mm_prefetch(next + m * lda * (int64_t)sizeof(ta) + byte, _MM_HINT_T0);
    }
    loop.template run<MR, NV>(a, b, last, acc);
  }
  if constexpr (EP)
    if (p.et) return finish<MR, NV>(p, acc);
  store<MR, NV>(p, acc, last);
}

// tile_once, or p.tiles of them one below the other (ukernel_args::tiles: register epilogue
// only). Each tile's output rows are asked for before its sums, as execute() does for one.
template <class Loop, int MR, int NV, bool EP = false>
void tile(const ukernel_args& p) {
  if constexpr (EP) {
    if (p.et && p.tiles > 1) {
      constexpr dtype acc_type = std::is_same_v<typename Loop::acc, __m512i> ? dtype::u8s8 : dtype::f32;
      const int64_t ob = out_type_bytes(acc_type, p.ed->out), row = p.et->ldc * ob;
      ukernel_args q = p;
      epilogue_tile t = *p.et;
      q.et = &t;
      for (int r = 0; r < p.tiles; ++r) {
        for (int m = 0; m < MR; ++m)
          for (int64_t b = 0; b < 16 * NV * ob; b += 64) __builtin_prefetch((const char*)t.out + m * row + b, 1, 3);
        tile_once<Loop, MR, NV, EP>(q);
        q.a_off += MR * p.lda;
        t.out = (char*)t.out + MR * row;
      }
      return;
    }
  }
  tile_once<Loop, MR, NV, EP>(p);
}

// Picks the instance for this tile's m (1..MR) and vector count (1..NV).
// The whole-width instances (1..M rows of NV vectors) serve the register epilogue too.
template <class Loop, int M, int NV, int NV0 = NV>
void pick_n(const ukernel_args& p) {
  if constexpr (NV > 1)
    if ((p.n + 15) / 16 < NV) return pick_n<Loop, M, NV - 1, NV0>(p);
  tile<Loop, M, NV, NV == NV0>(p);
}
template <class Loop, int M, int NV>
void pick(const ukernel_args& p) {
  if constexpr (M > 1)
    if (p.m < M) return pick<Loop, M - 1, NV>(p);
  pick_n<Loop, M, NV>(p);
}

}  // namespace
}  // namespace brgemm::kernels::zmm
