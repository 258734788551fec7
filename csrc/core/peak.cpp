// The machine's measured ceiling for `python -m brgemm peak`: register-only loops from
// csrc/kernels on 1..n threads, and a triad for memory bandwidth. Peak is a property of the
// CPU, so the ISA cap is ignored here; an op the CPU or build lacks returns -1.
#include <chrono>
#include <memory>
#include <omp.h>
#include "brgemm/brgemm.h"
#include "../kernels/ukernels.h"

namespace brgemm {

namespace {

using loop_fn = double (*)(int64_t);

loop_fn loop_for(peak_op op) {
  switch (op) {
    case peak_op::fma_f32:
#ifdef BRGEMM_BUILT_AVX512
      if (isa_available(isa::avx512)) return kernels::peak_fma_f32__avx512;
#endif
#ifdef BRGEMM_BUILT_AVX2
      if (isa_available(isa::avx2)) return kernels::peak_fma_f32__avx2;
#endif
      return nullptr;
    case peak_op::dot_u8s8:
#ifdef BRGEMM_BUILT_AVX512_VNNI
      if (isa_available(isa::avx512_vnni)) return kernels::peak_dot_u8s8__avx512vnni;
#endif
      return nullptr;
    case peak_op::dot_s16s16:  // the best int16 instruction this CPU has
#ifdef BRGEMM_BUILT_AVX512_VNNI
      if (isa_available(isa::avx512_vnni)) return kernels::peak_dot_s16s16__avx512vnni;
#endif
#ifdef BRGEMM_BUILT_AVX512
      if (isa_available(isa::avx512)) return kernels::peak_dot_s16s16__avx512;
#endif
#ifdef BRGEMM_BUILT_AVX2
      if (isa_available(isa::avx2)) return kernels::peak_dot_s16s16__avx2;
#endif
      return nullptr;
    case peak_op::dot_bf16:
#ifdef BRGEMM_BUILT_AVX512_BF16
      if (isa_available(isa::avx512_bf16)) return kernels::peak_dot_bf16__avx512bf16;
#endif
      return nullptr;
  }
  return nullptr;
}

double now() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

}  // namespace

double measure_peak(peak_op op, int threads, double seconds) {
  loop_fn loop = loop_for(op);
  if (!loop) return -1.0;
  // Calibrate the iteration count on one thread, then run every thread at once.
  int64_t iters = 1 << 16;
  double t0 = now();
  loop(iters);
  double dt = now() - t0;
  while (dt < 0.02) {
    iters *= 4;
    t0 = now();
    loop(iters);
    dt = now() - t0;
  }
  iters = (int64_t)(iters * (seconds / dt)) + 1;
  double ops = 0.0;
  t0 = now();
#pragma omp parallel num_threads(threads) reduction(+ : ops)
  ops += loop(iters);
  dt = now() - t0;
  return ops / dt * 1e-9;
}

double measure_bandwidth(int threads, int64_t bytes_per_array, int repeats) {
  const int64_t n = bytes_per_array / (int64_t)sizeof(float);
  std::unique_ptr<float[]> a(new float[n]), b(new float[n]), c(new float[n]);
  float *pa = a.get(), *pb = b.get(), *pc = c.get();
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < n; ++i) {  // first touch on the thread that will use the pages
    pa[i] = 0.0f;
    pb[i] = 1.0f;
    pc[i] = 2.0f;
  }
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const float s = 0.5f + (float)r;
    double t0 = now();
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; ++i) pa[i] = pb[i] + s * pc[i];
    double dt = now() - t0;
    if (dt < best) best = dt;
  }
  volatile float sink = pa[n / 2];
  (void)sink;
  return 3.0 * (double)n * sizeof(float) / best * 1e-9;
}

}  // namespace brgemm
