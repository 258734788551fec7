// The scalar epilogue: the twin itself (epilogue_twin.h), for CPUs below AVX2.
#include "../ukernels.h"
#include "../epilogue_twin.h"

namespace brgemm::kernels {

void epilogue__scalar(const epilogue_desc& d, dtype t, const epilogue_tile& tile) {
  brgemm_epilogue_twin(d, t, tile, 0);
}

}  // namespace brgemm::kernels
