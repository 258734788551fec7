// The transposes for CPUs below AVX2 (and the 8-bit one on every ISA): the twin itself.
#include "../ukernels.h"
#include "../transpose_twin.h"

namespace brgemm::kernels {

void transpose_b32__scalar(const uint32_t* src, int64_t rows, int64_t cols, int64_t ld_src, uint32_t* dst,
                           int64_t ld_dst) {
  brgemm_transpose_twin(src, rows, cols, ld_src, dst, ld_dst);
}

void transpose_b16__scalar(const uint16_t* src, int64_t rows, int64_t cols, int64_t ld_src, uint16_t* dst,
                           int64_t ld_dst) {
  brgemm_transpose_twin(src, rows, cols, ld_src, dst, ld_dst);
}

void interleave_pairs_b16__scalar(const uint16_t* src, int64_t rows, int64_t cols, uint16_t* dst) {
  brgemm_interleave_pairs_twin(src, rows, cols, 0, dst);
}

void transpose_b8__scalar(const uint8_t* src, int64_t rows, int64_t cols, int64_t ld_src, uint8_t* dst,
                          int64_t ld_dst) {
  brgemm_transpose_twin(src, rows, cols, ld_src, dst, ld_dst);
}

}  // namespace brgemm::kernels
