// gemm_f32: an ordinary matrix product built on the BRGEMM.
//
// C is cut into work items of (mc rows × bn columns), spread over OpenMP threads. Each item
// walks K in chunks of kc: it copies the kc × bn panel of B into a thread-local buffer
// (contiguous rows, so every row tile of the item reuses it from L2 without the cache-set
// conflicts of a large ldb), then one BRGEMM call accumulates A[mc×kc]·panel into C
// (beta for the first chunk, 1 after). Small M or a narrow B skips the copy: a panel used
// once, or rows already close together, gain nothing from it. B packed in column panels
// (pack_b_panels) is already laid out that way and is never copied (measured on Zen 4, int8
// (256, 4096, 4096): the copy was 8 % of the time on 1 and 2 threads).
//
// The split and every kernel it invokes are a plan per call shape (gemm_plan), kept in a small
// cache looked up once per call before the parallel region: the work items only invoke.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>
#include <omp.h>
#include "gemm.h"
#include "plan.h"

namespace brgemm::layers {

namespace {

std::atomic<int64_t> tuned_bn{0}, tuned_kc{0};
constexpr int64_t default_bn = 64;
// K chunk in bytes of B per column: 512 rows of f32, 1024 of bf16 (a panel of 128 KiB for 64
// columns, within L2) and 4096 of int8 (256 KiB: int8 does 4 times the work per byte, and
// fewer chunks mean fewer trips of the s32 partial sums through L2). Measured on Zen 4, 2
// threads, (256, 4096, 4096): int8 739 → 769 GOP/s, bf16 382 → 399 GFLOP/s against 512 rows.
int64_t default_kc_bytes(dtype t) { return dtype_is_int8(t) ? 4096 : 2048; }
// The rows of K one chunk sums (make_plan's choice; gemm_k_chunk tells callers).
int64_t k_chunk(dtype t, bool few_rows, int64_t k, bool panel_b) {
  const int64_t kp = dtype_kpack(t), bb = dtype_b_bytes(t);
  if (few_rows) return panel_b ? k : std::max(kp, 8 / kp * kp);  // 8 rows of K a chunk
  return std::min(k, (tuned_kc.load() ? tuned_kc.load() : default_kc_bytes(t) / bb) / kp * kp);
}
bool few_rows_of(int64_t m, int64_t n, int64_t k, int64_t mr) { return m < 4 * mr && n * k >= (int64_t(1) << 16); }

struct free_deleter {
  void operator()(char* p) const { std::free(p); }
};

// Per-thread buffers that only grow: no allocation once warm.
enum buffer_slot { panel_slot = 0, acc_slot = 1 };
char* thread_buffer(buffer_slot slot, int64_t bytes) {
  static thread_local std::unique_ptr<char, free_deleter> buf[2];
  static thread_local int64_t cap[2] = {0, 0};
  if (bytes > cap[slot]) {
    bytes = (bytes + 63) / 64 * 64;
    buf[slot].reset((char*)std::aligned_alloc(64, (size_t)bytes));
    cap[slot] = buf[slot] ? bytes : 0;
  }
  return buf[slot].get();
}

// Where one K chunk of a block of C goes. Earlier chunks accumulate without the epilogue into
// C when it holds the accumulator type, else into acc (a per-thread buffer, row stride ld_acc);
// the last chunk runs the epilogue into C, adding what the earlier ones left (beta = 1).
struct chunk_target {
  const epilogue_desc& e;
  const epilogue_args* ep;
  dtype t;
  bool c_is_acc;  // C holds the accumulator type

