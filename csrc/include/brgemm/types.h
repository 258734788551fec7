// csrc/include/brgemm/types.h: the element types and the kernel dtypes of the public API, and
// what each dtype reads and writes. The one place the core, the kernels, the layers and the
// bindings name an element type; brgemm.h includes it.
//
// The helpers are constexpr and always inlined: the per-ISA translation units include this
// header too, and an out-of-line copy compiled with their flags must never be the one the
// linker keeps for baseline code (STYLE.md, convention 6).
#pragma once
#include <cstdint>

#define BRGEMM_INLINE [[gnu::always_inline]] inline constexpr

namespace brgemm {

// f32 → bf16 bits, round to nearest even; NaN stays a (quiet) NaN, subnormals are kept. The one
// rounding rule of every conversion (the scalar twins; a select, so that loops vectorize).
BRGEMM_INLINE uint16_t bf16_rne_bits(float v) {
  const uint32_t u = __builtin_bit_cast(uint32_t, v);
  return v != v ? (uint16_t)((u >> 16) | 0x40) : (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// f32 → bf16 bits as the kernels' epilogues store them: bf16_rne_bits, except that a zero or
// subnormal input gives a zero of its sign. That is AVX512_BF16's vcvtneps2bf16 (it reads its
// inputs as if DAZ were set), which rounds a whole vector in one instruction where the integer
// sequence takes eleven: on a K = 64 product that sequence was 14 % of the layer. Every ISA's
// epilogue follows this rule, so their bits stay identical.
BRGEMM_INLINE uint16_t bf16_out_bits(float v) {
  const uint32_t u = __builtin_bit_cast(uint32_t, v);
  return (u & 0x7F800000u) == 0 ? (uint16_t)((u >> 16) & 0x8000u) : bf16_rne_bits(v);
}

// The element types of the arrays the core, the layers and the bindings read and write
// (bf16 and f16 are stored as their uint16 bits).
enum class element : int { f32 = 0, bf16, f16, u8, s8, s32, s16 };
constexpr int element_count = 7;
BRGEMM_INLINE int element_bytes(element e) {
  return e == element::bf16 || e == element::f16 || e == element::s16 ? 2
         : e == element::u8 || e == element::s8                       ? 1
                                                                      : 4;
}
BRGEMM_INLINE const char* element_name(element e) {
  switch (e) {
    case element::bf16: return "bf16";
    case element::f16: return "f16";
    case element::u8: return "u8";
    case element::s8: return "s8";
    case element::s32: return "s32";
    case element::s16: return "s16";
    default: return "f32";
  }
}

// What a kernel multiplies, and what it accumulates into (C's type without an epilogue):
//   f32  : A f32  × B f32           → f32
//   bf16 : A bf16 × B bf16, VNNI-2  → f32   B element (k, n) at ((k/2)·ldb + n)·2 + k%2
//   u8s8 : A u8   × B s8,   VNNI-4  → s32   B element (k, n) at ((k/4)·ldb + n)·4 + k%4
//   s8s8 : A s8   × B s8,   VNNI-4  → s32   the u8s8 kernels on A + 128 (each A byte XOR 0x80,
//          which vpdpbusd needs unsigned): the ukernel's sum is Σ (a+128)·b, and execute()
//          subtracts 128·colsum(B) through the epilogue's column offsets (see epilogue_args),
//          so the caller of execute() must supply them; the result is the exact Σ a·b
//   f32f16: A f32 × B IEEE half     → f32   plain rows, widened in registers (memory-bound
//          layers: half the weight traffic)
//   s16s16: A s16  × B s16, VNNI-2  → s32   B element (k, n) at ((k/2)·ldb + n)·2 + k%2; each
//          pair of products and every sum wrap modulo 2^32 (as vpdpwssd and vpmaddwd + vpaddd
//          do), so the result is the exact Σ a·b whenever that fits in s32, and the same bits
//          on every ISA when it does not (dynamic fixed point, DFP-16)
//   s16s16f32: A s16 × B s16, VNNI-2 → f32   as s16s16 within each batch element (A_i·B_i summed in
//          s32, modulo 2^32), then that sum converted to f32 (nearest even) and added to an f32
//          accumulator in batch order: the batch names the K-chunks of a longer reduction whose
//          s32 sums must not overflow (DFP-16's scheme, Das et al. 2018)
// In the packed (VNNI) layouts ldb counts columns, K is padded with zeros to whole pairs /
// quads (the packer does it), and A is read only for its k real columns.
enum class dtype : int { f32 = 0, bf16, u8s8, f32f16, s8s8, s16s16, s16s16f32 };
constexpr int dtype_count = 7;
BRGEMM_INLINE bool dtype_is_int8(dtype t) { return t == dtype::u8s8 || t == dtype::s8s8; }
// An s32 accumulator (the int8 and int16 dtypes): beta 0 or 1, the integer epilogue stages.
BRGEMM_INLINE bool dtype_is_integer(dtype t) { return dtype_is_int8(t) || t == dtype::s16s16; }
BRGEMM_INLINE element dtype_a(dtype t) {  // the element types of A, B and C
  return t == dtype::bf16 ? element::bf16 : t == dtype::u8s8 ? element::u8 : t == dtype::s8s8 ? element::s8
         : t == dtype::s16s16 || t == dtype::s16s16f32 ? element::s16 : element::f32;
}
BRGEMM_INLINE element dtype_b(dtype t) {
  return t == dtype::bf16 ? element::bf16 : dtype_is_int8(t) ? element::s8 : t == dtype::f32f16 ? element::f16
         : t == dtype::s16s16 || t == dtype::s16s16f32 ? element::s16 : element::f32;
}
BRGEMM_INLINE element dtype_c(dtype t) { return dtype_is_integer(t) ? element::s32 : element::f32; }
BRGEMM_INLINE int dtype_kpack(dtype t) {  // rows of B per packed row
  return t == dtype::bf16 || t == dtype::s16s16 || t == dtype::s16s16f32 ? 2 : dtype_is_int8(t) ? 4 : 1;
}
BRGEMM_INLINE int dtype_a_bytes(dtype t) { return element_bytes(dtype_a(t)); }
BRGEMM_INLINE int dtype_b_bytes(dtype t) { return element_bytes(dtype_b(t)); }
BRGEMM_INLINE int dtype_c_bytes(dtype t) { return element_bytes(dtype_c(t)); }
BRGEMM_INLINE const char* dtype_name(dtype t) {  // f32, bf16, u8s8, f32f16, s8s8, s16s16, s16s16f32
  switch (t) {
    case dtype::bf16: return "bf16";
    case dtype::u8s8: return "u8s8";
    case dtype::f32f16: return "f32f16";
    case dtype::s8s8: return "s8s8";
    case dtype::s16s16: return "s16s16";
    case dtype::s16s16f32: return "s16s16f32";
    default: return "f32";
  }
}

// What the epilogue stores (its stage 5 in brgemm.h): the accumulator's own type, or an
// element type. The numbering is the Python Epilogue's (brgemm/_api.py, _OUT_TYPES).
enum class out_type : int { acc = 0, f32, bf16, u8, s8 };
BRGEMM_INLINE element out_element(dtype t, out_type o) {
  switch (o) {
    case out_type::f32: return element::f32;
    case out_type::bf16: return element::bf16;
    case out_type::u8: return element::u8;
    case out_type::s8: return element::s8;
    default: return dtype_c(t);
  }
}
BRGEMM_INLINE int out_type_bytes(dtype t, out_type o) { return element_bytes(out_element(t, o)); }

}  // namespace brgemm
