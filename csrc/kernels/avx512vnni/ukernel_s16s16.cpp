// AVX-512 VNNI int16 microkernels (A s16 × B s16 packed VNNI-2 → s32): vpdpwssd adds both
// s16·s16 products of a lane into its s32 accumulator in one instruction (non-saturating: modulo
// 2^32, like the scalar twin), twice the fp32 FMA's products per instruction. The k-loop is
// ../avx512/kloop_s16s16.h, the tile skeleton ../avx512/tile.h, both compiled here with this
// level's flags.
#include "../avx512/kloop_s16s16.h"

namespace brgemm::kernels {
namespace avx512vnni_s16s16 {

struct dot {
  static inline __m512i apply(__m512i c, __m512i a, __m512i b) { return _mm512_dpwssd_epi32(c, a, b); }
};
using kloop = kloop_s16s16<dot>;
using kloop_f32 = kloop_s16s16_f32<dot>;

}  // namespace avx512vnni_s16s16

void ukernel_s16s16_s32_6x64c2__avx512vnni(const ukernel_args& p) { zmm::pick<avx512vnni_s16s16::kloop, 6, 4>(p); }
void ukernel_s16s16_s32_12x32c2__avx512vnni(const ukernel_args& p) { zmm::pick<avx512vnni_s16s16::kloop, 12, 2>(p); }
void ukernel_s16s16_f32_6x32c2__avx512vnni(const ukernel_args& p) { zmm::pick<avx512vnni_s16s16::kloop_f32, 6, 2>(p); }

}  // namespace brgemm::kernels
