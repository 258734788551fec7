// Plans: what a layer driver sets up once per call shape, so that its loops only invoke.
//
// dispatch() takes the kernel cache's lock and hashes a descriptor; run lists and offset tables
// are built with allocations. None of that belongs inside a forward or backward loop (libxsmm
// and oneDNN do the same: dispatch at setup, invoke in the loop). A driver describes its call
// shape as a small key, looks its plan up once per call (outside every OpenMP region), and the
// loops read only the plan: kernel handles, runs, offset tables.
//
// The key carries the active ISA and the thread count: a plan dispatched under one ISA holds
// that ISA's kernels (and epilogue), so after brgemm.set_isa the key differs and the plan is
// rebuilt rather than silently running the old level's code; the thread count decides the work
// split and the per-thread scratch a plan reserves.
#pragma once
#include <cstring>
#include <memory>
#include <mutex>
#include <type_traits>
#include "brgemm/brgemm.h"

namespace brgemm::layers {

// A few plans of one kind, most recently used first. A layer sees few shapes (the last batch
// of an epoch is smaller; eval and train differ), so a short list compared bytewise is enough.
// Plans are immutable once built and shared: a call keeps its plan alive even if another thread
// replaces it, so concurrent calls on one layer stay safe. The lock is taken once per call, to
// find the plan, never in a loop.
template <class Key, class Plan, int Slots = 4>
class plan_cache {
  static_assert(std::is_trivially_copyable_v<Key>, "keys are compared bytewise");

 public:
  // The plan for key, built by build(Plan&) → status when missing (not kept when it fails).
  template <class Build>
  status get(const Key& key, std::shared_ptr<const Plan>* out, Build build) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (int i = 0; i < used_; ++i)
      if (std::memcmp(&keys_[i], &key, sizeof(Key)) == 0) {
        *out = plans_[i];
        to_front(i, key, *out);
        return status::ok;
      }
    auto fresh = std::make_shared<Plan>();
    if (status s = build(*fresh); s != status::ok) return s;
    *out = std::move(fresh);
    to_front(used_ < Slots ? used_++ : Slots - 1, key, *out);  // a new plan displaces the least recently used
    return status::ok;
  }

  plan_cache() = default;
  plan_cache(const plan_cache&) {}  // a copied layer builds its own plans
  plan_cache& operator=(const plan_cache&) { return *this; }

 private:
  std::mutex mutex_;
  int used_ = 0;
  Key keys_[Slots];
  std::shared_ptr<const Plan> plans_[Slots];

  // Slot `from` leaves; the slots before it move down one; (key, plan) goes first.
  void to_front(int from, const Key& key, const std::shared_ptr<const Plan>& plan) {
    for (int j = from; j > 0; --j) {
      keys_[j] = keys_[j - 1];
      plans_[j] = std::move(plans_[j - 1]);
    }
    keys_[0] = key;
    plans_[0] = plan;
  }
};

// Zero-filled key storage, so that padding bytes compare equal.
template <class Key>
Key zeroed() {
  Key k;
  std::memset(&k, 0, sizeof k);
  return k;
}

}  // namespace brgemm::layers
