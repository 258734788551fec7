// csrc/core/zero_point.cpp: the int8 zero-point offsets of the epilogue (brgemm.h, "int8 zero
// points"), the one implementation the bindings and the layer drivers use. Plain loops: they
// run once per call over m + n sums, beside a product of m·n·k.
#include "brgemm/brgemm.h"

namespace brgemm {

// Every sum and product is unsigned 32-bit: it wraps modulo 2^32 without overflowing, which is
// exactly what the s32 accumulator's own additions do.

int32_t zero_point_a_shifted(dtype t, int32_t a_zero) { return t == dtype::s8s8 ? a_zero + 128 : a_zero; }

bool zero_points_need_col_offset(dtype t, zero_points z) {
  return zero_point_a_shifted(t, z.a) != 0 || (z.a != 0 && z.b != 0);
}

void zero_point_col_offsets(dtype t, zero_points z, int64_t k, const int32_t* const* colsum, int64_t count, int64_t n,
                            int32_t* col) {
  const uint32_t za = (uint32_t)zero_point_a_shifted(t, z.a);
  const uint32_t both = (uint32_t)(uint64_t)k * (uint32_t)z.a * (uint32_t)z.b;
  for (int64_t j = 0; j < n; ++j) {
    uint32_t sum = 0;
    if (za != 0)
      for (int64_t r = 0; r < count; ++r) sum += (uint32_t)colsum[r][j];
    col[j] = (int32_t)(both - za * sum);
  }
}

void zero_point_row_offsets(dtype t, zero_points z, const batch_ref& batch, batch_kind kind, int64_t m, int64_t k,
                            int64_t lda, int32_t* row) {
  for (int64_t i = 0; i < m; ++i) row[i] = 0;
  if (z.b == 0) return;
  // Σ of each row of A over the batch, block after block, as the caller's values (u8, or s8).
  for (int64_t b = 0; b < batch.count; ++b) {
    const char* a = kind == batch_kind::stride   ? (const char*)batch.a + b * batch.stride_a
                    : kind == batch_kind::offset ? (const char*)batch.a + batch.offs_a[b]
                                                 : (const char*)batch.addr_a[b];
    for (int64_t i = 0; i < m; ++i) {
      uint32_t s = (uint32_t)row[i];
      if (t == dtype::s8s8)
        for (int64_t c = 0; c < k; ++c) s += (uint32_t)(int32_t)((const int8_t*)a)[i * lda + c];
      else
        for (int64_t c = 0; c < k; ++c) s += ((const uint8_t*)a)[i * lda + c];
      row[i] = (int32_t)s;
    }
  }
  for (int64_t i = 0; i < m; ++i) row[i] = (int32_t)(0u - (uint32_t)z.b * (uint32_t)row[i]);
}

}  // namespace brgemm
