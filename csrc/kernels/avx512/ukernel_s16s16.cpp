// AVX-512 (F/BW) int16 microkernels for CPUs without VNNI (A s16 × B s16 packed VNNI-2 → s32):
// vpmaddwd multiplies the two s16 pairs of a lane and adds them into 32 bits (exact except for
// (-2^15)·(-2^15)·2, which wraps to -2^31, i.e. modulo 2^32), then vpaddd accumulates (modulo
// 2^32): the same bits as vpdpwssd and the scalar twin. The k-loop is kloop_s16s16.h.
// 6×64: 24 accumulators + 4 B + the A broadcast + a product, no spills.
#include "kloop_s16s16.h"

namespace brgemm::kernels {
namespace avx512_s16s16 {

struct dot {
  static inline __m512i apply(__m512i c, __m512i a, __m512i b) { return _mm512_add_epi32(c, _mm512_madd_epi16(a, b)); }
};
using kloop = kloop_s16s16<dot>;
using kloop_f32 = kloop_s16s16_f32<dot>;

}  // namespace avx512_s16s16

void ukernel_s16s16_s32_6x64c2__avx512(const ukernel_args& p) { zmm::pick<avx512_s16s16::kloop, 6, 4>(p); }
void ukernel_s16s16_s32_12x32c2__avx512(const ukernel_args& p) { zmm::pick<avx512_s16s16::kloop, 12, 2>(p); }
void ukernel_s16s16_f32_6x32c2__avx512(const ukernel_args& p) { zmm::pick<avx512_s16s16::kloop_f32, 6, 2>(p); }

}  // namespace brgemm::kernels
