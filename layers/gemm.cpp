// gemm_f32: an ordinary matrix product built on the BRGEMM.
//
// C is cut into work items of (mc rows × bn columns), spread over OpenMP threads. Each item
// walks K in chunks of kc: it copies the kc × bn panel of B into a thread-local buffer
// (contiguous rows, so every row tile of the item reuses it from L2 without the cache-set
// conflicts of a large ldb), then one BRGEMM call accumulates A[mc×kc]·panel into C
// (beta for the first chunk, 1 after). Small M or a narrow B skips the copy: a panel used
// once, or rows already close together, gain nothing from it.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <omp.h>
#include "gemm.h"

namespace brgemm::layers {

namespace {

std::atomic<int64_t> tuned_bn{0}, tuned_kc{0};
constexpr int64_t default_bn = 64, default_kc = 512;

struct free_deleter {
  void operator()(float* p) const { std::free(p); }
};

// A per-thread buffer that only grows: no allocation once warm.
char* thread_buffer(int64_t bytes) {
  static thread_local std::unique_ptr<float, free_deleter> buf;
  static thread_local int64_t cap = 0;
  if (bytes > cap) {
    bytes = (bytes + 63) / 64 * 64;
    buf.reset((float*)std::aligned_alloc(64, (size_t)bytes));
    cap = buf ? bytes : 0;
  }
  return (char*)buf.get();
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Copies `rows` rows of `row_bytes` (row stride src_stride) into dst (row stride dst_stride).
// Rows of a large B lie on different pages, where the hardware prefetcher does not follow, so
// the copy prefetches the rows it will need a few iterations ahead itself.
void pack_panel(char* dst, int64_t dst_stride, const char* src, int64_t src_stride, int64_t rows,
                int64_t row_bytes) {
  constexpr int64_t ahead = 8;
  for (int64_t r = 0; r < rows; ++r) {
    if (r + ahead < rows) {
      const char* next = src + (r + ahead) * src_stride;
      for (int64_t byte = 0; byte < row_bytes; byte += 64) __builtin_prefetch(next + byte);
    }
    std::memcpy(dst + r * dst_stride, src + r * src_stride, (size_t)row_bytes);
  }
}

// Few rows of A (GEMV-like): the product is bound by reading B once, so B must stream in
// order. Each thread owns a range of columns and walks K in short chunks, sweeping every
// column tile of its range per chunk: the rows of B it reads are then consecutive runs of
// its whole range, which the hardware prefetcher follows (a column-panel walk down K would
// jump a whole row of B at every step). C (a few rows) stays in cache between chunks.
status gemm_few_rows(dtype t, int64_t m, int64_t n, int64_t k, const char* a, int64_t lda, const char* b,
                     int64_t ldb, char* c, int64_t ldc, float beta, int threads) {
  constexpr int64_t bn = 64, kc_rows = 8;
  const int64_t kp = dtype_kpack(t), kc = std::max(kp, kc_rows / kp * kp);
  const int64_t ab = dtype_a_bytes(t), bb = dtype_b_bytes(t), cb = dtype_c_bytes(t);
  const int64_t n_tiles = ceil_div(n, bn);
  threads = (int)std::min<int64_t>(threads, n_tiles);
  std::atomic<int> result{(int)status::ok};
  auto run_range = [&](int64_t t0, int64_t t1) {
    // The few kernels this range needs: full or last column tile × full or last K chunk ×
    // first chunk (beta) or later (1).
    const kernel* kr[2][2][2] = {};
    for (int64_t p = 0; p < k; p += kc) {
      const int64_t kcur = std::min(kc, k - p);
      for (int64_t tile = t0; tile < t1; ++tile) {
        const int64_t n0 = tile * bn, nc = std::min(bn, n - n0);
        const kernel*& slot = kr[nc == bn][kcur == kc][p == 0];
        if (!slot) {
          desc d{t, m, nc, kcur, lda, ldb, ldc, batch_kind::stride, p == 0 ? beta : 1.0f};
          if (status s = dispatch(d, &slot); s != status::ok) {
            result = (int)s;
            return;
          }
        }
        batch_ref batch;
        batch.count = 1;
        batch.a = a + p * ab;
        batch.b = b + ((p / kp) * ldb + n0) * kp * bb;
        execute(*slot, batch, c + n0 * cb);
      }
    }
  };
  if (threads <= 1) {
    run_range(0, n_tiles);
  } else {
#pragma omp parallel num_threads(threads)
    {
      const int64_t id = omp_get_thread_num(), nt = omp_get_num_threads();
      run_range(n_tiles * id / nt, n_tiles * (id + 1) / nt);
    }
  }
  return (status)result.load();
}

}  // namespace

void set_gemm_blocking(int64_t bn, int64_t kc) {
  tuned_bn.store(bn > 0 ? bn : 0);
  tuned_kc.store(kc > 0 ? kc : 0);
}

status gemm(dtype t, int64_t m, int64_t n, int64_t k, const void* a_, int64_t lda, const void* b_,
            int64_t ldb, void* c_, int64_t ldc, float beta) {
  const int64_t bn = tuned_bn.load() ? tuned_bn.load() : default_bn;
  const int64_t kp = dtype_kpack(t);
  // K chunks stay whole packed rows (a multiple of KP) so each chunk starts on a packed row.
  const int64_t kc = std::min(k, (tuned_kc.load() ? tuned_kc.load() : default_kc) / kp * kp);
  const char* a = (const char*)a_;
  const char* b = (const char*)b_;
  char* c = (char*)c_;
  const int64_t ab = dtype_a_bytes(t), bb = dtype_b_bytes(t), cb = dtype_c_bytes(t);

  // Probe the row tile of the kernel dispatch will pick, to size row chunks in whole tiles.
  const kernel* probe;
  if (status s = dispatch(desc{t, 1, 1, 1, 1, 1, 1, batch_kind::stride, 0.0f}, &probe); s != status::ok)
    return s;
  const int64_t mr = probe->uk->mr;

  // Threads: a tiny product is not worth waking the team.
  int threads = num_threads();
  const double flops = 2.0 * (double)m * (double)n * (double)k;
  if (flops < 4e6) threads = 1;
  if (m < 4 * mr && n * k >= (int64_t(1) << 16))
    return gemm_few_rows(t, m, n, k, a, lda, b, ldb, c, ldc, beta, threads);

  // Work items: whole columns of C where that gives every thread enough items, else split M.
  const int64_t n_tiles = ceil_div(n, bn);
  int64_t m_chunks = 1;
  while (n_tiles * m_chunks < 4 * threads && ceil_div(m, m_chunks * 2) >= 4 * mr) m_chunks *= 2;
  const int64_t mc = ceil_div(ceil_div(m, m_chunks), mr) * mr;
  m_chunks = ceil_div(m, mc);
  const int64_t items = n_tiles * m_chunks;
  // Packing pays when each panel serves several row tiles and B's rows are far apart
  // (ldb of 1 KiB or more: rows collide in the same cache sets).
  const bool pack = mc >= 4 * mr && ldb * kp * bb >= 1024;
  const int64_t panel_bytes = ceil_div(kc, kp) * bn * kp * bb;

  std::atomic<int> result{(int)status::ok};
  auto run_item = [&](int64_t item, char* panel) {
    const int64_t n0 = (item / m_chunks) * bn, m0 = (item % m_chunks) * mc;
    const int64_t nc = std::min(bn, n - n0), mcur = std::min(mc, m - m0);
    for (int64_t p = 0; p < k; p += kc) {
      const int64_t kcur = std::min(kc, k - p);
      batch_ref batch;
      batch.count = 1;
      batch.a = a + (m0 * lda + p) * ab;
      desc d{t, mcur, nc, kcur, lda, ldb, ldc, batch_kind::stride, p == 0 ? beta : 1.0f};
      const char* bsrc = b + ((p / kp) * ldb + n0) * kp * bb;  // packed row p/KP, column n0
      if (panel) {
        pack_panel(panel, bn * kp * bb, bsrc, ldb * kp * bb, ceil_div(kcur, kp), nc * kp * bb);
        batch.b = panel;
        d.ldb = bn;
      } else {
        batch.b = bsrc;
      }
      const kernel* kr;
      if (status s = dispatch(d, &kr); s != status::ok) {
        result = (int)s;  // cannot happen after the probe; kept so a failure is never silent
        continue;
      }
      execute(*kr, batch, c + (m0 * ldc + n0) * cb);
    }
  };

  if (threads == 1) {  // no parallel region at all: small products are dominated by overheads
    char* panel = pack ? thread_buffer(panel_bytes) : nullptr;
    for (int64_t item = 0; item < items; ++item) run_item(item, panel);
    return (status)result.load();
  }
#pragma omp parallel num_threads(threads)
  {
    char* panel = pack ? thread_buffer(panel_bytes) : nullptr;
#pragma omp for schedule(static)
    for (int64_t item = 0; item < items; ++item) run_item(item, panel);
  }
  return (status)result.load();
}

}  // namespace brgemm::layers
