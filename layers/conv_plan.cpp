// The direct convolution's plans (conv_plan.h): building a pass's kernels and offset tables
// for a call shape, and running it. A run narrower than the rows sharing its row taps (a border
// column) is computed down the column instead (run_pass).
#include "conv_plan.h"
#include "brgemm/dfp.h"
#include "brgemm/norm.h"
#include "blocks.h"
#include <cstring>
#include <map>

namespace brgemm::layers {

// A 1×1, stride-1, unpadded convolution reads each image as one long row, so g rows (g dividing
// h, g·w ≤ 128) become one: the kernel sees runs of g·w columns instead of w.
void merge_rows(const conv_geometry& g, int64_t& h, int64_t& w) {
  if (g.r != 1 || g.s != 1 || g.stride_h != 1 || g.stride_w != 1 || g.pad_t || g.pad_b || g.pad_l || g.pad_r)
    return;
  int64_t rows = 1;
  for (int64_t d = 2; d <= h; ++d)
    if (h % d == 0 && d * w <= 128) rows = d;
  h /= rows;
  w *= rows;
}

channel_split split_channels(int64_t src, int64_t res, int64_t groups, int64_t bi, int64_t bo, int64_t align) {
  const int64_t src_pad = round_up(src, bi), res_pad = round_up(res, bo);
  channel_split best;
  if (groups == 1) {
    best.ki = bi, best.ko = bo, best.per = src_pad / bi;
    best.q0.assign((size_t)(res_pad / bo), 0);
    return best;
  }
  const int64_t gs = src / groups, gr = res / groups;
  int64_t best_cost = INT64_MAX;
  for (int64_t ki = bi; ki >= 1; --ki) {
    if (bi % ki || (ki % align && bi % align == 0)) continue;
    for (int64_t ko = bo; ko >= 1; --ko) {
      if (bo % ko) continue;
      const int64_t nq = src_pad / ki, nj = res_pad / ko;
      channel_split c;
      c.ki = ki, c.ko = ko, c.per = 1;
      c.q0.assign((size_t)nj, 0);
      for (int64_t j = 0; j < nj && j * ko < res; ++j) {  // blocks of padding only read block 0
        const int64_t k_lo = j * ko, k_hi = std::min(res, k_lo + ko);
        const int64_t c_lo = k_lo / gr * gs, c_hi = ((k_hi - 1) / gr + 1) * gs;
        c.q0[j] = c_lo / ki;
        c.per = std::max(c.per, ceil_div(c_hi, ki) - c_lo / ki);
      }
      for (int64_t& q : c.q0) q = std::min(q, nq - c.per);  // a range of fixed length, zeros past the groups
      const int64_t cost = nj * c.per * (ki * ceil_div(ko, 16) + 2);
      if (cost < best_cost) best_cost = cost, best = std::move(c);
    }
  }
  return best;
}

// The microkernel for a pass whose kernels are one vector wide (ko ≤ 16: the blocks of narrow
// groups), or null for dispatch's choice. Such a kernel spends a broadcast per multiply-add, and
// the default f32 tile (6 × 64) keeps only six accumulators at that width: the tallest tile of
// the level (14 × 32 on AVX-512) measured 12–40 % faster on ResNeXt's grouped 3 × 3 layers
// (groups of 4, 8 and 16). bf16 showed no difference (its default tiles are taller already).
const char* narrow_ukernel(dtype t, int64_t n) {
  if (t != dtype::f32 || n > 16) return nullptr;
  const int active = (int)active_isa();
  int top = -1;
  for (int i = 0; i < ukernel_count(); ++i)
    if (const ukernel_info* u = ukernel_at(i); u->type == t && (int)u->level <= active) top = std::max(top, (int)u->level);
  const ukernel_info* best = nullptr;
  for (int i = 0; i < ukernel_count(); ++i)
    if (const ukernel_info* u = ukernel_at(i); u->type == t && (int)u->level == top && (!best || u->mr > best->mr))
      best = u;
  return best ? best->name : nullptr;
}

// Whether any of the column taps x .. x + n − 1 (one batch element: merged taps) of a kernel
// row reads a kept block; keep_row: that row's flags by column tap.
static bool kept_any(const uint8_t* keep_row, const std::vector<tap>& taps, size_t x, int64_t n) {
  for (size_t y = x; y < std::min(taps.size(), x + (size_t)n); ++y)
    if (keep_row[taps[y].t]) return true;
  return false;
}

status build_pass(conv_pass_plan& pl, const pass_shape& p, std::vector<std::vector<tap>> rows_in,
                  std::vector<run> runs_in, channel_split ch, const std::vector<uint8_t>* kept) {
  pl.p = p;
  pl.rows = std::move(rows_in);
  pl.runs = std::move(runs_in);
  pl.ch = std::move(ch);
  const std::vector<run>& runs = pl.runs;
  const int64_t ki = pl.ch.ki, ko = pl.ch.ko, blk = packed_b_elements(p.t, ki, ko), taps = p.taps_r * p.taps_s;
  pl.per = std::clamp<int64_t>((256 << 10) / (taps * blk * dtype_b_bytes(p.t)), 1, pl.ch.per);
  pl.chunks = ceil_div(pl.ch.per, pl.per);
  int64_t group = p.res_rows;
  if (pl.chunks > 1) group = std::min(group, std::max<int64_t>(1, (128 << 10) / (p.res_cols * p.bo * 4)));
  while (group > 1 && p.res * p.n * ceil_div(p.res_rows, group) < 4 * (int64_t)p.threads) group = ceil_div(group, 2);
  pl.group = group;
  const bool c_is_acc = p.e.out == out_type::acc || (p.e.out == out_type::f32 && !dtype_is_integer(p.t));
  pl.tile = !c_is_acc && pl.chunks > 1;
  // The work items' order. By result block outermost, a block's weights stay in L2 while the
  // images stream through; when all the weights are smaller than one image's source (a 1×1
  // 64 → 256 at 56 × 56: 32 KB against 400 KB in bf16), image by image instead, so that each
  // image is read from memory once rather than once per result block, and each thread writes
  // whole images.
  const int64_t src_bytes = p.red * p.src_rows * p.src_cols * p.bi * dtype_a_bytes(p.t);
  const int64_t wts_bytes = (int64_t)pl.ch.q0.size() * pl.ch.per * taps * blk * dtype_b_bytes(p.t);
  pl.images_outer = p.res > 1 && wts_bytes < src_bytes;
  pl.ldc = p.res_step * p.bo;

  // Column runs. A run narrower than the stack of result rows that share its row taps (the
  // border columns of a padded image are one result wide) goes down the column instead: one
  // call per column over those rows, whose sources lie src_row_step rows apart. A one-row tile
  // cannot hide the FMA latency: at 7 × 7 the border columns were a fifth of the work at a third
  // of the speed. Stacks: per group, the rows whose taps continue the previous row's.
  pl.groups = ceil_div(p.res_rows, group);
  pl.stacks.assign(pl.groups, {});
  int64_t narrowest = INT64_MAX, tallest = 1;
  for (const run& r : runs) narrowest = std::min(narrowest, r.m);
  for (int64_t gi = 0; gi < pl.groups; ++gi)
    for (int64_t o = gi * group; o < std::min(p.res_rows, (gi + 1) * group); ++o) {
      const std::vector<tap>& here = pl.rows[o];
      bool more = p.src_row_step > 0 && !pl.stacks[gi].empty();
      if (more) {
        const std::vector<tap>& prev = pl.rows[o - 1];
        more = prev.size() == here.size();
        for (size_t x = 0; more && x < here.size(); ++x)
          more = prev[x].t == here[x].t && here[x].src == prev[x].src + p.src_row_step;
      }
      if (more)
        tallest = std::max(tallest, ++pl.stacks[gi].back().second);
      else
        pl.stacks[gi].push_back({o, 1});
    }

  // Merged column taps: with a short layout block (fewer than 16 channels: an image's 3 or 4)
  // a tap is a reduction of 4, a quarter of the batch element's fixed cost per step. When a
  // run's column taps are neighbours both in the source (adjacent pixels of bi channels) and in
  // the packed weights (consecutive taps' ki × ko blocks), they are one batch element over
  // taps · ki: the stem's 7 × 7 becomes 7 elements of 28 instead of 49 of 4. Runs that may go
  // down the column (m < tallest) keep one tap per element (kc's kernels are shared by runs).
  // Weights by kernel row (packs_rows: pairs or quads across the taps) serve whole rows only.
  pl.merged.assign(runs.size(), 1);
  pl.rows_w = p.merge && packs_rows(p.t, ki, p.bi);
  if (p.merge && ki == p.bi && p.bi < 16)
    for (size_t u = 0; u < runs.size(); ++u) {
      const std::vector<tap>& ts = runs[u].taps;
      bool next = runs[u].m >= tallest && ts.size() > 1;
      if (pl.rows_w) next = next && (int64_t)ts.size() == p.taps_s && ts[0].t == 0;
      for (size_t x = 1; next && x < ts.size(); ++x) next = ts[x].t == ts[x - 1].t + 1 && ts[x].src == ts[x - 1].src + 1;
      if (next) pl.merged[u] = (int64_t)ts.size();
    }

  // Kernels per run (runs differ in M, and merged ones in K).
  desc d{p.t, 0, ko, ki, p.src_step * p.bi, ko, pl.ldc, batch_kind::offset, 0.0f, p.e};
  // Grouped passes only (a split other than every channel at once): the ungrouped ones keep
  // the kernels they were measured with.
  const bool grouped = ki != p.bi || ko != p.bo || pl.ch.per != p.red;
  const char* name = grouped ? narrow_ukernel(p.t, ko) : nullptr;
  pl.kr.resize(runs.size());
  for (size_t u = 0; u < runs.size(); ++u) {
    d.m = runs[u].m;
    d.k = ki * pl.merged[u];
    d.overlap_a = pl.merged[u] > 1;  // a window of taps·bi elements, the next result's bi·step on
    if (status s = pl.kr[u].make(d, pl.chunks, name); s != status::ok) return s;
  }
  pl.kc.assign(tallest + 1, {});
  d.k = ki;
  d.overlap_a = false;
  d.lda = p.src_row_step * p.src_cols * p.bi;
  d.ldc = p.res_cols * p.bo;
  for (int64_t m = narrowest + 1; m <= tallest; ++m) {
    d.m = m;
    if (status s = pl.kc[m].make(d, pl.chunks, name); s != status::ok) return s;
  }

  // Row classes: the taps of a row as (tap, source row − the first tap's source row).
  std::map<std::vector<std::pair<int64_t, int64_t>>, int64_t> classes;
  std::vector<const std::vector<tap>*> class_taps;
  pl.row_class.resize(p.res_rows);
  pl.row_base.resize(p.res_rows);
  for (int64_t o = 0; o < p.res_rows; ++o) {
    const std::vector<tap>& taps_o = pl.rows[o];
    const int64_t base = taps_o.empty() ? 0 : taps_o[0].src;
    std::vector<std::pair<int64_t, int64_t>> shape;
    for (const tap& tr : taps_o) shape.push_back({tr.t, tr.src - base});
    auto [it, fresh] = classes.try_emplace(std::move(shape), (int64_t)class_taps.size());
    if (fresh) class_taps.push_back(&taps_o);
    pl.row_class[o] = it->second;
    pl.row_base[o] = base;
  }
  pl.classes = (int64_t)class_taps.size();
  // Phases: where q0 sits inside its source layout block (ri = bi/ki parts of it); a table set
  // per phase that occurs, whose offsets start from the layout block's base.
  const int64_t ri = p.bi / ki;
  std::vector<int64_t> phase_index((size_t)ri, -1), phases;
  pl.phase.resize(pl.ch.q0.size());
  for (size_t j = 0; j < pl.ch.q0.size(); ++j) {
    if (kept) {  // block-sparse: a table set per result block (its own kept blocks)
      pl.phase[j] = (int64_t)phases.size();
      phases.push_back(pl.ch.q0[j] % ri);
      continue;
    }
    int64_t& at = phase_index[pl.ch.q0[j] % ri];
    if (at < 0) at = (int64_t)phases.size(), phases.push_back(pl.ch.q0[j] % ri);
    pl.phase[j] = at;
  }
  // The tables, in the order the reduction has always summed: chunk's q, row tap, column tap.
  const int64_t src_plane = p.src_rows * p.src_cols * p.bi, rblk = packed_b_elements(p.t, p.taps_s * ki, ko);
  pl.table.resize(phases.size() * class_taps.size() * runs.size() * pl.chunks);
  for (size_t ph = 0; ph < phases.size(); ++ph)
    for (size_t cls = 0; cls < class_taps.size(); ++cls) {
      const std::vector<tap>& taps_o = *class_taps[cls];
      const int64_t base = taps_o.empty() ? 0 : taps_o[0].src;
      const uint8_t* keep = kept ? kept->data() + ph * pl.ch.per * p.taps_r * p.taps_s : nullptr;  // set ph is j
      for (size_t u = 0; u < runs.size(); ++u)
        for (int64_t ch = 0; ch < pl.chunks; ++ch) {
          const int64_t first = (int64_t)pl.offs_a.size();
          for (int64_t q = ch * pl.per; q < std::min(pl.ch.per, (ch + 1) * pl.per); ++q) {
            const int64_t at = phases[ph] + q, src_q = at / ri * src_plane + at % ri * ki;
            for (const tap& tr : taps_o)
              for (size_t x = 0; x < runs[u].taps.size(); x += pl.merged[u]) {
                const tap& ts = runs[u].taps[x];
                if (keep && !kept_any(keep + (q * p.taps_r + tr.t) * p.taps_s, runs[u].taps, x, pl.merged[u])) continue;
                pl.offs_a.push_back(src_q + ((tr.src - base) * p.src_cols + ts.src) * p.bi);
                pl.offs_w.push_back(pl.rows_w && pl.merged[u] > 1 ? (q * p.taps_r + tr.t) * rblk
                                                                  : ((q * p.taps_r + tr.t) * p.taps_s + ts.t) * blk);
              }
          }
          pl.table[((ph * class_taps.size() + cls) * runs.size() + u) * pl.chunks + ch] = {
              first, (int64_t)pl.offs_a.size() - first};
        }
    }

  // The per-thread tiles, grown here rather than by the first items.
  const int64_t rows_blk = group * p.res_cols * p.bo;
  reserve_scratch(p.threads, {{0, p.z && p.t == dtype::bf16 ? rows_blk : 0},
                              {1, dtype_is_integer(p.t) ? ko * (int64_t)runs.size() : 0},
                              {2, pl.tile ? rows_blk : 0}});
  return status::ok;
}

// The result rows and column runs of a forward pass over an input of h × w (merged rows).
std::vector<std::vector<tap>> forward_rows(const conv_geometry& g, int64_t h, int64_t oh) {
  std::vector<std::vector<tap>> rows(oh);
  const forward_axis along_h{h, g.stride_h, g.pad_t, g.dil_h};
  for (int64_t o = 0; o < oh; ++o) rows[o] = taps_at(o, g.r, along_h);
  return rows;
}
std::vector<run> forward_runs(const conv_geometry& g, int64_t w, int64_t ow) {
  return make_runs(ow, 1, g.stride_w, g.s, forward_axis{w, g.stride_w, g.pad_l, g.dil_w});
}

void row_moments(const void* row, bool bf16, int64_t cols, int64_t width, double* m) {
  // Shifted by the row's first value: the sums of d = y − K then lose nothing to cancellation
  // unless the row's first value is many standard deviations from its mean (batch_norm.cpp).
  double shift[lane_width_max] = {};  // (zeroed: gcc cannot see the loop below fill the used part)
  for (int64_t l = 0; l < width; ++l) {
    float v;
    if (bf16) {
      const uint32_t u = (uint32_t)((const uint16_t*)row)[l] << 16;
      std::memcpy(&v, &u, 4);
    } else {
      v = ((const float*)row)[l];
    }
    shift[l] = v;
  }
  std::fill(m, m + 2 * width, 0.0);
  lane_moments(lane_rows{cols, width, width, bf16}, row, shift, m, m + width);
  for (int64_t l = 0; l < width; ++l) {
    const double sum = m[l], sumsq = m[width + l];
    m[l] = shift[l] + sum / (double)cols;
    m[width + l] = sumsq - sum * sum / (double)cols;
  }
}

// Runs a planned pass on one call's data. Only invokes: every kernel, run and offset table is
// the plan's.
void run_pass(const conv_pass_plan& pl, const pass_data& x) {
  const pass_shape& p = pl.p;
  const std::vector<run>& runs = pl.runs;
  const int64_t chunks = pl.chunks, group = pl.group, groups = pl.groups, ldc = pl.ldc;
  const bool tile = pl.tile;
  const int64_t src_plane = p.src_rows * p.src_cols * p.bi, res_plane = p.res_rows * p.res_cols * p.bo;
  const int64_t ob = x.z ? 4 : out_type_bytes(p.t, p.e.out);
  const int64_t ki = pl.ch.ki, ko = pl.ch.ko, subs = pl.ch.subs(p.bo), ri = p.bi / ki;
  const int64_t ab = dtype_a_bytes(p.t), wb = dtype_b_bytes(p.t);
  const int64_t red_w = pl.ch.per * p.taps_r * p.taps_s * packed_b_elements(p.t, ki, ko);
  const int64_t red_rows = pl.ch.per * p.taps_r * packed_b_elements(p.t, p.taps_s * ki, ko);  // wts_rows' per j
  char* final_out = x.z ? (char*)x.z : (char*)x.out;
  const int64_t* offs_a = pl.offs_a.data();
  const int64_t* offs_w = pl.offs_w.data();
#pragma omp parallel for num_threads(p.threads) schedule(static)
  for (int64_t item = 0; item < p.res * p.n * groups; ++item) {
    const int64_t jl = pl.images_outer ? item % p.res : item / (p.n * groups);
    const int64_t i = pl.images_outer ? item / (groups * p.res) : item / groups % p.n;
    const int64_t gi = pl.images_outer ? item / p.res % groups : item % groups, o0 = gi * group;
    const int64_t o1 = std::min(p.res_rows, o0 + group);
    float* part = tile ? scratch(2, (o1 - o0) * p.res_cols * p.bo) : nullptr;  // f32 or s32
    // The zero point's column offsets of each run, kept while the rows' class (their taps) is
    // the same: the stem's interior rows share one, and its 49 tap sums cost a quarter of the
    // layer when added up per row.
    int32_t* cols = x.tapsum ? (int32_t*)scratch(1, ko * (int64_t)runs.size()) : nullptr;
    static thread_local std::vector<const int32_t*> sums;  // the tap sums a run reads
    static thread_local std::vector<int64_t> cols_class;   // per run: the row class cols holds
    if (cols) sums.resize(p.taps_r * p.taps_s);
    for (int64_t sub = 0; sub < subs; ++sub) {  // the layout block's ko-wide result blocks
      const int64_t j = jl * subs + sub, q0 = pl.ch.q0[j], ph = pl.phase[j];
      epilogue_args args = x.ea.at(0, j * ko, p.e.scale, p.t);
      if (cols) cols_class.assign(runs.size(), -1);
      const char* src_i = (const char*)x.src + (i * p.red * src_plane + (q0 - q0 % ri) / ri * src_plane) * ab;
      const char* wts_j = x.wts + j * red_w * wb;
      const char* rows_j = pl.rows_w ? x.wts_rows + j * red_rows * wb : nullptr;
      for (int64_t ch = 0; ch < chunks; ++ch) {
        const bool last = ch + 1 == chunks;
        // The product for the results of run u from row o, column c of the run on (just that
        // column when down the column).
        auto call = [&](const kernel& kr, int64_t o, size_t u, int64_t c, int64_t ld) {
          const run& r = runs[u];
          const auto& [first, count] = pl.at(ph, pl.row_class[o], u, ch);
          batch_ref batch;
          batch.count = count;
          batch.a = src_i + (pl.row_base[o] * p.src_cols + c * p.src_step) * p.bi * ab;
          batch.b = pl.merged[u] > 1 && pl.rows_w ? rows_j : wts_j;
          batch.offs_a = offs_a + first;
          batch.offs_b = offs_w + first;
          const int64_t rc = r.p0 + c * p.res_step;
          const int64_t at = (i * p.res + jl) * res_plane + (o * p.res_cols + rc) * p.bo + sub * ko;
          float* acc = tile ? part + ((o - o0) * p.res_cols + rc) * p.bo + sub * ko : (float*)(final_out + at * ob);
          if (!last) return execute(kr, batch, acc);
          if (cols) {  // −z·Σ W over the taps of this row and run, by the core's zero-point arithmetic
            int32_t* col = cols + u * ko;
            if (cols_class[u] != pl.row_class[o]) {
              int64_t read = 0;
              for (const tap& tr : pl.rows[o])
                for (const tap& ts : r.taps) sums[read++] = x.tapsum + ((j * p.taps_r + tr.t) * p.taps_s + ts.t) * ko;
              zero_point_col_offsets(p.t, zero_points{x.zero, 0}, 0, sums.data(), read, ko, col);
              cols_class[u] = pl.row_class[o];
            }
            args.col_offset = col;
          }
          args.acc_in = acc;
          args.ld_acc_in = ld;
          if (x.add) {
            args.add = (const char*)x.add + at * ob;
            args.ld_add = ld;
          }
          execute(kr, batch, final_out + at * ob, &args);
        };
        for (const auto& [first, rows] : pl.stacks[gi])
          for (size_t u = 0; u < runs.size(); ++u)
            if (runs[u].m < rows)  // then narrowest < rows <= tallest: kc[rows] was made
              for (int64_t c = 0; c < runs[u].m; ++c) call(pl.kc[rows].at(ch, chunks), first, u, c, p.res_cols * p.bo);
            else
              for (int64_t o = first; o < first + rows; ++o) call(pl.kr[u].at(ch, chunks), o, u, 0, ldc);
      }
    }
    if (x.z) {  // the activation on the group's rows while they are in cache (res_step is 1 here)
      // The epilogue's output is z's f32 here, so the output's type is the layer's: bf16
      // results are rounded from f32 (asking the epilogue wrote f32 into bf16 y).
      const int64_t at = (i * p.res + jl) * res_plane + o0 * p.res_cols * p.bo, len = (o1 - o0) * p.res_cols * p.bo;
      if (p.t != dtype::bf16) {
        activation_f32(x.act, x.z + at, (float*)x.out + at, len);
      } else {
        float* y = scratch(0, len);
        activation_f32(x.act, x.z + at, y, len);
        f32_to_bf16(y, (uint16_t*)x.out + at, len);
      }
    }
    if (x.scale) {  // f32 results (res_step 1 or several: every column of the rows is written)
      const int64_t at = (i * p.res + jl) * res_plane + o0 * p.res_cols * p.bo;
      dfp16_scale_f32((float*)x.out + at, (o1 - o0) * p.res_cols * p.bo, x.scale_e);
    }
    if (x.plain) {  // the rows' pixels × channels transposed into the plain planes (f32 out, no z)
      const int64_t at = (i * p.res + jl) * res_plane + o0 * p.res_cols * p.bo, plane = p.res_rows * p.res_cols;
      const int64_t ch = std::min(p.bo, x.plain_c - jl * p.bo);
      if (ch > 0)
        transpose((const uint32_t*)x.out + at, (o1 - o0) * p.res_cols, ch, p.bo,
                  (uint32_t*)x.plain + (i * x.plain_c + jl * p.bo) * plane + o0 * p.res_cols, plane);
    }
    if (x.moments) {  // a BatchNorm's statistics of the group's finished rows, while they are in cache
      const bool bf16_out = x.z ? p.t == dtype::bf16 : p.e.out == out_type::bf16;
      const int64_t yb = bf16_out ? 2 : 4, cols = x.moment_cols, per = p.res_cols / cols;
      for (int64_t r = o0 * per; r < o1 * per; ++r)
        row_moments((const char*)x.out + ((i * p.res + jl) * res_plane + r * cols * p.bo) * yb, bf16_out, cols, p.bo,
                    x.moments + ((i * p.res + jl) * p.res_rows * per + r) * 2 * p.bo);
    }
  }
}

void stacked_weights(const conv_geometry& g, int64_t bc, int64_t bk, const float* w, float* dst) {
  const int64_t kb = ceil_div(g.k, bk);
  std::fill(dst, dst + kb * g.s * g.r * bc * bk, 0.0f);
  for (int64_t k = 0; k < g.k; ++k)
    for (int64_t c = 0; c < g.c; ++c)
      for (int64_t r = 0; r < g.r; ++r)
        for (int64_t s = 0; s < g.s; ++s)
          dst[((((k / bk) * g.s + s) * g.r + r) * bc + c) * bk + k % bk] = w[((k * g.c + c) * g.r + r) * g.s + s];
}

status build_transposed_data(transposed_data_plan& pl, const conv_geometry& g, int64_t h, int64_t w, int64_t bc,
                             int64_t bk, int64_t kb, int threads) {
  const int64_t oh = g.out_h(h), ow = g.out_w(w), sw = g.stride_w;
  pl.bc = bc, pl.bk = bk, pl.kb = kb, pl.h = h, pl.w = w, pl.oh = oh, pl.ow = ow, pl.r = g.r;
  pl.stride_h = g.stride_h, pl.stride_w = sw, pl.pad_t = g.pad_t, pl.threads = threads;
  // Per stride class q of the input columns: its column taps and the output column each reads
  // for the class's first column (then one further per column), outside the row too.
  struct col_tap {
    int64_t s, ow0;
  };
  std::vector<std::vector<col_tap>> cls((size_t)std::min(sw, w));
  int64_t left = 0, right = 0;
  for (int64_t q = 0; q < (int64_t)cls.size(); ++q) {
    const int64_t cols = ceil_div(w - q, sw);
    for (int64_t s = 0; s < g.s; ++s) {
      const int64_t at = q + g.pad_l - s * g.dil_w;
      if (((at % sw) + sw) % sw) continue;
      cls[q].push_back({s, at / sw});
      left = std::max(left, -(at / sw));
      right = std::max(right, at / sw + cols - ow);
    }
  }
  pl.left = left;
  pl.row = left + ow + right;
  const int64_t pix = oh * pl.row;
  pl.pieces.clear();
  pl.offs_a.clear();
  pl.offs_b.clear();
  for (int64_t q = 0; q < (int64_t)cls.size(); ++q) {
    const int64_t cols = ceil_div(w - q, sw);
    for (int64_t m0 = 0; m0 < cols; m0 += transposed_piece) {
      const int64_t first = (int64_t)pl.offs_a.size();
      for (const col_tap& t : cls[q])
        for (int64_t j = 0; j < kb; ++j) {
          pl.offs_a.push_back((j * g.s + t.s) * g.r * bc * bk);
          pl.offs_b.push_back(j * bk * pix + left + t.ow0 + m0);
        }
      pl.pieces.push_back({q + m0 * sw, std::min(transposed_piece, cols - m0), first, (int64_t)pl.offs_a.size() - first});
    }
  }
  pl.r_lo.assign(oh, 0);
  pl.kern.assign(pl.pieces.size() * oh, nullptr);
  for (int64_t o = 0; o < oh; ++o) {
    const int64_t top = o * g.stride_h - g.pad_t;  // the input row of row tap 0
    const int64_t lo = std::max<int64_t>(0, -top), hi = std::min<int64_t>(g.r, h - top);
    pl.r_lo[o] = lo;
    if (lo >= hi) continue;
    for (size_t u = 0; u < pl.pieces.size(); ++u) {
      const desc d{dtype::f32, (hi - lo) * bc, pl.pieces[u].m, bk, bk, pix, transposed_piece, batch_kind::offset, 1.0f};
      if (status s = dispatch(d, &pl.kern[u * oh + o]); s != status::ok) return s;
    }
  }
  reserve_scratch(threads, {{2, h * bc * transposed_piece}});
  return status::ok;
}

void transposed_data_dz(const transposed_data_plan& pl, int64_t n, const float* dz, float* dzt) {
  const int64_t pix = pl.oh * pl.row;
#pragma omp parallel for num_threads(pl.threads) schedule(static)
  for (int64_t it = 0; it < n * pl.kb * pl.oh; ++it) {  // an output row of one result block
    const int64_t plane = it / pl.oh, o = it % pl.oh;
    float* d = dzt + plane * pl.bk * pix + o * pl.row;
    transpose(dz + (plane * pl.oh + o) * pl.ow * pl.bk, pl.ow, pl.bk, pl.bk, d + pl.left, pix);
    for (int64_t k = 0; k < pl.bk; ++k) {
      std::fill(d + k * pix, d + k * pix + pl.left, 0.0f);
      std::fill(d + k * pix + pl.left + pl.ow, d + k * pix + pl.row, 0.0f);
    }
  }
}

void run_transposed_data(const transposed_data_plan& pl, int64_t n, const float* wst, const float* dzt, float* gx) {
  const int64_t pieces = (int64_t)pl.pieces.size(), pix = pl.oh * pl.row, ld = transposed_piece;
#pragma omp parallel for num_threads(pl.threads) schedule(static)
  for (int64_t item = 0; item < n * pieces; ++item) {
    const int64_t i = item / pieces, u = item % pieces;
    const transposed_data_plan::piece& pc = pl.pieces[u];
    float* t = scratch(2, pl.h * pl.bc * ld);  // dXᵀ of the piece: rows (ih, c)
    std::fill(t, t + pl.h * pl.bc * ld, 0.0f);
    for (int64_t o = 0; o < pl.oh; ++o) {
      const kernel* k = pl.kern[u * pl.oh + o];
      if (!k) continue;
      batch_ref batch;
      batch.count = pc.count;
      batch.a = wst + pl.r_lo[o] * pl.bc * pl.bk;
      batch.b = dzt + i * pl.kb * pl.bk * pix + o * pl.row;
      batch.offs_a = pl.offs_a.data() + pc.first;
      batch.offs_b = pl.offs_b.data() + pc.first;
      execute(*k, batch, t + (o * pl.stride_h - pl.pad_t + pl.r_lo[o]) * pl.bc * ld);
    }
    for (int64_t ih = 0; ih < pl.h; ++ih)
      transpose(t + ih * pl.bc * ld, pl.bc, pc.m, ld, gx + ((i * pl.h + ih) * pl.w + pc.p0) * pl.bc,
                pl.stride_w * pl.bc);
  }
}

}  // namespace brgemm::layers
