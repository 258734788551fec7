// The transposes with AVX-512: 32-bit elements in 16 × 16 tiles of zmm registers (unpacks of
// 32- and 64-bit pairs, then two rounds of 128-bit lane shuffles; edge tiles through masked
// loads and stores), 16-bit ones in 8 × 8 SSE2 tiles with the twin on the edges; 8-bit ones
// are the twin's. A copy: the same bytes as the twin.
#include <immintrin.h>
#include "../ukernels.h"
#include "../transpose_sse.h"
#include "../transpose_twin.h"

namespace brgemm::kernels {

namespace {

// rows × cols (each ≤ 16) of s transposed into d.
// `full` (rows = cols = 16) a template argument: the whole tiles' code has no masks or branches.
template <bool full>
inline void tile_16x16(const uint32_t* s, int64_t ld_s, uint32_t* d, int64_t ld_d, int64_t rows, int64_t cols) {
  const __mmask16 cm = (__mmask16)((1u << cols) - 1), rm = (__mmask16)((1u << rows) - 1);
  __m512i r[16], t[16], u[16];
  for (int i = 0; i < 16; ++i)
    r[i] = full ? _mm512_loadu_si512(s + i * ld_s)
                : i < rows ? _mm512_maskz_loadu_epi32(cm, s + i * ld_s) : _mm512_setzero_si512();
  for (int i = 0; i < 8; ++i) {  // t[2i], t[2i+1]: rows 2i, 2i+1 interleaved (per 128-bit lane)
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int h = 0; h < 4; ++h) {  // u[4h + j], lane L: column 4L + j of rows 4h … 4h+3
    u[4 * h + 0] = _mm512_unpacklo_epi64(t[4 * h], t[4 * h + 2]);
    u[4 * h + 1] = _mm512_unpackhi_epi64(t[4 * h], t[4 * h + 2]);
    u[4 * h + 2] = _mm512_unpacklo_epi64(t[4 * h + 1], t[4 * h + 3]);
    u[4 * h + 3] = _mm512_unpackhi_epi64(t[4 * h + 1], t[4 * h + 3]);
  }
  for (int j = 0; j < 4; ++j) {
    // lanes (0, 2) and (1, 3) of rows 0-7 and of rows 8-15, then column 4L + j gathers lane L
    const __m512i e0 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0x88), o0 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0xDD);
    const __m512i e1 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0x88);
    const __m512i o1 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0xDD);
    const __m512i out[4] = {_mm512_shuffle_i32x4(e0, e1, 0x88), _mm512_shuffle_i32x4(o0, o1, 0x88),
                            _mm512_shuffle_i32x4(e0, e1, 0xDD), _mm512_shuffle_i32x4(o0, o1, 0xDD)};
    for (int l = 0; l < 4; ++l) {
      const int64_t c = 4 * l + j;
      if (full)
        _mm512_storeu_si512(d + c * ld_d, out[l]);
      else if (c < cols)
        _mm512_mask_storeu_epi32(d + c * ld_d, rm, out[l]);
    }
  }
}

}  // namespace

void transpose_b32__avx512(const uint32_t* src, int64_t rows, int64_t cols, int64_t ld_src, uint32_t* dst,
                           int64_t ld_dst) {
  for (int64_t r = 0; r < rows; r += 16)
    for (int64_t c = 0; c < cols; c += 16)
      (r + 16 <= rows && c + 16 <= cols ? tile_16x16<true> : tile_16x16<false>)(
          src + r * ld_src + c, ld_src, dst + c * ld_dst + r, ld_dst, std::min<int64_t>(16, rows - r),
                 std::min<int64_t>(16, cols - c));
}

void transpose_b16__avx512(const uint16_t* src, int64_t rows, int64_t cols, int64_t ld_src, uint16_t* dst,
                           int64_t ld_dst) {
  brgemm_transpose_b16_tiles(src, rows, cols, ld_src, dst, ld_dst);
}

void interleave_pairs_b16__avx512(const uint16_t* src, int64_t rows, int64_t cols, uint16_t* dst) {
  brgemm_interleave_pairs_b16_sse(src, rows, cols, dst);
}

void transpose_b8__avx512(const uint8_t* src, int64_t rows, int64_t cols, int64_t ld_src, uint8_t* dst,
                          int64_t ld_dst) {
  brgemm_transpose_twin(src, rows, cols, ld_src, dst, ld_dst);
}

}  // namespace brgemm::kernels
