// The per-lane kernels of brgemm/norm.h one value at a time: the twin itself (norm_twin.h), for
// CPUs below AVX2 and as the reference the vector versions are tested against.
#include "../norm_kernels.h"
#include "../norm_twin.h"

namespace brgemm::kernels {

void lane_moments__scalar(const lane_rows& g, const void* x, const double* shift, double* sum, double* sumsq) {
  for (int64_t l = 0; l < g.width; ++l) brgemm_lane_moments_twin(g, x, l, 0, g.rows, shift, sum, sumsq);
}

void lane_affine__scalar(const lane_rows& g, const lane_affine_args& a) {
  for (int64_t r = 0; r < g.rows; ++r)
    for (int64_t l = 0; l < g.width; ++l) {
      const int64_t i = r * g.width + l;
      if (l >= g.lanes) {
        brgemm_lane_put(a.y, i, g.bf16, 0.0f);
        continue;
      }
      float rv = 0.0f;
      if (a.r) rv = brgemm_lane_get(a.r, i, g.bf16);
      brgemm_lane_put(a.y, i, g.bf16,
                      brgemm_lane_affine_twin(brgemm_lane_get(a.x, i, g.bf16), a.mean[l], a.scale[l], a.shift[l],
                                              a.r ? &rv : nullptr, a.relu));
    }
}

void lane_grad_moments__scalar(const lane_rows& g, const lane_grad_args& a) {
  for (int64_t l = 0; l < g.width; ++l) brgemm_lane_grad_moments_twin(g, a, l, 0, g.rows);
}

void lane_grad_affine__scalar(const lane_rows& g, const lane_grad_args& a) {
  for (int64_t r = 0; r < g.rows; ++r)
    for (int64_t l = 0; l < g.width; ++l) {
      const int64_t i = r * g.width + l;
      if (l >= g.lanes) {
        brgemm_lane_put(a.dx, i, a.dx_bf16, 0.0f);
        continue;
      }
      float yv = 0.0f;
      if (a.y) yv = brgemm_lane_get(a.y, i, g.bf16);
      const float gv = brgemm_lane_grad_twin(brgemm_lane_get(a.dy, i, g.bf16), a.y ? &yv : nullptr);
      brgemm_lane_put(a.dx, i, a.dx_bf16,
                      brgemm_lane_grad_affine_twin(gv, brgemm_lane_get(a.x, i, g.bf16), a.mean[l], a.a[l], a.c[l],
                                                   a.d[l]));
    }
}

}  // namespace brgemm::kernels
