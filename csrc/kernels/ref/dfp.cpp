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

void dfp_slice_norms__scalar(const float* x, int64_t cols, int64_t lanes, double* pixel2, double* row2) {
  brgemm_dfp_slice_norms_twin(x, cols, lanes, pixel2, row2);
}

}  // namespace brgemm::kernels
