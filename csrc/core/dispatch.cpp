// The dispatch table (reference first, built from the .inc lists), the thread-safe kernel
// cache, and execute(): the tile loop that calls a ukernel on every MR × NR tile of C, and the
// epilogue on each tile while it is in L1.
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <unordered_map>
#include "brgemm/brgemm.h"
#include "../kernels/ukernels.h"

namespace brgemm {

namespace {

// An ISA left out of the build contributes no table entries.
#define BRGEMM_IF_BUILT_scalar(...) __VA_ARGS__
#ifdef BRGEMM_BUILT_AVX2
#define BRGEMM_IF_BUILT_avx2(...) __VA_ARGS__
#else
#define BRGEMM_IF_BUILT_avx2(...)
#endif
#ifdef BRGEMM_BUILT_AVX512
#define BRGEMM_IF_BUILT_avx512(...) __VA_ARGS__
#else
#define BRGEMM_IF_BUILT_avx512(...)
#endif
#ifdef BRGEMM_BUILT_AVX512_VNNI
#define BRGEMM_IF_BUILT_avx512_vnni(...) __VA_ARGS__
#else
#define BRGEMM_IF_BUILT_avx512_vnni(...)
#endif
#ifdef BRGEMM_BUILT_AVX512_BF16
#define BRGEMM_IF_BUILT_avx512_bf16(...) __VA_ARGS__
#else
#define BRGEMM_IF_BUILT_avx512_bf16(...)
#endif

#define BRGEMM_UKERNEL_F32(MR, NR, ISA)                                              \
  BRGEMM_IF_BUILT_##ISA({"ukernel_f32_" #MR "x" #NR "__" #ISA, dtype::f32, isa::ISA, \
                         MR, NR, 1, kernels::ukernel_f32_##MR##x##NR##__##ISA}, )
#define BRGEMM_UKERNEL_BF16(MR, NR, SUFFIX, LEVEL)                                                   \
  BRGEMM_IF_BUILT_##LEVEL({"ukernel_bf16_f32_" #MR "x" #NR "c2__" #SUFFIX, dtype::bf16, isa::LEVEL, \
                           MR, NR, 2, kernels::ukernel_bf16_f32_##MR##x##NR##c2__##SUFFIX}, )
#define BRGEMM_UKERNEL_U8S8(MR, NR, SUFFIX, LEVEL)                                                     \
  BRGEMM_IF_BUILT_##LEVEL({"ukernel_u8s8_s32_" #MR "x" #NR "c4__" #SUFFIX, dtype::u8s8, isa::LEVEL,   \
                           MR, NR, 4, kernels::ukernel_u8s8_s32_##MR##x##NR##c4__##SUFFIX},            \
                          {"ukernel_s8s8_s32_" #MR "x" #NR "c4__" #SUFFIX, dtype::s8s8, isa::LEVEL,   \
                           MR, NR, 4, kernels::ukernel_s8s8_s32_##MR##x##NR##c4__##SUFFIX}, )
#define BRGEMM_UKERNEL_F32F16(MR, NR, ISA)                                                 \
  BRGEMM_IF_BUILT_##ISA({"ukernel_f32f16_" #MR "x" #NR "__" #ISA, dtype::f32f16, isa::ISA, \
                         MR, NR, 1, kernels::ukernel_f32f16_##MR##x##NR##__##ISA}, )
#define BRGEMM_UKERNEL_S16S16(MR, NR, SUFFIX, LEVEL)                                                        \
  BRGEMM_IF_BUILT_##LEVEL({"ukernel_s16s16_s32_" #MR "x" #NR "c2__" #SUFFIX, dtype::s16s16, isa::LEVEL, \
                           MR, NR, 2, kernels::ukernel_s16s16_s32_##MR##x##NR##c2__##SUFFIX}, )
#define BRGEMM_UKERNEL_S16S16F32(MR, NR, SUFFIX, LEVEL)                                                     \
  BRGEMM_IF_BUILT_##LEVEL({"ukernel_s16s16_f32_" #MR "x" #NR "c2__" #SUFFIX, dtype::s16s16f32, isa::LEVEL, \
                           MR, NR, 2, kernels::ukernel_s16s16_f32_##MR##x##NR##c2__##SUFFIX}, )
const ukernel_info table[] = {
#include "../kernels/ukernels_f32.inc"
#include "../kernels/ukernels_bf16.inc"
#include "../kernels/ukernels_u8s8.inc"
#include "../kernels/ukernels_f32f16.inc"
#include "../kernels/ukernels_s16s16.inc"
#include "../kernels/ukernels_s16s16f32.inc"
};
#undef BRGEMM_UKERNEL_S16S16
#undef BRGEMM_UKERNEL_S16S16F32
#undef BRGEMM_UKERNEL_F32F16
#undef BRGEMM_UKERNEL_F32
#undef BRGEMM_UKERNEL_BF16
#undef BRGEMM_UKERNEL_U8S8
constexpr int table_size = sizeof(table) / sizeof(table[0]);

struct key {
  desc d;
  const ukernel_info* uk;
  epilogue_fn ep;  // follows the active ISA, which may change between two dispatches
  bool operator==(const key& o) const {
    const epilogue_desc &e = d.ep, &f = o.d.ep;
    return uk == o.uk && ep == o.ep && d.type == o.d.type && d.m == o.d.m && d.n == o.d.n && d.k == o.d.k &&
           d.lda == o.d.lda && d.ldb == o.d.ldb && d.ldc == o.d.ldc && d.batch == o.d.batch &&
           std::memcmp(&d.beta, &o.d.beta, sizeof(float)) == 0 && e.out == f.out && e.act == f.act &&
           e.bias == f.bias && e.scale == f.scale && e.row_offset == f.row_offset && e.col_offset == f.col_offset &&
           e.add == f.add;
  }
};
struct key_hash {
  size_t operator()(const key& k) const {
    uint32_t beta;
    std::memcpy(&beta, &k.d.beta, sizeof beta);
    const uint64_t parts[] = {(uint64_t)k.d.type, (uint64_t)k.d.m,   (uint64_t)k.d.n,
                              (uint64_t)k.d.k,    (uint64_t)k.d.lda, (uint64_t)k.d.ldb,
                              (uint64_t)k.d.ldc,  (uint64_t)k.d.batch, beta,
                              (uint64_t)(uintptr_t)k.uk,
                              (uint64_t)k.d.ep.out | (uint64_t)k.d.ep.act << 8 | (uint64_t)k.d.ep.bias << 16 |
                                  (uint64_t)k.d.ep.scale << 17 | (uint64_t)k.d.ep.row_offset << 20 |
                                  (uint64_t)k.d.ep.col_offset << 21 | (uint64_t)k.d.ep.add << 22};
    uint64_t h = 1469598103934665603ull;
    for (uint64_t p : parts) h = (h ^ p) * 1099511628211ull;
    return (size_t)h;
  }
};

std::mutex cache_mutex;
std::unordered_map<key, std::unique_ptr<kernel>, key_hash> cache;

bool fits(int64_t rows, int64_t ld) {  // rows·ld stays far from int64 overflow
  int64_t r;
  return !__builtin_mul_overflow(rows, ld, &r) && r < (int64_t(1) << 60);
}

status validate(const desc& d) {
  if ((int)d.type < 0 || (int)d.type >= dtype_count) return status::bad_dtype;
  if (d.batch != batch_kind::stride && d.batch != batch_kind::offset &&
      d.batch != batch_kind::address)
    return status::bad_batch_kind;
  if (d.m < 1 || !fits(d.m, 1)) return status::bad_m;
  if (d.n < 1 || !fits(d.n, 1)) return status::bad_n;
  if (d.k < 1 || !fits(d.k, 1)) return status::bad_k;
  if (d.lda < (d.overlap_a ? 1 : d.k) || !fits(d.m, d.lda)) return status::bad_lda;
  if (d.ldb < d.n || !fits(d.k + 3, d.ldb * dtype_kpack(d.type))) return status::bad_ldb;
  if (d.ldc < d.n || !fits(d.m, d.ldc)) return status::bad_ldc;
  if (!std::isfinite(d.beta)) return status::bad_beta;
  if (dtype_is_integer(d.type) && d.beta != 0.0f && d.beta != 1.0f) return status::bad_beta;
  const epilogue_desc& e = d.ep;
  if ((int)e.out < 0 || (int)e.out > (int)out_type::s8 || (int)e.act < 0 || (int)e.act >= activation_count ||
      (int)e.scale < 0 || (int)e.scale > (int)scale_kind::column)
    return status::bad_epilogue;
  if (dtype_is_integer(d.type)) {
    // The s32 output takes integer stages only.
    if (e.out == out_type::acc && (e.scale != scale_kind::none || e.bias || e.act != activation::none))
      return status::bad_epilogue;
  } else if (e.scale != scale_kind::none || e.row_offset || e.col_offset) {
    return status::bad_epilogue;  // scales and offsets belong to the integer pipeline
  }
  if (e.add && e.out != out_type::f32 && e.out != out_type::bf16 && e.out != out_type::u8 &&
      !(e.out == out_type::acc && !dtype_is_integer(d.type)))
    return status::bad_epilogue;  // the added tensor has the output's type (f32, bf16 or u8)
  return status::ok;
}

// The active ISA's epilogue (kernels of the VNNI and BF16 levels use AVX-512's).
epilogue_fn pick_epilogue(isa level) {
#ifdef BRGEMM_BUILT_AVX512
  if ((int)level >= (int)isa::avx512) return kernels::epilogue__avx512;
#endif
#ifdef BRGEMM_BUILT_AVX2
  if ((int)level >= (int)isa::avx2) return kernels::epilogue__avx2;
#endif
  (void)level;
  return kernels::epilogue__scalar;
}

}  // namespace

const char* status_message(status s) {
  switch (s) {
    case status::ok: return "ok";
    case status::bad_m: return "m must be at least 1 and below 2^60";
    case status::bad_n: return "n must be at least 1 and below 2^60";
    case status::bad_k: return "k must be at least 1 and below 2^60";
    case status::bad_lda: return "lda must be at least k (and lda*m must not overflow)";
    case status::bad_ldb: return "ldb must be at least n (and ldb*k must not overflow)";
    case status::bad_ldc: return "ldc must be at least n (and ldc*m must not overflow)";
    case status::bad_beta: return "beta must be finite (and 0 or 1 for int8 and int16)";
    case status::bad_epilogue:
      return "this epilogue does not fit the dtype (scales and offsets are for int8 and int16; an int32 output "
             "takes offsets only)";
    case status::bad_dtype: return "unsupported dtype";
    case status::bad_batch_kind: return "batch must be 'stride', 'offset' or 'address'";
    case status::bad_ukernel: return "no such microkernel for this dtype";
    case status::isa_not_built: return "this ISA was left out of the build";
    case status::isa_not_supported: return "this CPU does not support the ISA (or it is above the active cap)";
  }
  return "unknown status";
}

int ukernel_count() { return table_size; }
const ukernel_info* ukernel_at(int i) { return i >= 0 && i < table_size ? &table[i] : nullptr; }
const ukernel_info* find_ukernel(const char* name) {
  for (const ukernel_info& u : table)
    if (std::strcmp(u.name, name) == 0) return &u;
  return nullptr;
}

status dispatch(const desc& d, const kernel** out, const char* ukernel_name) {
  *out = nullptr;
  if (status s = validate(d); s != status::ok) return s;
  const ukernel_info* uk = nullptr;
  const isa active = active_isa();
  if (ukernel_name) {
    uk = find_ukernel(ukernel_name);
    if (!uk || uk->type != d.type) return status::bad_ukernel;
    if ((int)uk->level > (int)active) return status::isa_not_supported;
  } else {
    for (const ukernel_info& u : table)  // the first entry of the highest usable level
      if (u.type == d.type && (int)u.level <= (int)active && (!uk || u.level > uk->level)) uk = &u;
    if (!uk) return status::bad_dtype;
  }
  const epilogue_fn ep = d.ep.any() ? pick_epilogue(active) : nullptr;
  // The zmm skeleton (every AVX-512 ukernel) finishes whole-width tiles in registers; a short
  // reduction then skips the scratch tile's store and reload (K = 64: 13 % of an f32 product).
  const activation a = d.ep.act;
  const bool in_registers = ep && (int)uk->level >= (int)isa::avx512 && d.n % uk->nr == 0 &&
                            (a == activation::none || a == activation::relu || a == activation::relu6) &&
                            !(dtype_is_integer(d.type) && d.ep.out == out_type::acc);
  std::lock_guard<std::mutex> lock(cache_mutex);
  std::unique_ptr<kernel>& slot = cache[key{d, uk, ep}];
  if (!slot) slot.reset(new kernel{d, uk, ep, in_registers});
  *out = slot.get();
  return status::ok;
}

namespace {

// The epilogue's view of the tile at (m0, n0): its data offset to the tile, and prev (for beta)
// read from C when C holds the accumulator type, else from acc_in.
epilogue_tile tile_view(const kernel& kr, const epilogue_args& ep, epilogue_args& shifted, int64_t m0, int64_t n0,
                        void* c, int64_t ldc) {
  const desc& d = kr.d;
  const int64_t ob = out_type_bytes(d.type, d.ep.out);
  shifted = ep.at(m0, n0, d.ep.scale, d.type, ob);
  epilogue_tile t;
  t.out = (char*)c + (m0 * ldc + n0) * ob;
  t.ldc = ldc;
  t.beta = d.beta;
  const bool c_is_acc = d.ep.out == out_type::acc || (d.ep.out == out_type::f32 && !dtype_is_integer(d.type));
  if (d.beta == 0.0f) {
    t.prev = nullptr;
    t.ld_prev = 0;
  } else if (c_is_acc) {
    t.prev = t.out;
    t.ld_prev = ldc;
  } else {
    t.prev = shifted.acc_in;
    t.ld_prev = ep.ld_acc_in;
  }
  t.ep = &shifted;
  return t;
}

// Prefetches `rows` rows of `bytes` each, `ld` bytes apart (for writing when `write`).
inline void fetch_rows(const void* p, int64_t rows, int64_t bytes, int64_t ld, int write) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < bytes; b += 64) {
      const char* at = (const char*)p + r * ld + b;
      if (write) __builtin_prefetch(at, 1, 3);
      else __builtin_prefetch(at, 0, 3);
    }
}

// Sets p's tile (m, n, a_off, b_off) for every tile of C in turn and calls body(m0, n0). N
// outside, M inside: one NR-wide panel of every B_i is reused by all row tiles. The rows are
// shared out evenly, ceil(M / MR) tiles of near-equal height: a short tile has too few
// accumulators to hide the FMA latency (7 rows as 6 + 1 ran at 90 GFLOP/s, as 4 + 3 at 104).
template <typename Body>
inline void for_each_tile(const kernel& kr, ukernel_args& p, Body body) {
  const desc& d = kr.d;
  const ukernel_info& uk = *kr.uk;
  const int64_t tiles = (d.m + uk.mr - 1) / uk.mr, rows = d.m / tiles, taller = d.m % tiles;
  for (int64_t n0 = 0; n0 < d.n; n0 += uk.nr) {
    p.n = (int)(d.n - n0 < uk.nr ? d.n - n0 : uk.nr);
    for (int64_t t = 0, m0 = 0; t < tiles; m0 += p.m, ++t) {
      p.m = (int)(rows + (t < taller));
      p.a_off = m0 * d.lda;
      p.b_off = n0 * uk.kp;
      body(m0, n0);
    }
  }
}

}  // namespace

