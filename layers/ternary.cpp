// The ternary product's driver (ternary.h).
#include "ternary.h"
#include <omp.h>
#include "blocks.h"

namespace brgemm::layers {

void ternary_gemm(const ternary_product& p) {
  const int64_t panels = ternary_panels(p.n);
  const int threads = (int)std::max<int64_t>(1, std::min<int64_t>(threads_for(2.0 * p.m * p.n * p.k * p.levels),
                                                                    panels * p.m));
  // Fewer panels than threads (a convolution's N·OH·OW rows against few output channels): the
  // rows are split too, in runs of 4 (the AVX-512 kernels' row block).
  const int64_t parts = panels >= threads ? 1 : std::min<int64_t>((threads + panels - 1) / panels, (p.m + 3) / 4);
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    if (parts == 1) {
      ternary_gemm_panels(p, panels * t / nt, panels * (t + 1) / nt);
    } else {
      const int64_t quads = (p.m + 3) / 4;
      for (int64_t item = panels * parts * t / nt; item < panels * parts * (t + 1) / nt; ++item) {
        const int64_t pn = item / parts, part = item % parts;
        const int64_t i0 = std::min(p.m, 4 * (quads * part / parts)), i1 = std::min(p.m, 4 * (quads * (part + 1) / parts));
        if (i0 >= i1) continue;
        ternary_product rows = p;
        rows.m = i1 - i0;
        rows.a = p.a + i0 * p.lda;
        rows.c = p.c + i0 * p.ldc;
        ternary_gemm_panels(rows, pn, pn + 1);
      }
    }
  }
}

}  // namespace brgemm::layers
