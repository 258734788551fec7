// The shared-weight product's driver (codebook.h).
#include "codebook.h"
#include <omp.h>
#include "blocks.h"

namespace brgemm::layers {

void codebook_gemm(const codebook_product& p) {
  const int64_t panels = ceil_div(p.n, codebook_panel);
  const int threads = (int)std::min<int64_t>(threads_for(2.0 * p.m * p.n * p.k), panels);
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    codebook_gemm_panels(p, panels * t / nt, panels * (t + 1) / nt);
  }
}

}  // namespace brgemm::layers
