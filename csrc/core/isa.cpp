// CPU feature detection (CPUID + XGETBV), done once, and the run-time cap on the ISA level
// (BRGEMM_ISA, brgemm.set_isa). Baseline flags only: this code must run on any x86-64.
#include <atomic>
#include <cpuid.h>
#include <cstring>
#include "brgemm/brgemm.h"

namespace brgemm {

namespace {

const char* const names[isa_count] = {"scalar", "avx2", "avx512", "avx512_vnni", "avx512_bf16"};

bool bit(unsigned reg, int b) { return (reg >> b) & 1u; }

// XCR0: which register states the OS saves on a context switch.
uint64_t xcr0() {
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return ((uint64_t)hi << 32) | lo;
}

isa detect() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return isa::scalar;
  const bool fma = bit(c, 12), osxsave = bit(c, 27), avx = bit(c, 28), f16c = bit(c, 29);
  if (!osxsave || !avx) return isa::scalar;
  const uint64_t xcr = xcr0();
  const bool os_ymm = (xcr & 0x6) == 0x6;     // SSE + AVX state
  const bool os_zmm = (xcr & 0xE6) == 0xE6;   // + opmask, upper zmm0-15, zmm16-31
  unsigned max_leaf = __get_cpuid_max(0, nullptr);
  if (max_leaf < 7 || !os_ymm) return isa::scalar;
  __cpuid_count(7, 0, a, b, c, d);
  const bool avx2 = bit(b, 5);
  const bool avx512 = bit(b, 16) && bit(b, 17) && bit(b, 30) && bit(b, 31);  // F, DQ, BW, VL
  const bool vnni = bit(c, 11);
  const unsigned max_sub = a;
  bool bf16 = false;
  if (max_sub >= 1) {
    __cpuid_count(7, 1, a, b, c, d);
    bf16 = bit(a, 5);
  }
  if (!avx2 || !fma || !f16c) return isa::scalar;  // every AVX2 CPU has F16C; the level needs it
  if (!avx512 || !os_zmm) return isa::avx2;
  if (!vnni) return isa::avx512;
  if (!bf16) return isa::avx512_vnni;
  return isa::avx512_bf16;
}

std::atomic<int> cap{-1};  // -1: no cap

}  // namespace

const char* isa_name(isa level) {
  int i = (int)level;
  return i >= 0 && i < isa_count ? names[i] : "unknown";
}

bool isa_from_name(const char* name, isa* out) {
  for (int i = 0; i < isa_count; ++i)
    if (std::strcmp(name, names[i]) == 0) {
      *out = (isa)i;
      return true;
    }
  return false;
}

isa detected_isa() {
  static const isa level = detect();  // thread-safe one-time initialisation
  return level;
}

bool isa_built(isa level) {
  switch (level) {
    case isa::scalar: return true;
#ifdef BRGEMM_BUILT_AVX2
    case isa::avx2: return true;
#endif
#ifdef BRGEMM_BUILT_AVX512
    case isa::avx512: return true;
#endif
#ifdef BRGEMM_BUILT_AVX512_VNNI
    case isa::avx512_vnni: return true;
#endif
#ifdef BRGEMM_BUILT_AVX512_BF16
    case isa::avx512_bf16: return true;
#endif
    default: return false;
  }
}

bool isa_available(isa level) {
  // Levels are cumulative: a level is usable only if every level below it is built too.
  for (int i = 0; i <= (int)level; ++i)
    if (!isa_built((isa)i)) return false;
  return (int)level <= (int)detected_isa();
}

isa active_isa() {
  int c = cap.load(std::memory_order_relaxed);
  if (c >= 0) return (isa)c;
  int best = 0;
  for (int i = 0; i < isa_count; ++i)
    if (isa_available((isa)i)) best = i;
  return (isa)best;
}

status set_isa_cap(isa level) {
  if (!isa_built(level)) return status::isa_not_built;
  if (!isa_available(level)) return status::isa_not_supported;
  cap.store((int)level);
  return status::ok;
}

void clear_isa_cap() { cap.store(-1); }

}  // namespace brgemm
