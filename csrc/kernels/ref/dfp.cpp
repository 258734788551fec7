// The scalar reference DFP-16 conversions (brgemm/dfp.h): the twin itself (../dfp_twin.h).
#include "../ukernels.h"
#include "../dfp_twin.h"

namespace brgemm::kernels {

uint32_t dfp_absmax_bits__scalar(const float* x, int64_t n) { return brgemm_dfp_absmax_twin(x, n, 0); }
void dfp_quantize__scalar(const float* x, int16_t* m, int64_t n, float s1, float s2) {
  brgemm_dfp_quantize_twin(x, m, n, s1, s2);
}
void dfp_dequantize__scalar(const int16_t* m, float* y, int64_t n, float s1, float s2) {
  brgemm_dfp_dequantize_twin(m, y, n, s1, s2);
}

void dfp_scale__scalar(float* y, int64_t n, float s) { brgemm_dfp_scale_twin(y, n, s); }

}  // namespace brgemm::kernels
