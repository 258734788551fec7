// The ternary products of brgemm/ternary.h with AVX2: as AVX-512's (see there), a 16-byte group
// broadcast to both 128-bit lanes and shifted by 2L per lane gives the s8 weights of 8 columns
// (half h of the group: lanes L = 2h, 2h + 1); a panel in two halves of 32 columns, so that four
// s16 and four float accumulators stay in registers; four rows at a time go vector by vector
// instead (rows4_vector). Same exact int32 block sums and the same float order as the scalar twin.
#include <immintrin.h>
#include <algorithm>
#include <cstring>
#include "../ukernels.h"

namespace brgemm::kernels {

namespace {

inline __m256i mask8(int64_t n) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)std::max<int64_t>(0, std::min<int64_t>(n, 8))), lane);
}

// Columns [32·half, 32·half + 32) of panel pn for row i: vector v = columns 32·half + 8v ..
// (group g = 2·half + v/2, its half v%2).
void half_rows(const ternary_product& p, int64_t pn, int64_t i, int half) {
  const int64_t nb = p.k / p.block, lb = ternary_level_bytes(p.k, p.n), la = ternary_level_alphas(p.k, p.n, p.block);
  const __m256i sh[2] = {_mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2), _mm256_setr_epi32(4, 4, 4, 4, 6, 6, 6, 6)};
  const __m256i three = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
  const __m256i lut = _mm256_setr_epi8(0, 1, 0, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, -1, 0, 0, 0, 0, 0, 0,
                                       0, 0, 0, 0, 0, 0);
  const uint8_t* a = p.a + i * p.lda;
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int l = 0; l < p.levels; ++l) {
    const uint8_t* panel = p.b + l * lb + pn * (p.k / 4) * 64;
    const float* alpha = p.alpha + l * la + pn * nb * ternary_panel + 32 * half;
    for (int64_t b = 0; b < nb; ++b) {
      __m256 al[4];
      int nz = 0;
      for (int v = 0; v < 4; ++v) {
        al[v] = _mm256_loadu_ps(alpha + b * ternary_panel + 8 * v);
        nz |= _mm256_movemask_ps(_mm256_cmp_ps(al[v], _mm256_setzero_ps(), _CMP_NEQ_UQ));
      }
      if (!nz) continue;
      __m256i s[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
      const uint8_t* row = panel + b * (p.block / 4) * 64 + 32 * half;
      for (int64_t q = b * p.block / 4; q < (b + 1) * p.block / 4; ++q, row += 64) {
        int32_t quad;
        std::memcpy(&quad, a + 4 * q, 4);
        const __m256i x = _mm256_set1_epi32(quad);
        for (int v = 0; v < 4; ++v) {
          const __m256i bytes = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(row + 16 * (v / 2))));
          const __m256i w = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srlv_epi32(bytes, sh[v % 2]), three));
          s[v] = _mm256_add_epi16(s[v], _mm256_maddubs_epi16(x, w));
        }
      }
      for (int v = 0; v < 4; ++v)
        acc[v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(s[v], ones)), al[v], acc[v]);
    }
  }
  const int64_t j0 = pn * ternary_panel + 32 * half, cols = std::min(ternary_panel, p.n - pn * ternary_panel) - 32 * half;
  const __m256 zp = _mm256_set1_ps(p.zero_point), sc = _mm256_set1_ps(p.scale);
  for (int v = 0; v < 4 && 8 * v < cols; ++v) {
    const __m256i m = mask8(cols - 8 * v);
    const int64_t j = j0 + 8 * v;
    const __m256 t = _mm256_fnmadd_ps(zp, _mm256_maskload_ps(p.corr + j, m), acc[v]);
    __m256 y = p.bias ? _mm256_fmadd_ps(sc, t, _mm256_maskload_ps(p.bias + j, m)) : _mm256_mul_ps(sc, t);
    if (p.relu) y = _mm256_max_ps(y, _mm256_setzero_ps());
    _mm256_maskstore_ps(p.c + i * p.ldc + j, m, y);
  }
}

