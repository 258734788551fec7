// Dropout's mask and scale one value at a time: the twin itself (dropout_twin.h), the kernel for
// CPUs below AVX2.
#include "../ukernels.h"
#include "../dropout_twin.h"

namespace brgemm::kernels {

void dropout__scalar(const dropout_key& k, const float* x, float* y, int64_t n) { brgemm_dropout_twin(k, x, y, 0, n); }

}  // namespace brgemm::kernels
