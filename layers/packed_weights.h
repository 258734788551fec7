// The layers' weight-change check: a snapshot of the arrays a layer packed last, compared
// exactly with the caller's arrays on each refresh, and the repack when they differ.
//
// Exact and not by version counter: a write through a numpy view bumps no counter, and the
// Python side (brgemm/_runners/weights.py) relies on the layers to see it. The compare runs on
// every call of a layer whose weights may change, so it is same_bytes' parallel memcmp, part by
// part, stopping at the first part that differs.
#pragma once
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <vector>
#include "blocks.h"

namespace brgemm::layers {

// One array of a snapshot: `bytes` at p; a null p is an optional array that is absent (a layer
// without bias), which differs from any present one.
struct weight_part {
  const void* p;
  int64_t bytes;
};

class packed_weights {
 public:
  using parts = std::initializer_list<weight_part>;

  // Whether `ps` hold what was taken last (false before the first take).
  bool same(parts ps) const {
    if (!taken_ || ps.size() != sizes_.size()) return false;
    size_t i = 0;
    int64_t at = 0;
    for (const weight_part& x : ps) {
      const int64_t bytes = x.p ? x.bytes : -1;
      if (bytes != sizes_[i++]) return false;
      if (x.p && !same_bytes(x.p, seen_.data() + at, bytes)) return false;
      if (x.p) at += bytes;
    }
    return true;
  }

  // Copies `ps` as what was packed.
  void take(parts ps) {
    char* dst = resize(ps);
    for (const weight_part& x : ps)
      if (x.p) {
        copy_bytes(dst, x.p, x.bytes);
        dst += x.bytes;
      }
  }

  // Storage for `ps`, for a packer that writes the snapshot itself while the rows are in cache
  // (the parts' contents are not read): it must fill all of it before the next `same`.
  char* resize(parts ps) {
    sizes_.clear();
    int64_t total = 0;
    for (const weight_part& x : ps) {
      sizes_.push_back(x.p ? x.bytes : -1);
      if (x.p) total += x.bytes;
    }
    seen_.resize((size_t)total);
    taken_ = true;
    return seen_.data();
  }

  // The present parts as taken last, back to back (a layer that packs another form of the
  // same weights later, e.g. conv_layer's Winograd filters, reads them from here).
  const char* data() const { return seen_.data(); }

  // Calls repack() and takes `ps` when they differ from what was taken last. Returns whether it
  // repacked.
  template <class Repack>
  bool refresh(parts ps, Repack&& repack) {
    if (same(ps)) return false;
    repack();
    take(ps);
    return true;
  }

 private:
  bool taken_ = false;
  std::vector<int64_t> sizes_;  // bytes of each part, −1 for an absent one
  std::vector<char> seen_;      // the present parts back to back
};

}  // namespace brgemm::layers
