// Batch normalisation on the blocked layout (batch_norm.h): tasks of (image, channel block, row
// chunk), each calling the core's per-lane kernels on its rows; the per-task sums combined in a
// fixed order; per-channel coefficients computed in double between the passes.
//
// Accuracy of the statistics. Let M = n·hw values of a channel, u = 2⁻⁵³ (double), K the shift,
// d = x − K, D = mean(d) = μ − K, σ² the variance. Every d and d² is rounded once, and the sums
// are recursive (each task in order, then the tasks in order: still at most M − 1 additions on
// any path), so |ΔΣd| ≤ (M+1)·u·Σ|d| and |ΔΣd²| ≤ (M+2)·u·Σd². With Σ|d| ≤ M·√(σ² + D²) and
// Σd² = M·(σ² + D²), var = Σd²/M − D² is off by at most about
//     |Δvar| ≤ (M+5)·u·(σ² + D² + 2|D|·√(σ² + D²)) ≤ 2·(M+5)·u·(σ² + 2D²),
// a relative error 2(M+5)u·(1 + 2D²/σ²): 2.2·10⁻¹⁰·(1 + 2D²/σ²) for M = 10⁶, far below float32's
// 6·10⁻⁸ unless the shift is thousands of σ from the mean. Without a shift (K = 0: the textbook
// E[x²] − E[x]²), D = μ and the error grows with μ²/σ² (catastrophic cancellation: μ/σ = 10⁴
// loses everything). `shifted` takes K = the mean of up to 32 rows spread over the first image,
// so D is a fraction of σ for any data that is not adversarially ordered; `two_pass` takes
// K = Σx/M from a first pass, D ≈ (M+1)u·E|x|, and the bound is 2(M+5)u always, at the price of
// reading x once more. Measured (M = 10⁵ per channel, against long double): shifted ≤ 8·10⁻¹⁵
// relative on N(μ, 1) for μ up to 10⁷ and 4·10⁻¹² when the sampled rows are all outliers (the
// bound's worst case), two-pass ≤ 3·10⁻¹⁴, the unshifted E[x²] − E[x]² in double 4·10⁻² at
// μ = 10⁷; the two-pass forward took 1.13-1.5x the time on ResNet-50's shapes (N = 8, 2 threads).
// So shifted is the default; two_pass stays for data whose first image is unrepresentative.
#include "batch_norm.h"
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>
#include <omp.h>
#include "brgemm/norm.h"

