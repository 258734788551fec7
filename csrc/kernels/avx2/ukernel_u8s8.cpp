// AVX2 int8 microkernels, the fallback for CPUs without AVX-512 (A u8 × B s8 packed VNNI-4
// → s32, exact). vpmaddubsw is not used: it saturates its 16-bit pair sums (255·127·2 > 32767),
// so results would depend on the ISA. Instead each 16-bit lane is split into its even and odd
// byte, widened to 16 bits (B sign-extended, A zero-extended), and vpmaddwd adds pairs into
// 32 bits exactly (|255·(-128)·2| < 2^31):
//   lane of one column = bytes k0 k1 | k2 k3
//   even: (k0, k2) as 16-bit pairs, odd: (k1, k3);  madd(even A, even B) + madd(odd A, odd B)
// An MR × NR tile of C lives in MR·NR/8 ymm accumulators. Per k-quad the NR/8 B vectors are split
// once (2·NR/8 ymm) and each row's A quad is broadcast and split in-register (2 ymm). 3×16: 6
// accumulators + 4 B + 2 A + 2 products + the byte mask, no spills (4×16 spills one
// accumulator). Splitting A once per tile into a buffer, as the AVX-512 kernel does, measured
// 12 % slower here on Zen 4.
// s8 A (SIGNED): each broadcast quad is XORed with 0x80 bytes (a + 128 as u8): the sum is
// Σ (a+128)·b, and execute() removes 128·colsum(B) in the epilogue, as for the VNNI kernels.
// K not a multiple of 4: a last quad built from the remaining A bytes (never reading A past its
// k columns). Zeroing, prefetch, the store of C and the edge-tile instances (M by smaller MR, N
// by vpmaskmovd on the last vector, plain loads when it is full) are the ymm skeleton's (tile.h).
#include "tile.h"

namespace brgemm::kernels {
namespace avx2_u8s8 {

// The 4 bytes of A at `a` as one 32-bit lane (unaligned).
static inline int32_t quad(const uint8_t* a) {
  int32_t v;
  __builtin_memcpy(&v, a, 4);
  return v;
}

// The last r (1..3) bytes of a row as a quad, zero-filled: bytes past k are never read.
static inline int32_t tail_quad(const uint8_t* a, int64_t r) {
  uint32_t v = a[0];
  if (r > 1) v |= (uint32_t)a[1] << 8;
  if (r > 2) v |= (uint32_t)a[2] << 16;
  return (int32_t)v;
}

// One k-quad: acc[m][v] += Σ_{j<4} a_m[j]·b_v[j] in every 32-bit lane, exactly.
template <int MR, int NV, bool FULL, bool TAIL, bool SIGNED>
static inline void step(__m256i (&acc)[MR][NV], const uint8_t* a, int64_t lda, const int8_t* b,
                        __m256i last, int64_t rem) {
  const __m256i low = _mm256_set1_epi16(0x00FF);
  __m256i be[NV], bo[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    const __m256i x = (v == NV - 1 && !FULL) ? _mm256_maskload_epi32((const int*)(b + 32 * v), last)
                                             : _mm256_loadu_si256((const __m256i*)(b + 32 * v));
    be[v] = _mm256_srai_epi16(_mm256_slli_epi16(x, 8), 8);  // k0, k2 sign-extended
    bo[v] = _mm256_srai_epi16(x, 8);                        // k1, k3 sign-extended
  }
#pragma GCC unroll 32
  for (int m = 0; m < MR; ++m) {
    const int32_t aq = TAIL ? tail_quad(a + m * lda, rem) : quad(a + m * lda);
    const __m256i x = _mm256_set1_epi32(SIGNED ? (int32_t)((uint32_t)aq ^ 0x80808080u) : aq);
    const __m256i ae = _mm256_and_si256(x, low);  // k0, k2 zero-extended
    const __m256i ao = _mm256_srli_epi16(x, 8);   // k1, k3 zero-extended
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v)
      acc[m][v] = _mm256_add_epi32(acc[m][v], _mm256_add_epi32(_mm256_madd_epi16(ae, be[v]),
                                                                _mm256_madd_epi16(ao, bo[v])));
  }
}

template <bool SIGNED>
struct kloop {
  using ta = uint8_t;
  using tb = int8_t;
  using acc = __m256i;
  const int64_t quads, rem, lda, ldb4;  // per tile: loop-invariant registers of the k-loop
  explicit kloop(const ukernel_args& p) : quads(p.k / 4), rem(p.k % 4), lda(p.lda), ldb4(p.ldb * 4) {}

  template <int MR, int NV, bool FULL>
  BRGEMM_KLOOP void run(const uint8_t* a, const int8_t* b, __m256i last, __m256i (&c)[MR][NV]) const {
    for (int64_t q = 0; q < quads; ++q) {
      step<MR, NV, FULL, false, SIGNED>(c, a, lda, b, last, 0);
      a += 4;
      b += ldb4;
    }
    if (rem) step<MR, NV, FULL, true, SIGNED>(c, a, lda, b, last, rem);  // B is zero-padded to the quad
  }
};

}  // namespace avx2_u8s8

void ukernel_u8s8_s32_3x16c4__avx2(const ukernel_args& p) { ymm::pick<avx2_u8s8::kloop<false>, 3, 2>(p); }
void ukernel_u8s8_s32_10x8c4__avx2(const ukernel_args& p) { ymm::pick<avx2_u8s8::kloop<false>, 10, 1>(p); }
void ukernel_s8s8_s32_3x16c4__avx2(const ukernel_args& p) { ymm::pick<avx2_u8s8::kloop<true>, 3, 2>(p); }
void ukernel_s8s8_s32_10x8c4__avx2(const ukernel_args& p) { ymm::pick<avx2_u8s8::kloop<true>, 10, 1>(p); }

}  // namespace brgemm::kernels
