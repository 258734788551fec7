// The AVX-512 epilogue of a scratch tile: the stages of brgemm.h (epilogue_vec.h) on 16
// columns at a time, the last vector of a row masked; bit-identical to the scalar twin. Also
// used by the VNNI and BF16 levels, and for the tiles the zmm skeleton does not finish in
// registers (any activation, edge tiles in N).
#include "epilogue_vec.h"

namespace brgemm::kernels {
namespace {

template <bool INT8, out_type OUT>
void tile_epilogue(const epilogue_desc& d, const epilogue_tile& tl) {
  const epilogue16<INT8, OUT, false> e(d, tl);
  const ktanh_table32 table;
  const int64_t m = tl.m, n = tl.n, ld_acc = tl.ld_acc;
  for (int64_t i = 0; i < m; ++i) {
    const __m512i row_off = e.row_term(i);
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 k = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1u);
      if constexpr (INT8)
        e.put(_mm512_maskz_loadu_epi32(k, (const int32_t*)tl.acc + i * ld_acc + j), row_off, i, j, k, &table);
      else
        e.put(_mm512_maskz_loadu_ps(k, (const float*)tl.acc + i * ld_acc + j), row_off, i, j, k, &table);
    }
  }
}

template <bool INT8>
void by_output(const epilogue_desc& d, const epilogue_tile& tl) {
  switch (d.out) {
    case out_type::acc: return tile_epilogue<INT8, out_type::acc>(d, tl);
    case out_type::bf16: return tile_epilogue<INT8, out_type::bf16>(d, tl);
    case out_type::u8: return tile_epilogue<INT8, out_type::u8>(d, tl);
    case out_type::s8: return tile_epilogue<INT8, out_type::s8>(d, tl);
    default: return tile_epilogue<INT8, out_type::f32>(d, tl);
  }
}

}  // namespace

void epilogue__avx512(const epilogue_desc& d, dtype t, const epilogue_tile& tl) {
  if (dtype_is_integer(t)) by_output<true>(d, tl);
  else by_output<false>(d, tl);
}

}  // namespace brgemm::kernels
