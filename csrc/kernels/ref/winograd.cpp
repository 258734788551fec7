// The Winograd transforms (brgemm/winograd.h) one lane at a time: the twin itself
// (winograd_twin.h over scalar_ops), the path for CPUs below AVX2.
#include "../ukernels.h"
#include "../winograd_twin.h"

namespace brgemm::kernels {

BRGEMM_WINOGRAD_ENTRY_POINTS(scalar, brgemm_winograd::scalar_ops)

}  // namespace brgemm::kernels