void execute(const kernel& kr, const batch_ref& batch, void* c, const epilogue_args* ep) {
  const desc& d = kr.d;
  const ukernel_info& uk = *kr.uk;
  const int64_t elem = dtype_c_bytes(d.type);
  ukernel_args p;
  p.batch = &batch;
  p.kind = d.batch;
  p.k = d.k;
  p.lda = d.lda;
  p.ldb = d.ldb;
  p.ldc = d.ldc;
  p.beta = d.beta;
  if (kr.in_registers) {
    const epilogue_args none;
    epilogue_args shifted;
    epilogue_tile t;
    p.beta = 0.0f;
    p.ed = &d.ep;
    p.et = &t;
    const int64_t ob = out_type_bytes(d.type, d.ep.out);
    if (d.beta == 0.0f && !d.ep.row_offset && !d.ep.add) {
      // Nothing read by row: each run of equal-height tiles (the taller ones first, as
      // for_each_tile) is one call of p.tiles tiles.
      const int64_t tiles = (d.m + uk.mr - 1) / uk.mr, rows = d.m / tiles, taller = d.m % tiles;
      for (int64_t n0 = 0; n0 < d.n; n0 += uk.nr) {
        p.n = (int)(d.n - n0 < uk.nr ? d.n - n0 : uk.nr);
        p.b_off = n0 * uk.kp;
        for (int64_t m0 = 0, t0 = 0; t0 < tiles;) {
          const int64_t count = t0 < taller ? taller : tiles - taller;
          p.m = (int)(rows + (t0 < taller));
          p.tiles = (int)count;
          p.a_off = m0 * d.lda;
          t = tile_view(kr, ep ? *ep : none, shifted, m0, n0, c, d.ldc);
          uk.fn(p);
          m0 += count * p.m;
          t0 += count;
        }
      }
      return;
    }
    for_each_tile(kr, p, [&](int64_t m0, int64_t n0) {
      t = tile_view(kr, ep ? *ep : none, shifted, m0, n0, c, d.ldc);
      // The epilogue writes C's rows of the tile and reads the residual's only after the sums:
      // ask for their lines now, so that they arrive from L3 or memory while the k-loop runs.
      fetch_rows(t.out, p.m, p.n * ob, d.ldc * ob, 1);
      if (d.ep.add) fetch_rows(shifted.add, p.m, p.n * ob, shifted.ld_add * ob, 0);
      uk.fn(p);
    });
    return;
  }
  if (kr.epilogue) {
    // Each tile goes to a scratch tile (beta 0; the epilogue adds prev), then through the
    // epilogue into C while it is in L1. Two scratch tiles, one tile apart: a tile's epilogue
    // runs after the next tile's sums, so its loads never wait on the stores just made
    // (masked stores do not forward to loads; measured on Zen 4: 4-7 % of an int8 product).
    alignas(64) unsigned char scratch[2][16 * 64 * 4];  // every table entry has MR ≤ 16, NR ≤ 64 (tested)
    const epilogue_args none;
    epilogue_args shifted;
    p.beta = 0.0f;
    p.ldc = uk.nr;
    int64_t pending_m0 = -1, pending_n0 = 0;
    int pending_m = 0, pending_n = 0, slot = 0;
    auto finish = [&](int s) {
      epilogue_tile t = tile_view(kr, ep ? *ep : none, shifted, pending_m0, pending_n0, c, d.ldc);
      t.acc = scratch[s];
      t.ld_acc = uk.nr;
      t.m = pending_m;
      t.n = pending_n;
      kr.epilogue(d.ep, d.type, t);
    };
    for_each_tile(kr, p, [&](int64_t m0, int64_t n0) {
      p.c = scratch[slot];
      uk.fn(p);
      if (pending_m0 >= 0) finish(slot ^ 1);
      pending_m0 = m0;
      pending_n0 = n0;
      pending_m = p.m;
      pending_n = p.n;
      slot ^= 1;
    });
    finish(slot ^ 1);
    return;
  }
  for_each_tile(kr, p, [&](int64_t m0, int64_t n0) {
    p.c = (char*)c + (m0 * d.ldc + n0) * elem;
    uk.fn(p);
  });
}

}  // namespace brgemm
