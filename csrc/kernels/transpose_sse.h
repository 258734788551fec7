// An 8 × 8 tile of 16-bit elements transposed in SSE2 registers (three rounds of unpacks: 16-,
// 32-, then 64-bit pairs), for the AVX2 and AVX-512 transposes (static: each translation unit
// keeps its own copy, compiled with its flags).
#pragma once
#include <immintrin.h>
#include <cstdint>

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