// Four rows i0 .. i0 + 3, columns 8v .. 8v + 7 of panel pn (group v/2, its half v%2): each quad's
// weights widened once for the four rows (a convolution's pixels, a batch). The panel's codes are
// walked once per vector, from L1/L2; four float and four s16 accumulators.
void rows4_vector(const ternary_product& p, int64_t pn, int64_t i0, int v) {
  constexpr int MR = 4;
  const int64_t nb = p.k / p.block, lb = ternary_level_bytes(p.k, p.n), la = ternary_level_alphas(p.k, p.n, p.block);
  const __m256i sh = v % 2 ? _mm256_setr_epi32(4, 4, 4, 4, 6, 6, 6, 6) : _mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2);
  const __m256i three = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
  const __m256i lut = _mm256_setr_epi8(0, 1, 0, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, -1, 0, 0, 0, 0, 0, 0,
                                       0, 0, 0, 0, 0, 0);
  const uint8_t* a[MR];
  for (int r = 0; r < MR; ++r) a[r] = p.a + (i0 + r) * p.lda;
  __m256 acc[MR];
  for (int r = 0; r < MR; ++r) acc[r] = _mm256_setzero_ps();
  for (int l = 0; l < p.levels; ++l) {
    const uint8_t* panel = p.b + l * lb + pn * (p.k / 4) * 64 + 16 * (v / 2);
    const float* alpha = p.alpha + l * la + pn * nb * ternary_panel + 8 * v;
    for (int64_t b = 0; b < nb; ++b) {
      const __m256 al = _mm256_loadu_ps(alpha + b * ternary_panel);
      if (!_mm256_movemask_ps(_mm256_cmp_ps(al, _mm256_setzero_ps(), _CMP_NEQ_UQ))) continue;
      __m256i s[MR];
      for (int r = 0; r < MR; ++r) s[r] = _mm256_setzero_si256();
      const uint8_t* row = panel + b * (p.block / 4) * 64;
      for (int64_t q = b * p.block / 4; q < (b + 1) * p.block / 4; ++q, row += 64) {
        const __m256i bytes = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)row));
        const __m256i w = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srlv_epi32(bytes, sh), three));
        for (int r = 0; r < MR; ++r) {
          int32_t quad;
          std::memcpy(&quad, a[r] + 4 * q, 4);
          s[r] = _mm256_add_epi16(s[r], _mm256_maddubs_epi16(_mm256_set1_epi32(quad), w));
        }
      }
      for (int r = 0; r < MR; ++r) acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(s[r], ones)), al, acc[r]);
    }
  }
  const int64_t j = pn * ternary_panel + 8 * v, cols = std::min(ternary_panel, p.n - pn * ternary_panel) - 8 * v;
  const __m256i m = mask8(cols);
  const __m256 zp = _mm256_set1_ps(p.zero_point), sc = _mm256_set1_ps(p.scale);
  const __m256 corr = _mm256_maskload_ps(p.corr + j, m);
  const __m256 bias = p.bias ? _mm256_maskload_ps(p.bias + j, m) : _mm256_setzero_ps();
  for (int r = 0; r < MR; ++r) {
    const __m256 t = _mm256_fnmadd_ps(zp, corr, acc[r]);
    __m256 y = p.bias ? _mm256_fmadd_ps(sc, t, bias) : _mm256_mul_ps(sc, t);
    if (p.relu) y = _mm256_max_ps(y, _mm256_setzero_ps());
    _mm256_maskstore_ps(p.c + (i0 + r) * p.ldc + j, m, y);
  }
}

}  // namespace

void ternary_gemm__avx2(const ternary_product& p, int64_t p0, int64_t p1) {
  for (int64_t pn = p0; pn < p1; ++pn) {
    const int64_t cols = std::min(ternary_panel, p.n - pn * ternary_panel);
    int64_t i = 0;
    for (; i + 4 <= p.m; i += 4)
      for (int v = 0; v < 8 && 8 * v < cols; ++v) rows4_vector(p, pn, i, v);
    for (int half = 0; half < 2 && 32 * half < cols; ++half)
      for (int64_t r = i; r < p.m; ++r) half_rows(p, pn, r, half);
  }
}

}  // namespace brgemm::kernels
