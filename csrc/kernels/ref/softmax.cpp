// The softmax family (brgemm.h) on one row, one value at a time: the twin itself
// (softmax_twin.h), the kernel for CPUs below AVX2.
#include "../ukernels.h"
#include "../softmax_twin.h"

namespace brgemm::kernels {

namespace {
using brgemm_softmax::backward_exact, brgemm_softmax::backward_taylor, brgemm_softmax::forward;
BRGEMM_SOFTMAX_ROW_BY_ROW
}  // namespace

BRGEMM_SOFTMAX_ENTRY_POINTS(scalar)

}  // namespace brgemm::kernels
