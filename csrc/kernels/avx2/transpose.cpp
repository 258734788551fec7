// The transposes with AVX2: 32-bit elements in 8 × 8 tiles of ymm registers (edge tiles through
// masked loads and stores), 16-bit ones in 8 × 8 SSE2 tiles with the twin on the edges; 8-bit
// ones are the twin's. A copy: the same bytes as the twin.
#include <immintrin.h>
#include "../ukernels.h"
#include "../transpose_sse.h"
#include "../transpose_twin.h"

namespace brgemm::kernels {

namespace {

// The first n of 8 lanes set.
inline __m256i lanes(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// rows × cols (each ≤ 8) of s transposed into d.
// `full` (rows = cols = 8) a template argument: the whole tiles' code has no masks or branches.
template <bool full>
inline void tile_8x8(const uint32_t* s, int64_t ld_s, uint32_t* d, int64_t ld_d, int64_t rows, int64_t cols) {
  const __m256i cm = lanes(cols), rm = lanes(rows);
  __m256 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i)
    r[i] = full ? _mm256_loadu_ps((const float*)s + i * ld_s)
                : i < rows ? _mm256_maskload_ps((const float*)s + i * ld_s, cm) : _mm256_setzero_ps();
  for (int i = 0; i < 4; ++i) {  // t[2i], t[2i+1]: rows 2i, 2i+1 interleaved (per 128-bit lane)
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int h = 0; h < 2; ++h) {  // u[4h + j]: column j (and j + 4) of rows 4h … 4h+3
    u[4 * h + 0] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0x44);
    u[4 * h + 1] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0xEE);
    u[4 * h + 2] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0x44);
    u[4 * h + 3] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0xEE);
  }
  for (int j = 0; j < 8; ++j) {
    // Two spelled-out immediates: a computed one compiles only once the loop is unrolled (-O3).
    const __m256 out = j < 4 ? _mm256_permute2f128_ps(u[j % 4], u[4 + j % 4], 0x20)
                             : _mm256_permute2f128_ps(u[j % 4], u[4 + j % 4], 0x31);
    if (full)
      _mm256_storeu_ps((float*)d + j * ld_d, out);
    else if (j < cols)
      _mm256_maskstore_ps((float*)d + j * ld_d, rm, out);
  }
}

}  // namespace

void transpose_b32__avx2(const uint32_t* src, int64_t rows, int64_t cols, int64_t ld_src, uint32_t* dst,
                         int64_t ld_dst) {
  for (int64_t r = 0; r < rows; r += 8)
    for (int64_t c = 0; c < cols; c += 8)
      (r + 8 <= rows && c + 8 <= cols ? tile_8x8<true> : tile_8x8<false>)(
          src + r * ld_src + c, ld_src, dst + c * ld_dst + r, ld_dst, std::min<int64_t>(8, rows - r),
               std::min<int64_t>(8, cols - c));
}

void transpose_b16__avx2(const uint16_t* src, int64_t rows, int64_t cols, int64_t ld_src, uint16_t* dst,
                         int64_t ld_dst) {
  brgemm_transpose_b16_tiles(src, rows, cols, ld_src, dst, ld_dst);
}

void interleave_pairs_b16__avx2(const uint16_t* src, int64_t rows, int64_t cols, uint16_t* dst) {
  brgemm_interleave_pairs_b16_sse(src, rows, cols, dst);
}

void transpose_b8__avx2(const uint8_t* src, int64_t rows, int64_t cols, int64_t ld_src, uint8_t* dst,
                        int64_t ld_dst) {
  brgemm_transpose_twin(src, rows, cols, ld_src, dst, ld_dst);
}

}  // namespace brgemm::kernels
