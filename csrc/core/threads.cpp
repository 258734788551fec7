// The thread count the layer drivers pass to OpenMP (num_threads clause), kept here rather
// than in OpenMP's per-thread ICVs so that it holds for calls from any Python thread.
#include <atomic>
#include <omp.h>
#include "brgemm/brgemm.h"

namespace brgemm {

namespace {
std::atomic<int> threads{0};  // 0: not set, use OpenMP's default
}

void set_num_threads(int n) { threads.store(n < 1 ? 1 : n); }

int num_threads() {
  int n = threads.load(std::memory_order_relaxed);
  return n > 0 ? n : omp_get_max_threads();
}

}  // namespace brgemm