namespace brgemm::layers {

namespace {

// The task list: each (image, block) pair cut into chunks of `chunk` rows (a function of bc
// only: about 64 KB of f32 each), numbered (image, block, chunk) with the chunk fastest.
struct bn_tasks {
  int64_t n, cb, hw, bc, chunk, per, count;
  explicit bn_tasks(const bn_shape& s)
      : n(s.n), cb(s.blocks()), hw(s.hw), bc(s.bc), chunk(std::max<int64_t>(1, 16384 / s.bc)),
        per(std::max<int64_t>(1, (s.hw + chunk - 1) / chunk)), count(s.n * cb * per) {}
  int64_t image(int64_t t) const { return t / per / cb; }
  int64_t block(int64_t t) const { return t / per % cb; }
  int64_t row0(int64_t t) const { return t % per * chunk; }
  int64_t rows(int64_t t) const { return std::max<int64_t>(0, std::min(hw, row0(t) + chunk) - row0(t)); }
  // Element offset of the task's first value.
  int64_t offset(int64_t t) const { return ((image(t) * cb + block(t)) * hw + row0(t)) * bc; }
};

// Threads for the whole tensor: one for small ones (waking the team costs more), else all.
int threads_for(const bn_shape& s, int64_t tasks) {
  const double elems = (double)s.n * (double)s.blocks() * (double)s.hw * (double)s.bc;
  return elems < 32768.0 ? 1 : (int)std::max<int64_t>(1, std::min<int64_t>(num_threads(), tasks));
}

const void* at(const void* p, int64_t elems, bool bf16) {
  return p ? (const char*)p + elems * (bf16 ? 2 : 4) : nullptr;
}
void* at(void* p, int64_t elems, bool bf16) { return p ? (char*)p + elems * (bf16 ? 2 : 4) : nullptr; }

lane_rows rows_of(const bn_shape& s, const bn_tasks& tk, int64_t t) {
  lane_rows g;
  g.rows = tk.rows(t);
  g.width = s.bc;
  g.lanes = std::clamp<int64_t>(s.c - tk.block(t) * s.bc, 0, s.bc);
  g.bf16 = s.bf16;
  return g;
}

// Per-task sums of (x − shift) [and squares] over its rows, added per lane in task order into
// sum and sumsq (cb·bc doubles each; sumsq null: not computed).
void channel_sums(const bn_shape& s, const void* x, const double* shift, double* sum, double* sumsq) {
  const bn_tasks tk(s);
  const int64_t bc = s.bc;
  std::vector<double> ps((size_t)(tk.count * bc), 0.0), pq(sumsq ? (size_t)(tk.count * bc) : 0, 0.0);
#pragma omp parallel for schedule(static) num_threads(threads_for(s, tk.count))
  for (int64_t t = 0; t < tk.count; ++t)
    lane_moments(rows_of(s, tk, t), at(x, tk.offset(t), s.bf16), shift + tk.block(t) * bc, ps.data() + t * bc,
                 sumsq ? pq.data() + t * bc : nullptr);
  std::fill(sum, sum + tk.cb * bc, 0.0);
  if (sumsq) std::fill(sumsq, sumsq + tk.cb * bc, 0.0);
  for (int64_t t = 0; t < tk.count; ++t) {
    const int64_t j = tk.block(t) * bc;
    for (int64_t l = 0; l < bc; ++l) {
      sum[j + l] += ps[t * bc + l];
      if (sumsq) sumsq[j + l] += pq[t * bc + l];
    }
  }
}

float value(const void* p, int64_t i, bool bf16) {
  if (!bf16) return ((const float*)p)[i];
  const uint32_t u = (uint32_t)((const uint16_t*)p)[i] << 16;
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}

// The shift of `shifted`: per lane, the mean of up to 32 rows spread evenly over image 0.
std::vector<double> sample_shift(const bn_shape& s, const void* x) {
  const int64_t cb = s.blocks(), bc = s.bc, samples = std::min<int64_t>(s.hw, 32);
  std::vector<double> k((size_t)(cb * bc), 0.0);
  for (int64_t j = 0; j < cb; ++j)
    for (int64_t q = 0; q < samples; ++q) {
      const int64_t row = q * s.hw / samples;
      for (int64_t l = 0; l < bc; ++l) k[j * bc + l] += value(x, (j * s.hw + row) * bc + l, s.bf16);
    }
  for (double& v : k) v /= (double)samples;
  return k;
}

}  // namespace

void batch_norm_statistics(const bn_shape& s, const void* x, bn_statistics how, double* mean, double* var) {
  const int64_t cb = s.blocks(), bc = s.bc, width = cb * bc;
  const double m = (double)s.count();
  std::vector<double> shift, sum((size_t)width), sumsq((size_t)width);
  if (how == bn_statistics::two_pass) {
    shift.assign((size_t)width, 0.0);
    channel_sums(s, x, shift.data(), sum.data(), nullptr);
    for (int64_t i = 0; i < width; ++i) shift[i] = sum[i] / m;
  } else {
    shift = sample_shift(s, x);
  }
  channel_sums(s, x, shift.data(), sum.data(), sumsq.data());
  for (int64_t ch = 0; ch < s.c; ++ch) {
    const double d = sum[ch] / m;
    mean[ch] = shift[ch] + d;
    var[ch] = std::max(0.0, sumsq[ch] / m - d * d);
  }
}

void batch_norm_statistics_of_rows(const bn_shape& s, const double* moments, int64_t rows, double* mean, double* var) {
  const int64_t bc = s.bc, cb = s.blocks(), cols = s.hw / rows;
  for (int64_t ch = 0; ch < s.c; ++ch) {
    const int64_t j = ch / bc, l = ch % bc;
    double count = 0.0, mu = 0.0, m2 = 0.0;
    for (int64_t i = 0; i < s.n; ++i)
      for (int64_t r = 0; r < rows; ++r) {
        const double* m = moments + ((i * cb + j) * rows + r) * 2 * bc;
        const double nb = (double)cols, total = count + nb, delta = m[l] - mu;
        mu += delta * (nb / total);
        m2 += m[bc + l] + delta * delta * (count * nb / total);
        count = total;
      }
    mean[ch] = mu;
    var[ch] = std::max(0.0, m2 / count);
  }
}

void batch_norm_forward(const bn_shape& s, const void* x, const float* gamma, const float* beta, double eps,
                        const void* residual, bool relu, void* y, float* mean, float* var, bn_statistics how,
                        const double* moments, int64_t rows) {
  const int64_t width = s.blocks() * s.bc;
  std::vector<double> md((size_t)s.c), vd((size_t)s.c);
  if (moments)
    batch_norm_statistics_of_rows(s, moments, rows, md.data(), vd.data());
  else
    batch_norm_statistics(s, x, how, md.data(), vd.data());
  // The coefficients of lane_affine, zero in the padding channels.
  std::vector<float> cm((size_t)width, 0.0f), cs((size_t)width, 0.0f), cb((size_t)width, 0.0f);
  for (int64_t ch = 0; ch < s.c; ++ch) {
    const double invstd = 1.0 / std::sqrt(vd[ch] + eps);
    cm[ch] = (float)md[ch];
    cs[ch] = (float)((gamma ? (double)gamma[ch] : 1.0) * invstd);
    cb[ch] = beta ? beta[ch] : 0.0f;
    mean[ch] = (float)md[ch];
    var[ch] = (float)vd[ch];
  }
  const bn_tasks tk(s);
#pragma omp parallel for schedule(static) num_threads(threads_for(s, tk.count))
  for (int64_t t = 0; t < tk.count; ++t) {
    const int64_t o = tk.offset(t), j = tk.block(t) * s.bc;
    lane_affine_args a;
    a.x = at(x, o, s.bf16);
    a.r = at(residual, o, s.bf16);
    a.y = at(y, o, s.bf16);
    a.mean = cm.data() + j, a.scale = cs.data() + j, a.shift = cb.data() + j;
    a.relu = relu;
    lane_affine(rows_of(s, tk, t), a);
  }
}

void batch_norm_backward(const bn_shape& s, const void* grad_y, const void* x, const void* y, bool relu,
                         const float* gamma, const float* mean, const float* var, double eps, void* grad_x,
                         bool grad_x_bf16, float* grad_gamma, float* grad_beta, void* grad_residual) {
  const int64_t bc = s.bc, width = s.blocks() * bc;
  const double m = (double)s.count();
  const bn_tasks tk(s);
  const int threads = threads_for(s, tk.count);
  std::vector<double> mean_d((size_t)width, 0.0);
  for (int64_t ch = 0; ch < s.c; ++ch) mean_d[ch] = mean[ch];

  // Pass 1: Σg and Σg·(x − mean) per task, then per channel in task order.
  std::vector<double> ps((size_t)(tk.count * bc), 0.0), pd((size_t)(tk.count * bc), 0.0);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t t = 0; t < tk.count; ++t) {
    const int64_t o = tk.offset(t);
    lane_grad_args a;
    a.dy = at(grad_y, o, s.bf16);
    a.y = relu ? at(y, o, s.bf16) : nullptr;
    a.x = at(x, o, s.bf16);
    a.mean_d = mean_d.data() + tk.block(t) * bc;
    a.sum = ps.data() + t * bc, a.dot = pd.data() + t * bc;
    a.g_out = at(grad_residual, o, s.bf16);
    lane_grad_moments(rows_of(s, tk, t), a);
  }
  std::vector<double> sum((size_t)width, 0.0), dot((size_t)width, 0.0);
  for (int64_t t = 0; t < tk.count; ++t)
    for (int64_t l = 0; l < bc; ++l) {
      sum[tk.block(t) * bc + l] += ps[t * bc + l];
      dot[tk.block(t) * bc + l] += pd[t * bc + l];
    }

