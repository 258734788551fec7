// Winograd convolution driver (winograd.h): filter transform and packing, the plan of a pass
// (tile groups, kernels, batch offsets, the ISA's transforms) and the loop that runs it.
#include "winograd.h"
#include <algorithm>
#include <omp.h>
#include "blocks.h"

namespace brgemm::layers {

const char* winograd_unsupported(const conv_geometry& g, dtype t, activation act) {
  if (g.r != 3 || g.s != 3) return "the kernel is not 3x3";
  if (g.stride_h != 1 || g.stride_w != 1) return "the stride is not 1";
  if (g.dil_h != 1 || g.dil_w != 1) return "the dilation is not 1";
  if (g.groups != 1) return "groups is not 1";
  if (t != dtype::f32) return "only float32 is built (not bfloat16)";
  if (act != activation::none && act != activation::relu && act != activation::relu6)
    return "the activation is not none, relu or relu6";
  return nullptr;
}

double winograd_cost(const conv_geometry& g, int64_t n, int64_t h, int64_t w, int m) {
  const double ck = (double)g.c * (double)g.k;
  const int64_t oh = g.out_h(h), ow = g.out_w(w);
  if (m == 0) return 18.0 * ck * (double)(n * oh * ow) + 15.0 * 36.0 * ck;
  const double a2 = (m + 2) * (m + 2), tiles = (double)(n * ceil_div(oh, m) * ceil_div(ow, m));
  return 2.0 * a2 * ck * tiles + 15.0 * 4.0 * a2 * ck + 40.0 * a2 * (double)(g.c + g.k) * tiles;
}

int winograd_auto_tile(const conv_geometry& g, int64_t n, int64_t h, int64_t w, bool forced) {
  if (winograd_unsupported(g, dtype::f32, activation::none)) return 0;
  const double c2 = winograd_cost(g, n, h, w, 2), c4 = winograd_cost(g, n, h, w, 4);
  const int m = c4 <= c2 ? 4 : 2;
  if (forced) return m;
  return std::min(c2, c4) * 1.1 < winograd_cost(g, n, h, w, 0) ? m : 0;
}

// A pass: results (res channels in blocks of bo, out_h × out_w) from sources (src channels in
// blocks of bi, in_h × in_w), tile (ty, tx) reading the patch at (ty·m − pad_t, tx·m − pad_l).
struct winograd_shape {
  int m;
  int64_t n, in_h, in_w, pad_t, pad_l, out_h, out_w;
  int64_t src_blocks, res_blocks, bi, bo;
  bool bias, add, z;
  activation act;
  int threads;
};

struct winograd_plan {
  winograd_shape p;
  int64_t tiles_h, tiles_w, tiles, group, groups;  // tiles of all images, `group` per task
  bool shared;                                     // the threads share each group (below)
  const kernel *full = nullptr, *last = nullptr;   // M = group, and the last group's M
  std::vector<int64_t> offs_a, offs_b;             // per source block
  winograd_transforms fn;
};

namespace {

constexpr int64_t l2_budget = 640 << 10;  // bytes of V and M per group (L2: 1 MB per core)
constexpr int64_t l3_budget = 12 << 20;   // the same for a shared group (L3: 32 MB)

// Two schedules. Private groups: each thread takes groups of tiles whose V and M fit its L2 and
// runs all three steps on them; every group reads all of the transformed filters U, which is
// cheap while U is small (64 channels at F(4×4): 0.6 MB) and ruinous when it is not (512: 38 MB
// per group of a few tiles). Shared groups: the threads run each step of a large group together
// (input transforms split by tile, products by (point, result block), output transforms by
// tile), V and M staying in L3, so that U is read once per group. The plan takes shared groups
// when U does not fit in L3 and their estimated memory traffic is smaller: groups·|U| against
// shared groups·|U| + 2(|V| + |M|) (512 channels at 7×7, N = 16, F(4×4): 14.2 → 7.4 ms on 2
// threads; on one, where a shared group is simply an L3-sized one, 26.6 → 13.5 ms).
status build(winograd_plan& pl, const winograd_shape& p) {
  pl.p = p;
  const int64_t a2 = (p.m + 2) * (p.m + 2);
  pl.tiles_h = ceil_div(p.out_h, p.m), pl.tiles_w = ceil_div(p.out_w, p.m);
  pl.tiles = p.n * pl.tiles_h * pl.tiles_w;
  const int64_t per_tile = 4 * a2 * (p.src_blocks * p.bi + p.res_blocks * p.bo);
  const double u_bytes = 4.0 * a2 * p.src_blocks * p.bi * p.res_blocks * p.bo;
  int64_t t = std::clamp<int64_t>(l2_budget / per_tile, 6, 96);
  // As many groups as the threads can share evenly (one image of 56×56 at F(4×4) is 196 tiles:
  // 7 groups of 30 would leave a thread idle a seventh of the time), the tiles spread over them.
  t = ceil_div(pl.tiles, round_up(ceil_div(pl.tiles, t), p.threads));
  const int64_t ts = std::min(pl.tiles, std::max<int64_t>(6, l3_budget / per_tile));
  const double private_traffic = (double)ceil_div(pl.tiles, t) * u_bytes;
  const double shared_traffic = (double)ceil_div(pl.tiles, ts) * u_bytes + 2.0 * (double)(pl.tiles * per_tile);
  // While U fits in L3 its re-reads are L3 hits, and private groups measured faster whatever
  // the estimate (256 channels at 14×14, N = 16, F(4×4), U 9.4 MB: 7.5 against 8.3 ms).
  pl.shared = u_bytes > (double)l3_budget && shared_traffic < private_traffic;
  if (pl.shared) t = ts;
  pl.group = t;
  pl.groups = ceil_div(pl.tiles, t);
  desc d{dtype::f32, t, p.bo, p.bi, p.bi, p.bo, p.bo, batch_kind::offset, 0.0f};
  if (status s = dispatch(d, &pl.full); s != status::ok) return s;
  d.m = pl.tiles - (pl.groups - 1) * t;
  if (status s = dispatch(d, &pl.last); s != status::ok) return s;
  const int64_t blk = packed_b_elements(dtype::f32, p.bi, p.bo);
  for (int64_t q = 0; q < p.src_blocks; ++q) {
    pl.offs_a.push_back(q * t * p.bi);
    pl.offs_b.push_back(q * blk);
  }
  pl.fn = winograd_transforms_for(active_isa());
  if (!pl.shared)
    reserve_scratch(p.threads, {{0, a2 * p.src_blocks * t * p.bi}, {1, a2 * p.res_blocks * t * p.bo}});
  return status::ok;
}

// One call of a planned pass: only invokes. `shared`: V and M of a shared group (grown to the
// plan's size by the caller).
void run(const winograd_plan& pl, const float* src, const char* u, float* out, float* z, const float* add,
         const float* bias, float* shared) {
  const winograd_shape& p = pl.p;
  const int m = p.m;
  const int64_t a2 = (m + 2) * (m + 2), t = pl.group, per_image = pl.tiles_h * pl.tiles_w;
  const int64_t v_point = p.src_blocks * t * p.bi, m_point = p.res_blocks * t * p.bo;
  const int64_t src_plane = p.in_h * p.in_w * p.bi, out_plane = p.out_h * p.out_w * p.bo;
  const int64_t blk = packed_b_elements(dtype::f32, p.bi, p.bo);
  // The three steps on tiles [t0, t0 + count) of V and M.
  auto input = [&](float* v, int64_t t0, int64_t i) {
    const int64_t tile = t0 + i, img = tile / per_image, ty = tile % per_image / pl.tiles_w, tx = tile % pl.tiles_w;
    const winograd_input_args a{src + img * p.src_blocks * src_plane, src_plane, p.in_h, p.in_w,
                                ty * m - p.pad_t, tx * m - p.pad_l, p.bi, p.src_blocks,
                                v + i * p.bi, t * p.bi, v_point};
    pl.fn.input(m, a);
  };
  auto product = [&](const float* v, float* mo, int64_t count, int64_t x, int64_t j) {
    batch_ref b;
    b.count = p.src_blocks;
    b.offs_a = pl.offs_a.data();
    b.offs_b = pl.offs_b.data();
    b.a = v + x * v_point;
    b.b = (const float*)u + (x * p.res_blocks + j) * p.src_blocks * blk;
    execute(count == t ? *pl.full : *pl.last, b, mo + x * m_point + j * t * p.bo);
  };
  auto output = [&](const float* mo, int64_t t0, int64_t i) {
    const int64_t tile = t0 + i, img = tile / per_image, ty = tile % per_image / pl.tiles_w, tx = tile % pl.tiles_w;
    const int64_t at = img * p.res_blocks * out_plane + (ty * m * p.out_w + tx * m) * p.bo;
    const winograd_output_args o{mo + i * p.bo, t * p.bo, m_point, p.bo, p.res_blocks,
                                 std::min<int64_t>(m, p.out_h - ty * m), std::min<int64_t>(m, p.out_w - tx * m),
                                 bias, add ? add + at : nullptr, z ? z + at : nullptr, out + at,
                                 out_plane, p.out_w * p.bo, p.act};
    pl.fn.output(m, o);
  };
  if (pl.shared) {
    float *v = shared, *mo = shared + a2 * v_point;
#pragma omp parallel num_threads(p.threads)
    for (int64_t gi = 0; gi < pl.groups; ++gi) {
      const int64_t t0 = gi * t, count = std::min(t, pl.tiles - t0);
#pragma omp for schedule(static)
      for (int64_t i = 0; i < count; ++i) input(v, t0, i);
#pragma omp for collapse(2) schedule(static)
      for (int64_t x = 0; x < a2; ++x)
        for (int64_t j = 0; j < p.res_blocks; ++j) product(v, mo, count, x, j);
#pragma omp for schedule(static)
      for (int64_t i = 0; i < count; ++i) output(mo, t0, i);
    }
    return;
  }
  // Dynamic: a group is 0.1–1 ms of work, and a thread that another process delays (2 cores,
  // shared) then takes fewer of them.
#pragma omp parallel for num_threads(p.threads) schedule(dynamic)
  for (int64_t gi = 0; gi < pl.groups; ++gi) {
    float* v = scratch(0, a2 * v_point);
    float* mo = scratch(1, a2 * m_point);
    const int64_t t0 = gi * t, count = std::min(t, pl.tiles - t0);
    for (int64_t i = 0; i < count; ++i) input(v, t0, i);
    for (int64_t x = 0; x < a2; ++x)
      for (int64_t j = 0; j < p.res_blocks; ++j) product(v, mo, count, x, j);
    for (int64_t i = 0; i < count; ++i) output(mo, t0, i);
  }
}

// Floats of a shared group's V and M (0 for private groups).
int64_t shared_floats(const winograd_plan& pl) {
  const winograd_shape& p = pl.p;
  const int64_t a2 = (p.m + 2) * (p.m + 2);
  return pl.shared ? a2 * pl.group * (p.src_blocks * p.bi + p.res_blocks * p.bo) : 0;
}

// The transformed filters of a pass, [point][result block][source block] blocks of (bi × bo)
// packed as the kernel's B: U(point (i, j); res, src) = Σ_{r,s} G[i][r]·G[j][s]·taps(res, src)[r][s],
// in double, rounded once to f32 (the filter transform runs once per weight change: its
// accuracy is free). Zero outside the channel counts.
template <class Taps>
void pack_filters(int m, int64_t src, int64_t res, int64_t bi, int64_t bo, std::vector<char>& dst, Taps taps) {
  const int a = m + 2, a2 = a * a;
  const double(*gm)[3] = m == 2 ? winograd_g2 : m == 4 ? winograd_g4 : winograd_g6;
  const int64_t sb = ceil_div(src, bi), rb = ceil_div(res, bo), blk = packed_b_elements(dtype::f32, bi, bo);
  float* out = (float*)aligned(dst, a2 * rb * sb * blk * 4);
#pragma omp parallel for collapse(2) num_threads(threads_for(50.0 * a2 * src * res)) schedule(static)
  for (int64_t j = 0; j < rb; ++j)
    for (int64_t q = 0; q < sb; ++q) {
      float* tmp = scratch(0, a2 * bi * bo);  // [point][source lane][result lane]
      std::fill(tmp, tmp + a2 * bi * bo, 0.0f);
      const int64_t kn = std::min(bo, res - j * bo), cn = std::min(bi, src - q * bi);
      for (int64_t kk = 0; kk < kn; ++kk)
        for (int64_t cc = 0; cc < cn; ++cc) {
          double g[3][3], t[8][3];
          taps(j * bo + kk, q * bi + cc, g);
          for (int i = 0; i < a; ++i)
            for (int s = 0; s < 3; ++s) t[i][s] = gm[i][0] * g[0][s] + gm[i][1] * g[1][s] + gm[i][2] * g[2][s];
          for (int i = 0; i < a; ++i)
            for (int jj = 0; jj < a; ++jj)
              tmp[((int64_t)(i * a + jj) * bi + cc) * bo + kk] =
                  (float)(t[i][0] * gm[jj][0] + t[i][1] * gm[jj][1] + t[i][2] * gm[jj][2]);
        }
      for (int x = 0; x < a2; ++x)
        pack_b(dtype::f32, tmp + (int64_t)x * bi * bo, bi, bo, bo, out + ((x * rb + j) * sb + q) * blk, bo, nullptr);
    }
}

}  // namespace

winograd_conv::winograd_conv(const conv_geometry& g, activation act, int m)
    : g_(g), act_(act), m_(m), bc_(conv_block(g.c)), bk_(conv_block(g.k)) {}

void winograd_conv::pack(const float* w) {
  const int64_t c = g_.c;
  // Forward: results are output channels k, sources input channels c.
  pack_filters(m_, g_.c, g_.k, bc_, bk_, fwd_, [&](int64_t k, int64_t ci, double (&g)[3][3]) {
    const float* p = w + (k * c + ci) * 9;
    for (int r = 0; r < 3; ++r)
      for (int s = 0; s < 3; ++s) g[r][s] = p[r * 3 + s];
  });
  // Backward data: results are input channels, sources output channels, the taps flipped.
  pack_filters(m_, g_.k, g_.c, bk_, bc_, bwd_, [&](int64_t ci, int64_t k, double (&g)[3][3]) {
    const float* p = w + (k * c + ci) * 9;
    for (int r = 0; r < 3; ++r)
      for (int s = 0; s < 3; ++s) g[r][s] = p[(2 - r) * 3 + (2 - s)];
  });
}

status winograd_conv::forward(int64_t n, int64_t h, int64_t w, const float* xb, float* yb, float* zb,
                              const float* add, const float* bias) {
  const int64_t oh = g_.out_h(h), ow = g_.out_w(w);
  const int threads = threads_for(2.0 * n * oh * ow * g_.k * g_.c * 4);
  winograd_plan_key key = zeroed<winograd_plan_key>();
  key.n = n, key.h = h, key.w = w, key.level = (int32_t)active_isa(), key.threads = threads;
  key.bias = bias != nullptr, key.z = zb != nullptr, key.add = add != nullptr;
  std::shared_ptr<const winograd_plan> plan;
  if (status s = plans_.get(key, &plan, [&](winograd_plan& pl) {
        winograd_shape p{m_, n, h, w, g_.pad_t, g_.pad_l, oh, ow, ceil_div(g_.c, bc_), ceil_div(g_.k, bk_),
                         bc_, bk_, bias != nullptr, add != nullptr, zb != nullptr, act_, threads};
        return build(pl, p);
      });
      s != status::ok)
    return s;
  std::unique_lock<std::mutex> lock(shared_mutex_, std::defer_lock);
  if (plan->shared) lock.lock();
  run(*plan, xb, aligned(fwd_, 0), yb, zb, add, bias, (float*)aligned(shared_, shared_floats(*plan) * 4));
  return status::ok;
}

status winograd_conv::backward_data(int64_t n, int64_t h, int64_t w, const float* dzb, float* gxb) {
  const int64_t oh = g_.out_h(h), ow = g_.out_w(w);
  const int threads = threads_for(2.0 * n * oh * ow * g_.k * g_.c * 4);
  winograd_plan_key key = zeroed<winograd_plan_key>();
  key.n = n, key.h = h, key.w = w, key.level = (int32_t)active_isa(), key.threads = threads, key.backward = 1;
  std::shared_ptr<const winograd_plan> plan;
  if (status s = plans_.get(key, &plan, [&](winograd_plan& pl) {
        // ∂x[i] = Σ_r ∂z[i + pad_t − r]·W[r] = Σ_r' ∂z[i − (2 − pad_t) + r']·W[2 − r']: a forward
        // pass over ∂z with padding 2 − pad (negative: the patch starts inside) and h × w results.
        winograd_shape p{m_, n, oh, ow, 2 - g_.pad_t, 2 - g_.pad_l, h, w, ceil_div(g_.k, bk_), ceil_div(g_.c, bc_),
                         bk_, bc_, false, false, false, activation::none, threads};
        return build(pl, p);
      });
      s != status::ok)
    return s;
  std::unique_lock<std::mutex> lock(shared_mutex_, std::defer_lock);
  if (plan->shared) lock.lock();
  run(*plan, dzb, aligned(bwd_, 0), gxb, nullptr, nullptr, nullptr,
      (float*)aligned(shared_, shared_floats(*plan) * 4));
  return status::ok;
}

}  // namespace brgemm::layers
