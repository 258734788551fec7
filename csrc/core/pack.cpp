// Packing B into the kernels' layouts (plain rows for f32, VNNI-2 for bf16 and int16, VNNI-4 for
// int8).
// Weights are packed once and reused, so this is plain C++ with baseline flags.
#include <cstring>
#include "brgemm/brgemm.h"

namespace brgemm {

int64_t packed_b_elements(dtype t, int64_t k, int64_t ldb) {
  const int64_t kp = dtype_kpack(t);
  return (k + kp - 1) / kp * ldb * kp;
}

namespace {
template <typename T>
void interleave(const T* src, int64_t k, int64_t n, int64_t ld_src, T* dst, int64_t ldb, int64_t kp) {
  const int64_t rows = (k + kp - 1) / kp;
  std::memset(dst, 0, (size_t)(rows * ldb * kp) * sizeof(T));  // K padding and columns ≥ n
  for (int64_t kk = 0; kk < k; ++kk) {
    T* out = dst + (kk / kp) * ldb * kp + kk % kp;
    const T* in = src + kk * ld_src;
    for (int64_t j = 0; j < n; ++j) out[j * kp] = in[j];
  }
}
}  // namespace

status pack_b(dtype t, const void* src, int64_t k, int64_t n, int64_t ld_src, void* dst, int64_t ldb,
              int32_t* colsum) {
  if (k < 1) return status::bad_k;
  if (n < 1) return status::bad_n;
  if (ldb < n) return status::bad_ldb;
  switch (t) {
    case dtype::f32: interleave((const float*)src, k, n, ld_src, (float*)dst, ldb, 1); break;
    case dtype::bf16: interleave((const uint16_t*)src, k, n, ld_src, (uint16_t*)dst, ldb, 2); break;
    case dtype::f32f16: interleave((const uint16_t*)src, k, n, ld_src, (uint16_t*)dst, ldb, 1); break;
    case dtype::s16s16:
    case dtype::s16s16f32: interleave((const int16_t*)src, k, n, ld_src, (int16_t*)dst, ldb, 2); break;
    case dtype::u8s8:
    case dtype::s8s8:
      interleave((const int8_t*)src, k, n, ld_src, (int8_t*)dst, ldb, 4);
      if (colsum) {
        for (int64_t j = 0; j < n; ++j) colsum[j] = 0;
        for (int64_t kk = 0; kk < k; ++kk) {
          const int8_t* in = (const int8_t*)src + kk * ld_src;
          for (int64_t j = 0; j < n; ++j) colsum[j] += in[j];
        }
      }
      break;
    default: return status::bad_dtype;
  }
  return status::ok;
}

int64_t panel_elements(dtype t, int64_t k) { return packed_b_elements(t, k, panel_width); }

status pack_b_panels(dtype t, const void* src, int64_t k, int64_t n, int64_t ld_src, void* dst, int32_t* colsum) {
  if (n < 1) return status::bad_n;
  const int64_t eb = dtype_b_bytes(t), per_panel = panel_elements(t, k) * eb;
  for (int64_t j = 0; j < n; j += panel_width) {
    const int64_t cols = n - j < panel_width ? n - j : panel_width;
    const status s = pack_b(t, (const char*)src + j * eb, k, cols, ld_src, (char*)dst + j / panel_width * per_panel,
                            panel_width, colsum ? colsum + j : nullptr);
    if (s != status::ok) return s;
  }
  return status::ok;
}

}  // namespace brgemm
