// The ternary product's driver (ternary.h).
#include "ternary.h"
#include <omp.h>
#include "blocks.h"

namespace brgemm::layers {

void ternary_gemm(const ternary_product& p) {
  const int64_t panels = ternary_panels(p.n);
  const int threads = (int)std::min<int64_t>(threads_for(2.0 * p.m * p.n * p.k * p.levels), panels);
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    ternary_gemm_panels(p, panels * t / nt, panels * (t + 1) / nt);
  }
}

}  // namespace brgemm::layers
