// The recurrent gates (brgemm.h) one value at a time: the twin itself (rnn_twin.h), the kernel
// for CPUs below AVX2.
#include "../ukernels.h"
#include "../rnn_twin.h"

namespace brgemm::kernels {

void lstm_gates__scalar(const lstm_gate_rows& g) {
  for (int64_t r = 0; r < g.m; ++r) brgemm_rnn::lstm_row(g, r);
}

void gru_gates__scalar(const lstm_gate_rows& g, const float* bhn) {
  for (int64_t r = 0; r < g.m; ++r) brgemm_rnn::gru_row(g, bhn, r);
}

void lstm_gates_backward__scalar(const gate_grad_rows& g) {
  for (int64_t r = 0; r < g.m; ++r) brgemm_rnn::lstm_backward_row(g, r);
}

void gru_gates_backward__scalar(const gate_grad_rows& g) {
  for (int64_t r = 0; r < g.m; ++r) brgemm_rnn::gru_backward_row(g, r);
}

void column_sums__scalar(const float* a, int64_t rows, int64_t ld, int64_t w, double* s) {
  brgemm_rnn::column_sums_from(a, rows, ld, 0, w, s);
}

}  // namespace brgemm::kernels
