// The 16-bit transpose of the AVX2 and AVX-512 levels: 8 × 8 tiles in SSE2 registers (three
// rounds of unpacks: 16-, 32-, then 64-bit pairs), the edges by the scalar twin (static: each
// translation unit keeps its own copy, compiled with its flags).
#pragma once
#include <immintrin.h>
#include <cstdint>
#include "transpose_twin.h"

static inline void brgemm_transpose_8x8_b16(const uint16_t* s, int64_t ld_s, uint16_t* d, int64_t ld_d) {
  __m128i a[8], b[8], c[8];
  for (int i = 0; i < 8; ++i) a[i] = _mm_loadu_si128((const __m128i*)(s + i * ld_s));
  for (int i = 0; i < 4; ++i) {  // b[2i]: columns 0-3 of rows 2i, 2i+1 interleaved; b[2i+1]: 4-7
    b[2 * i] = _mm_unpacklo_epi16(a[2 * i], a[2 * i + 1]);
    b[2 * i + 1] = _mm_unpackhi_epi16(a[2 * i], a[2 * i + 1]);
  }
  for (int h = 0; h < 2; ++h) {  // c[4h + j]: columns 2j, 2j+1 of rows 4h … 4h+3
    c[4 * h + 0] = _mm_unpacklo_epi32(b[4 * h], b[4 * h + 2]);
    c[4 * h + 1] = _mm_unpackhi_epi32(b[4 * h], b[4 * h + 2]);
    c[4 * h + 2] = _mm_unpacklo_epi32(b[4 * h + 1], b[4 * h + 3]);
    c[4 * h + 3] = _mm_unpackhi_epi32(b[4 * h + 1], b[4 * h + 3]);
  }
  for (int j = 0; j < 4; ++j) {
    _mm_storeu_si128((__m128i*)(d + (2 * j) * ld_d), _mm_unpacklo_epi64(c[j], c[4 + j]));
    _mm_storeu_si128((__m128i*)(d + (2 * j + 1) * ld_d), _mm_unpackhi_epi64(c[j], c[4 + j]));
  }
}

// The VNNI-2 pairs (brgemm_interleave_pairs_twin's result): 8 columns of both rows at a time.
static inline void brgemm_interleave_pairs_b16_sse(const uint16_t* src, int64_t rows, int64_t cols, uint16_t* dst) {
  const int64_t c8 = cols / 8 * 8;
  for (int64_t p = 0; p < rows / 2; ++p) {
    const uint16_t *a = src + 2 * p * cols, *b = a + cols;
    uint16_t* d = dst + p * cols * 2;
    for (int64_t c = 0; c < c8; c += 8) {
      const __m128i x = _mm_loadu_si128((const __m128i*)(a + c)), y = _mm_loadu_si128((const __m128i*)(b + c));
      _mm_storeu_si128((__m128i*)(d + 2 * c), _mm_unpacklo_epi16(x, y));
      _mm_storeu_si128((__m128i*)(d + 2 * c + 8), _mm_unpackhi_epi16(x, y));
    }
  }
  brgemm_interleave_pairs_twin(src, rows, cols, c8, dst);
}

static inline void brgemm_transpose_b16_tiles(const uint16_t* src, int64_t rows, int64_t cols, int64_t ld_src,
                                              uint16_t* dst, int64_t ld_dst) {
  const int64_t r8 = rows / 8 * 8, c8 = cols / 8 * 8;
  for (int64_t r = 0; r < r8; r += 8) {
    for (int64_t c = 0; c < c8; c += 8) brgemm_transpose_8x8_b16(src + r * ld_src + c, ld_src, dst + c * ld_dst + r, ld_dst);
    brgemm_transpose_twin(src + r * ld_src + c8, 8, cols - c8, ld_src, dst + c8 * ld_dst + r, ld_dst);
  }
  brgemm_transpose_twin(src + r8 * ld_src, rows - r8, cols, ld_src, dst + r8, ld_dst);
}