  // Fills d's beta, epilogue and ldc, and returns the destination of the chunk; *args is
  // the epilogue data for a block of C at (m0, n0) whose partial sums are at acc.
  char* set(desc& d, bool first, bool last, float beta, char* c, int64_t ldc, char* acc, int64_t ld_acc, int64_t m0,
            int64_t n0, epilogue_args* args) const {
    d.beta = first ? beta : 1.0f;
    d.ep = last ? e : epilogue_desc{};
    d.ldc = c_is_acc || last ? ldc : ld_acc;
    if (last) {
      *args = ep ? ep->at(m0, n0, e.scale, t) : epilogue_args{};
      args->acc_in = acc;
      args->ld_acc_in = ld_acc;
    }
    return c_is_acc || last ? c : acc;
  }
};

bool holds_accumulator(dtype t, const epilogue_desc& e) {
  return e.out == out_type::acc || (e.out == out_type::f32 && !dtype_is_integer(t));
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Where the K rows [p, p + kc) of B's columns from n0 on start, in either layout, and the
// leading dimension a kernel reading them there needs.
struct b_source {
  const char* b;
  int64_t ldb, kp, bb;
  int64_t panel_bytes;  // 0: rows layout
  const char* at(int64_t n0, int64_t p) const {
    if (panel_bytes) return b + n0 / panel_width * panel_bytes + (p / kp) * panel_width * kp * bb;
    return b + ((p / kp) * ldb + n0) * kp * bb;
  }
  int64_t ld() const { return panel_bytes ? panel_width : ldb; }
};

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

// The plan of one call shape: the work split, and every kernel its loops invoke, dispatched
// once here (dispatch() takes the kernel cache's lock: not something to do per work item).
// Kernels are indexed by what makes two descriptors differ: full or edge rows, columns and K
// chunk, first chunk (beta) or not, last chunk (epilogue) or not.
struct gemm_plan {
  bool few_rows;
  int threads;
  int64_t bn, kc, mc, m_chunks, n_tiles, items;
  bool pack;                 // copy B's panels into a per-thread buffer
  int64_t panel_bytes, acc_bytes;
  int64_t ld_acc;            // few rows: row stride of a range's partial sums
  std::vector<int64_t> first;  // thread t runs items [first[t], first[t + 1])
  const kernel* kr[2][2][2][2][2] = {};  // [full rows][full columns][full K chunk][first][last]
  const kernel*& slot(bool m_full, bool n_full, bool k_full, bool first, bool last) {
    return kr[m_full][n_full][k_full][first][last];
  }
  const kernel* at(bool m_full, bool n_full, bool k_full, bool first, bool last) const {
    return kr[m_full][n_full][k_full][first][last];
  }
};

// Everything the plan depends on, bytewise comparable (plan_cache): the shape, the epilogue's
// stages, the layout, the threads, the tuning and the active ISA.
struct gemm_key {
  int64_t m, n, k, lda, ldb, ldc, tuned_bn, tuned_kc, panel_rows;
  int32_t t, layout, threads, level, out, act, bias, scale, row_offset, col_offset;
  uint32_t beta;
};

// Few rows of A (GEMV-like): the product is bound by reading B once, so B must stream in
// order. Each thread owns a range of columns and walks K in short chunks, sweeping every
// column tile of its range per chunk: the rows of B it reads are then consecutive runs of
// its whole range, which the hardware prefetcher follows (a column-panel walk down K would
// jump a whole row of B at every step). C (a few rows) stays in cache between chunks.
// B in column panels is read in order by a walk down each panel instead, in one K chunk.
// The ranges are the plan's: range r of plan.threads covers tiles [n_tiles·r/T, n_tiles·(r+1)/T).
void gemm_few_rows(const gemm_plan& pl, dtype t, int64_t m, int64_t n, int64_t k, const char* a, int64_t lda,
                   const b_source& b, char* c, int64_t ldc, float beta, const chunk_target& target) {
  const int64_t bn = pl.bn, kc = pl.kc, n_tiles = pl.n_tiles;
  const int64_t ab = dtype_a_bytes(t), cb = dtype_c_bytes(t);
  const int64_t ob = out_type_bytes(t, target.e.out);
  auto run_range = [&](int64_t r, char* acc) {
    const int64_t t0 = n_tiles * r / pl.threads, t1 = n_tiles * (r + 1) / pl.threads;
    for (int64_t p = 0; p < k; p += kc) {
      const int64_t kcur = std::min(kc, k - p);
      const bool first = p == 0, last = p + kc >= k;
      for (int64_t tile = t0; tile < t1; ++tile) {
        const int64_t n0 = tile * bn, nc = std::min(bn, n - n0);
        desc d{t, m, nc, kcur, lda, b.ld(), ldc, batch_kind::stride};
        epilogue_args args;
        char* acc_tile = acc ? acc + (tile - t0) * bn * cb : nullptr;
        char* dst = target.set(d, first, last, beta, c + n0 * ob, ldc, acc_tile, pl.ld_acc, 0, n0, &args);
        batch_ref batch;
        batch.count = 1;
        batch.a = a + p * ab;
        batch.b = b.at(n0, p);
        execute(*pl.at(true, nc == bn, kcur == kc, first, last), batch, dst, last ? &args : nullptr);
      }
    }
  };
  if (pl.threads <= 1) {
    run_range(0, pl.acc_bytes ? thread_buffer(acc_slot, pl.acc_bytes) : nullptr);
    return;
  }
#pragma omp parallel num_threads(pl.threads)
  {
    // Partial sums of the range's columns when C does not hold the accumulator type.
    char* acc = pl.acc_bytes ? thread_buffer(acc_slot, pl.acc_bytes) : nullptr;
    const int64_t id = omp_get_thread_num(), nt = omp_get_num_threads();
    for (int64_t r = id; r < pl.threads; r += nt) run_range(r, acc);
  }
}

// Builds the plan of one call: the split of gemm() below and its kernels.
status make_plan(gemm_plan& pl, dtype t, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc,
                 float beta, const chunk_target& target, const b_source& b, bool panels, int threads) {
  const int64_t kp = dtype_kpack(t), bb = dtype_b_bytes(t), cb = dtype_c_bytes(t);
  pl.threads = threads;
  // The row tile of the kernel dispatch will pick, to size row chunks in whole tiles.
  const kernel* probe;
  if (status s = dispatch(desc{t, 1, 1, 1, 1, 1, 1, batch_kind::stride, 0.0f}, &probe); s != status::ok) return s;
  const int64_t mr = probe->uk->mr;
  // Dispatches the kernel of one chunk of one block unless its slot has it.
  auto need = [&](int64_t mcur, bool m_full, int64_t nc, int64_t p, int64_t ldb_used, int64_t ld_acc) -> status {
    const int64_t kcur = std::min(pl.kc, k - p);
    const bool first = p == 0, last = p + pl.kc >= k;
    const kernel*& slot = pl.slot(m_full, nc == pl.bn, kcur == pl.kc, first, last);
    if (slot) return status::ok;
    desc d{t, mcur, nc, kcur, lda, ldb_used, ldc, batch_kind::stride};
    epilogue_args unused;
    target.set(d, first, last, beta, nullptr, ldc, nullptr, ld_acc, 0, 0, &unused);
    return dispatch(d, &slot);
  };

  pl.few_rows = few_rows_of(m, n, k, mr);
  if (pl.few_rows) {
    pl.bn = panel_width;
    pl.kc = k_chunk(t, true, k, b.panel_bytes != 0);
    pl.n_tiles = ceil_div(n, pl.bn);
    pl.threads = (int)std::min<int64_t>(threads, pl.n_tiles);
    // Every range's partial sums with the widest range's row stride, so that one kernel
    // serves every range.
    pl.ld_acc = ceil_div(pl.n_tiles, pl.threads) * pl.bn;
    pl.acc_bytes = target.c_is_acc || k <= pl.kc ? 0 : m * pl.ld_acc * cb;
    for (int64_t p = 0; p < k; p += pl.kc)
      for (int64_t nc : {std::min(pl.bn, n), n - (pl.n_tiles - 1) * pl.bn})
        if (status s = need(m, true, nc, p, b.ld(), pl.ld_acc); s != status::ok) return s;
  } else {
    pl.bn = panels ? panel_width : tuned_bn.load() ? tuned_bn.load() : default_bn;
    // K chunks stay whole packed rows (a multiple of KP) so each chunk starts on a packed row.
    pl.kc = k_chunk(t, false, k, false);
    // Work items: whole columns of C where that gives every thread enough items, else split M.
    pl.n_tiles = ceil_div(n, pl.bn);
    int64_t m_chunks = 1;
    while (pl.n_tiles * m_chunks < 4 * threads && ceil_div(m, m_chunks * 2) >= 4 * mr) m_chunks *= 2;
    pl.mc = ceil_div(ceil_div(m, m_chunks), mr) * mr;
    pl.m_chunks = ceil_div(m, pl.mc);
    pl.items = pl.n_tiles * pl.m_chunks;
    // Each thread a run of items of about equal work (rows × columns), not of equal count: the
    // last column tile is often narrow, and 650 columns in 11 tiles of 64 split by count gave
    // one of 2 threads 6 tiles (the LSTM 650 backward's products ran 40 % longer on one thread).
    auto work = [&](int64_t item) {
      return double(std::min(pl.bn, n - item / pl.m_chunks * pl.bn) * std::min(pl.mc, m - item % pl.m_chunks * pl.mc));
    };
    double total = 0.0, done = 0.0;
    for (int64_t item = 0; item < pl.items; ++item) total += work(item);
    pl.first.assign((size_t)threads + 1, pl.items);
    pl.first[0] = 0;
    int t = 1;
    for (int64_t item = 0; item < pl.items; ++item) {
      while (t < threads && done + work(item) / 2 >= total * t / threads) pl.first[(size_t)t++] = item;
      done += work(item);
    }
    // Packing pays when each panel serves several row tiles and B's rows are far apart
    // (ldb of 1 KiB or more: rows collide in the same cache sets).
    pl.pack = !panels && pl.mc >= 4 * mr && ldb * kp * bb >= 1024;
    pl.panel_bytes = ceil_div(pl.kc, kp) * pl.bn * kp * bb;
    // Partial sums of one item when C does not hold the accumulator type.
    pl.acc_bytes = target.c_is_acc || k <= pl.kc ? 0 : pl.mc * pl.bn * cb;
    pl.ld_acc = pl.bn;
    const int64_t ldb_used = pl.pack ? pl.bn : b.ld();
    for (int64_t m0 : {int64_t(0), (pl.m_chunks - 1) * pl.mc})
      for (int64_t nc : {std::min(pl.bn, n), n - (pl.n_tiles - 1) * pl.bn})
        for (int64_t p = 0; p < k; p += pl.kc) {
          const int64_t mcur = std::min(pl.mc, m - m0);
          if (status s = need(mcur, mcur == pl.mc, nc, p, ldb_used, pl.ld_acc); s != status::ok) return s;
        }
  }
  // The per-thread buffers, grown here once rather than by the first work items.
  const int64_t panel = !pl.few_rows && pl.pack ? pl.panel_bytes : 0, acc = pl.acc_bytes;
  if (panel || acc) {
#pragma omp parallel num_threads(pl.threads)
    {
      if (panel) thread_buffer(panel_slot, panel);
      if (acc) thread_buffer(acc_slot, acc);
    }
  }
  return status::ok;
}

// The plans of recent call shapes (a network calls gemm with a handful), shared by every
// caller: found once per call, before any parallel region.
plan_cache<gemm_key, gemm_plan, 32> plans;

}  // namespace

void set_gemm_blocking(int64_t bn, int64_t kc) {
  tuned_bn.store(bn > 0 ? bn : 0);
  tuned_kc.store(kc > 0 ? kc : 0);
}

status gemm(dtype t, int64_t m, int64_t n, int64_t k, const void* a_, int64_t lda, const void* b_,
            int64_t ldb, void* c_, int64_t ldc, float beta, const epilogue_desc& e, const epilogue_args* ep,
            b_layout layout, int64_t panel_rows) {
  if (t == dtype::s8s8) {
    // int8 A is shifted to uint8 once here (a XOR 0x80 = a + 128), rather than at every
    // broadcast inside the s8s8 kernels (measured: 6 % of a (64, 1024, 1024) product); the
    // u8s8 kernels then give the same Σ (a+128)·b, which the epilogue's column offsets correct.
    static thread_local std::vector<uint8_t> shifted;
    shifted.resize((size_t)(m * k));
    uint8_t* dst = shifted.data();  // a local pointer: through the thread_local, every byte would
                                    // reload it (bytes alias everything), and not vectorize
    for (int64_t i = 0; i < m; ++i) {
      const uint8_t* row = (const uint8_t*)a_ + i * lda;
      uint8_t* out = dst + i * k;
      int64_t j = 0;
      for (; j + 8 <= k; j += 8) {  // 8 bytes a step (the byte loop measured 0.4 ns a byte)
        uint64_t w;
        std::memcpy(&w, row + j, 8);
        w ^= 0x8080808080808080ull;
        std::memcpy(out + j, &w, 8);
      }
      for (; j < k; ++j) out[j] = (uint8_t)(row[j] ^ 0x80u);
    }
    return gemm(dtype::u8s8, m, n, k, dst, k, b_, ldb, c_, ldc, beta, e, ep, layout, panel_rows);
  }
  const bool panels = layout == b_layout::panels;
  const int64_t kp = dtype_kpack(t);
  const char* a = (const char*)a_;
  char* c = (char*)c_;
  const int64_t ab = dtype_a_bytes(t), bb = dtype_b_bytes(t);
  const b_source b{(const char*)b_, ldb, kp, bb, panels ? panel_elements(t, std::max(k, panel_rows)) * bb : 0};
  const int64_t ob = out_type_bytes(t, e.out);
  const chunk_target target{e, ep, t, holds_accumulator(t, e)};

  // Threads: a tiny product is not worth waking the team.
  int threads = num_threads();
  const double flops = 2.0 * (double)m * (double)n * (double)k;
  if (flops < 4e6) threads = 1;

  gemm_key key = zeroed<gemm_key>();
  key.m = m, key.n = n, key.k = k, key.lda = lda, key.ldb = ldb, key.ldc = ldc;
  key.tuned_bn = tuned_bn.load(), key.tuned_kc = tuned_kc.load();
  key.t = (int32_t)t, key.layout = (int32_t)layout, key.threads = threads, key.level = (int32_t)active_isa();
  key.out = (int32_t)e.out, key.act = (int32_t)e.act, key.bias = e.bias, key.scale = (int32_t)e.scale;
  key.row_offset = e.row_offset, key.col_offset = e.col_offset, key.panel_rows = panel_rows;
  std::memcpy(&key.beta, &beta, sizeof beta);
  std::shared_ptr<const gemm_plan> plan;
  if (status s = plans.get(key, &plan, [&](gemm_plan& pl) {
        return make_plan(pl, t, m, n, k, lda, ldb, ldc, beta, target, b, panels, threads);
      });
      s != status::ok)
    return s;
  const gemm_plan& pl = *plan;
  if (pl.few_rows) {
    gemm_few_rows(pl, t, m, n, k, a, lda, b, c, ldc, beta, target);
    return status::ok;
  }

  const int64_t bn = pl.bn, kc = pl.kc, mc = pl.mc, m_chunks = pl.m_chunks;
  auto run_item = [&](int64_t item, char* panel, char* acc) {
    const int64_t n0 = (item / m_chunks) * bn, m0 = (item % m_chunks) * mc;
    const int64_t nc = std::min(bn, n - n0), mcur = std::min(mc, m - m0);
    for (int64_t p = 0; p < k; p += kc) {
      const int64_t kcur = std::min(kc, k - p);
      const bool first = p == 0, last = p + kc >= k;
      batch_ref batch;
      batch.count = 1;
      batch.a = a + (m0 * lda + p) * ab;
      desc d{t, mcur, nc, kcur, lda, b.ld(), ldc, batch_kind::stride};
      epilogue_args args;
      char* dst = target.set(d, first, last, beta, c + (m0 * ldc + n0) * ob, ldc, acc, bn, m0, n0, &args);
      const char* bsrc = b.at(n0, p);
      if (panel) {
        pack_panel(panel, bn * kp * bb, bsrc, ldb * kp * bb, ceil_div(kcur, kp), nc * kp * bb);
        batch.b = panel;
      } else {
        batch.b = bsrc;
      }
      execute(*pl.at(mcur == mc, nc == bn, kcur == kc, first, last), batch, dst, d.ep.any() ? &args : nullptr);
    }
  };

  if (pl.threads == 1) {  // no parallel region at all: small products are dominated by overheads
    char* panel = pl.pack ? thread_buffer(panel_slot, pl.panel_bytes) : nullptr;
    char* acc = pl.acc_bytes ? thread_buffer(acc_slot, pl.acc_bytes) : nullptr;
    for (int64_t item = 0; item < pl.items; ++item) run_item(item, panel, acc);
    return status::ok;
  }
#pragma omp parallel num_threads(pl.threads)
  {
    char* panel = pl.pack ? thread_buffer(panel_slot, pl.panel_bytes) : nullptr;
    char* acc = pl.acc_bytes ? thread_buffer(acc_slot, pl.acc_bytes) : nullptr;
    if (omp_get_num_threads() == pl.threads) {
      const int t = omp_get_thread_num();
      for (int64_t item = pl.first[(size_t)t]; item < pl.first[(size_t)t + 1]; ++item) run_item(item, panel, acc);
    } else {  // the runtime gave fewer threads than planned (nested parallelism): any split
#pragma omp for schedule(static)
      for (int64_t item = 0; item < pl.items; ++item) run_item(item, panel, acc);
    }
  }
  return status::ok;
}

status gemm_k_chunk(dtype t, int64_t m, int64_t n, int64_t k, int64_t* kc) {
  const kernel* probe;
  if (status s = dispatch(desc{t, 1, 1, 1, 1, 1, 1, batch_kind::stride, 0.0f}, &probe); s != status::ok) return s;
  *kc = k_chunk(t, few_rows_of(m, n, k, probe->uk->mr), k, false);
  return status::ok;
}

}  // namespace brgemm::layers