  // dx = A·g + B·(x − mean) + C with A = γ·invstd, B = −A·invstd·dγ/M, C = −A·dβ/M.
  std::vector<float> cm((size_t)width, 0.0f), ca((size_t)width, 0.0f), cc((size_t)width, 0.0f),
      cd((size_t)width, 0.0f);
  for (int64_t ch = 0; ch < s.c; ++ch) {
    const double invstd = 1.0 / std::sqrt((double)var[ch] + eps), dbeta = sum[ch], dgamma = dot[ch] * invstd;
    const double a = (gamma ? (double)gamma[ch] : 1.0) * invstd;
    cm[ch] = mean[ch];
    ca[ch] = (float)a;
    cc[ch] = (float)(-a * invstd * dgamma / m);
    cd[ch] = (float)(-a * dbeta / m);
    if (grad_gamma) grad_gamma[ch] = (float)dgamma;
    if (grad_beta) grad_beta[ch] = (float)dbeta;
  }
  if (!grad_x) return;

  // Pass 2: g again (from grad_residual when pass 1 wrote it: one read instead of two).
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t t = 0; t < tk.count; ++t) {
    const int64_t o = tk.offset(t), j = tk.block(t) * bc;
    lane_grad_args a;
    a.dy = grad_residual ? at(grad_residual, o, s.bf16) : at(grad_y, o, s.bf16);
    a.y = relu && !grad_residual ? at(y, o, s.bf16) : nullptr;
    a.x = at(x, o, s.bf16);
    a.mean = cm.data() + j, a.a = ca.data() + j, a.c = cc.data() + j, a.d = cd.data() + j;
    a.dx = at(grad_x, o, grad_x_bf16);
    a.dx_bf16 = grad_x_bf16;
    lane_grad_affine(rows_of(s, tk, t), a);
  }
}

}  // namespace brgemm::layers
