// Tests of the CPU op set (backend/ops.h). Every forward is checked against a direct formula
// evaluated in double; every backward against central finite differences of a double
// reference forward, for the scalar loss L = sum(out * R) with random R. The differences are
// taken in double (step 1e-5), so they are exact to about 1e-10 and the tolerances below
// measure only the float ops' own error: |got - want| <= rel * |want| + abs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "backend/cpu/vec_math.h"
#include "backend/ops.h"
#include "core/bf16.h"
#include "core/rng.h"

namespace relora {
namespace {

using Floats = std::vector<float>;
using Doubles = std::vector<double>;
using Indices = std::vector<int64_t>;

struct Tolerance {
  double rel, abs;
};
// Float forwards (exp to 2 ulp, short float sums) against double formulas; the worst case
// seen is about 1/6 of the bound, most are under 1/50.
constexpr Tolerance kForwardTol{1e-5, 1e-6};
// Float backwards against exact gradients: a few float roundings on O(1) values; the worst
// case seen is about 1/25 of the bound.
constexpr Tolerance kGradTol{1e-5, 1e-6};
// A float sum of `terms` O(1) products that may cancel (a gemm over K, a weight gradient over
// N rows): its absolute error grows with the number of terms. The worst case seen is about
// 1/6 of the bound, in an unvectorised (sanitizer) build.
Tolerance summed_tol(int64_t terms) { return {1e-5, 2e-7 * static_cast<double>(terms)}; }

Floats random_floats(size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  Floats x(n);
  fill_uniform(x.data(), static_cast<int64_t>(n), lo, hi, RngKey{seed, RngPurpose::test, 0, 0});
  return x;
}

Doubles to_doubles(const Floats& x) { return Doubles(x.begin(), x.end()); }

double weighted_sum(const Doubles& out, const Floats& weights) {
  double sum = 0.0;
  for (size_t i = 0; i < out.size(); ++i) sum += out[i] * weights[i];
  return sum;
}

// Indices 0..n-1, or `count` of them spread over [0, n) when the full set would be slow.
Indices sample_indices(int64_t n, int64_t count) {
  Indices indices;
  const int64_t stride = std::max<int64_t>(1, n / std::max<int64_t>(1, count));
  for (int64_t i = 0; i < n; i += stride) indices.push_back(i);
  if (indices.back() != n - 1) indices.push_back(n - 1);
  return indices;
}
Indices all_indices(int64_t n) { return sample_indices(n, n); }

// Central differences d loss / d x[i] for i in `indices` (other entries stay 0).
Doubles numeric_grad(const std::function<double(const Doubles&)>& loss, Doubles x,
                     const Indices& indices) {
  constexpr double kStep = 1e-5;
  Doubles grad(x.size(), 0.0);
  for (int64_t i : indices) {
    const double saved = x[i];
    x[i] = saved + kStep;
    const double up = loss(x);
    x[i] = saved - kStep;
    const double down = loss(x);
    x[i] = saved;
    grad[i] = (up - down) / (2 * kStep);
  }
  return grad;
}

// got[i] against want[i] for i in `indices`; reports the first few misses.
void expect_close(const float* got, const Doubles& want, const Indices& indices, Tolerance tol,
                  const std::string& what) {
  int misses = 0;
  for (int64_t i : indices) {
    const double bound = tol.rel * std::fabs(want[i]) + tol.abs;
    if (!(std::fabs(got[i] - want[i]) <= bound) && ++misses <= 5) {
      ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << ", want " << want[i] << " (bound "
                    << bound << ")";
    }
  }
  EXPECT_EQ(misses, 0) << what << ": " << misses << " of " << indices.size() << " out of bounds";
}
void expect_close(const Floats& got, const Doubles& want, Tolerance tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  expect_close(got.data(), want, all_indices(static_cast<int64_t>(got.size())), tol, what);
}

// ---- double references -------------------------------------------------------------------

// out(N,C), rstd(N) of RMSNorm
Doubles ref_rmsnorm(const Doubles& x, const Doubles& w, int N, int C, double eps,
                    Doubles* rstd = nullptr) {
  Doubles out(x.size());
  for (int n = 0; n < N; ++n) {
    double sum_sq = 0.0;
    for (int c = 0; c < C; ++c) sum_sq += x[n * C + c] * x[n * C + c];
    const double r = 1.0 / std::sqrt(sum_sq / C + eps);
    if (rstd != nullptr) rstd->push_back(r);
    for (int c = 0; c < C; ++c) out[n * C + c] = x[n * C + c] * r * w[c];
  }
  return out;
}

// RoPE of x(B,T,H,D), angles straight from the formula
Doubles ref_rope(const Doubles& x, int B, int T, int H, int D, double theta) {
  Doubles out(x.size());
  const int half = D / 2;
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int h = 0; h < H; ++h)
        for (int i = 0; i < half; ++i) {
          const double angle = t * std::pow(theta, -2.0 * i / D);
          const int64_t base = ((static_cast<int64_t>(b) * T + t) * H + h) * D;
          const double a = x[base + i], c = x[base + i + half];
          out[base + i] = a * std::cos(angle) - c * std::sin(angle);
          out[base + i + half] = c * std::cos(angle) + a * std::sin(angle);
        }
  return out;
}

// Causal attention of q,k,v(B,T,H,D) -> out(B,T,H,D), att(B,H,T,T)
Doubles ref_attention(const Doubles& q, const Doubles& k, const Doubles& v, int B, int T, int H,
                      int D, Doubles* att = nullptr) {
  const int C = H * D;
  Doubles out(q.size(), 0.0);
  if (att != nullptr) att->assign(static_cast<size_t>(B) * H * T * T, 0.0);
  Doubles scores(T);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < T; ++t) {
        const double* q_row = &q[(static_cast<int64_t>(b) * T + t) * C + h * D];
        double max_score = -INFINITY;
        for (int j = 0; j <= t; ++j) {
          const double* k_row = &k[(static_cast<int64_t>(b) * T + j) * C + h * D];
          double dot = 0.0;
          for (int d = 0; d < D; ++d) dot += q_row[d] * k_row[d];
          scores[j] = dot / std::sqrt(static_cast<double>(D));
          max_score = std::max(max_score, scores[j]);
        }
        double sum = 0.0;
        for (int j = 0; j <= t; ++j) sum += std::exp(scores[j] - max_score);
        double* out_row = &out[(static_cast<int64_t>(b) * T + t) * C + h * D];
        for (int j = 0; j <= t; ++j) {
          const double p = std::exp(scores[j] - max_score) / sum;
          if (att != nullptr) (*att)[((static_cast<int64_t>(b) * H + h) * T + t) * T + j] = p;
          const double* v_row = &v[(static_cast<int64_t>(b) * T + j) * C + h * D];
          for (int d = 0; d < D; ++d) out_row[d] += p * v_row[d];
        }
      }
  return out;
}

Doubles ref_swiglu(const Doubles& g, const Doubles& u) {
  Doubles out(g.size());
  for (size_t i = 0; i < g.size(); ++i) out[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
  return out;
}

// losses(N) = log sum_j exp(logits[n, j]) - logits[n, target]
Doubles ref_cross_entropy(const Doubles& logits, const std::vector<int32_t>& targets, int N,
                          int V) {
  Doubles losses(N);
  for (int n = 0; n < N; ++n) {
    const double* row = &logits[static_cast<int64_t>(n) * V];
    const double max_logit = *std::max_element(row, row + V);
    double sum = 0.0;
    for (int j = 0; j < V; ++j) sum += std::exp(row[j] - max_logit);
    losses[n] = std::log(sum) + max_logit - row[targets[n]];
  }
  return losses;
}

class CpuOpsTest : public ::testing::Test {
 protected:
  std::unique_ptr<Ops> ops = make_cpu_ops();
};

// ---- tests -------------------------------------------------------------------------------

TEST(CpuVecMath, ExpApproxIsAccurateAndSaturates) {
  double worst_rel = 0.0;
  for (float x = -87.0f; x <= 88.0f; x += 0.01234f) {
    const double want = std::exp(static_cast<double>(x));
    worst_rel = std::max(worst_rel, std::fabs(cpu::exp_approx(x) - want) / want);
  }
  EXPECT_LE(worst_rel, 2.5e-7);  // 4 ulp
  EXPECT_EQ(cpu::exp_approx(0.0f), 1.0f);
  EXPECT_EQ(cpu::exp_approx(-89.0f), 0.0f);
  EXPECT_EQ(cpu::exp_approx(-INFINITY), 0.0f);
  EXPECT_TRUE(std::isfinite(cpu::exp_approx(1000.0f)));
}

TEST_F(CpuOpsTest, GemmAllTransposesWithStridesAndBeta) {
  const float alpha = 0.75f, beta = 0.5f;
  struct Size {
    int M, N, K;
  };
  for (Size size : {Size{6, 5, 4}, Size{67, 45, 33}}) {
    const int M = size.M, N = size.N, K = size.K;
    for (bool trans_a : {false, true}) {
      for (bool trans_b : {false, true}) {
        // stored shapes: A (M,K) or (K,M); B (K,N) or (N,K); every row padded
        const int a_rows = trans_a ? K : M, lda = (trans_a ? M : K) + 3;
        const int b_rows = trans_b ? N : K, ldb = (trans_b ? K : N) + 2;
        const int ldc = N + 5;
        const Floats A = random_floats(static_cast<size_t>(a_rows) * lda, 1);
        const Floats B = random_floats(static_cast<size_t>(b_rows) * ldb, 2);
        const Floats C0 = random_floats(static_cast<size_t>(M) * ldc, 3);
        Floats C = C0;
        ASSERT_FALSE(ops->products_on_words());  // fp32 sgemm: no bf16 copies
        ops->gemm(trans_a, trans_b, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(),
                  ldc);
        Doubles want(C.size());
        for (int i = 0; i < M; ++i) {
          for (int j = 0; j < ldc; ++j) {
            if (j >= N) {  // padding stays untouched
              want[i * ldc + j] = C0[i * ldc + j];
              continue;
            }
            double dot = 0.0;
            for (int p = 0; p < K; ++p) {
              const double a = trans_a ? A[p * lda + i] : A[i * lda + p];
              const double b = trans_b ? B[j * ldb + p] : B[p * ldb + j];
              dot += a * b;
            }
            want[i * ldc + j] = alpha * dot + beta * C0[i * ldc + j];
          }
        }
        expect_close(C, want, summed_tol(K),
                     "gemm " + std::to_string(M) + "x" + std::to_string(N) + "x" +
                         std::to_string(K) + (trans_a ? " A^T" : " A") + (trans_b ? " B^T" : " B"));
      }
    }
  }
}

TEST_F(CpuOpsTest, GemmBetaZeroIgnoresOldContentsAndEmptyKScales) {
  const Floats A = {1, 2, 3, 4}, B = {5, 6, 7, 8};  // (2,2) each
  Floats C(4, NAN);
  ops->gemm(false, false, 2, 2, 2, 1.0f, A.data(), 2, B.data(), 2, 0.0f, C.data(), 2);
  EXPECT_EQ(C, (Floats{19, 22, 43, 50}));
  ops->gemm(false, false, 2, 2, 0, 1.0f, A.data(), 1, B.data(), 2, 0.5f, C.data(), 2);
  EXPECT_EQ(C, (Floats{9.5f, 11, 21.5f, 25}));
}

TEST_F(CpuOpsTest, EmbeddingForwardCopiesRowsAndBackwardAccumulatesRepeats) {
  const int V = 7, C = 5;
  const std::vector<int32_t> tokens = {3, 1, 3, 0, 6, 3, 1, 2};
  const int N = static_cast<int>(tokens.size());
  const Floats table = random_floats(V * C, 10);
  Floats out(N * C);
  ops->embedding_forward(out.data(), tokens.data(), table.data(), N, C);
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c) EXPECT_EQ(out[n * C + c], table[tokens[n] * C + c]);

  const Floats R = random_floats(N * C, 11);
  const Floats d_table_before = random_floats(V * C, 12);
  Floats d_table = d_table_before;
  std::vector<int32_t> order(tokens.size());
  token_order(order.data(), tokens.data(), N);
  EXPECT_EQ(order, (std::vector<int32_t>{3, 1, 6, 7, 0, 2, 5, 4}));  // by token, ties by position
  ops->embedding_backward(d_table.data(), R.data(), tokens.data(), order.data(), N, C);
  auto loss = [&](const Doubles& table_d) {
    Doubles gathered(N * C);
    for (int n = 0; n < N; ++n)
      for (int c = 0; c < C; ++c) gathered[n * C + c] = table_d[tokens[n] * C + c];
    return weighted_sum(gathered, R);
  };
  Doubles want = numeric_grad(loss, to_doubles(table), all_indices(V * C));
  for (int i = 0; i < V * C; ++i) want[i] += d_table_before[i];  // += semantics
  expect_close(d_table, want, kGradTol, "d_table");
}

// Above the single-thread threshold threads take different tokens' runs; each token's rows
// are still added in position order, so the result is the plain loop's bit for bit.
TEST_F(CpuOpsTest, ScattersOverThreadsAddInPositionOrder) {
  const int V = 5, C = 2100, N = 24, r = 1500;
  std::vector<int32_t> tokens(N), order(N);
  for (int n = 0; n < N; ++n) tokens[n] = (n * 3) % V;
  token_order(order.data(), tokens.data(), N);
  const Floats d_out = random_floats(static_cast<size_t>(N) * C, 13);
  Floats d_table(static_cast<size_t>(V) * C, 1.0f);
  ops->embedding_backward(d_table.data(), d_out.data(), tokens.data(), order.data(), N, C);
  Floats want(d_table.size(), 1.0f);
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c) want[tokens[n] * C + c] += d_out[n * C + c];
  EXPECT_EQ(d_table, want);

  const Floats d_cols = random_floats(static_cast<size_t>(N) * r, 14);
  Floats d_a = random_floats(static_cast<size_t>(r) * V, 15), want_a = d_a;
  ops->scatter_add_columns(d_a.data(), d_cols.data(), tokens.data(), order.data(), N, r, V);
  for (int n = 0; n < N; ++n)
    for (int j = 0; j < r; ++j) want_a[j * V + tokens[n]] += d_cols[n * r + j];
  EXPECT_EQ(d_a, want_a);
}

TEST_F(CpuOpsTest, RmsnormForwardAndBackward) {
  const float eps = 1e-5f;
  struct Size {
    int N, C;
    int64_t checked;  // finite-difference entries per gradient
  };
  for (Size size : {Size{4, 6, 24}, Size{64, 600, 40}}) {  // the second runs on many threads
    const int N = size.N, C = size.C;
    const Floats x = random_floats(static_cast<size_t>(N) * C, 20);
    const Floats w = random_floats(C, 21, 0.5f, 1.5f);
    Floats out(x.size()), rstd(N);
    ops->rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, eps);
    Doubles want_rstd;
    const Doubles want_out = ref_rmsnorm(to_doubles(x), to_doubles(w), N, C, eps, &want_rstd);
    expect_close(out, want_out, kForwardTol, "rmsnorm out");
    expect_close(rstd, want_rstd, kForwardTol, "rmsnorm rstd");

    const Floats R = random_floats(x.size(), 22);
    const Floats dw_before = random_floats(C, 23);
    Floats dx(x.size()), dw = dw_before;
    ops->rmsnorm_backward(dx.data(), dw.data(), R.data(), x.data(), w.data(), rstd.data(), N, C);
    const Indices x_checked = sample_indices(N * C, size.checked);
    const Indices w_checked = sample_indices(C, size.checked);
    const Doubles want_dx = numeric_grad(
        [&](const Doubles& xd) {
          return weighted_sum(ref_rmsnorm(xd, to_doubles(w), N, C, eps), R);
        },
        to_doubles(x), x_checked);
    expect_close(dx.data(), want_dx, x_checked, kGradTol, "rmsnorm dx");
    Doubles want_dw = numeric_grad(
        [&](const Doubles& wd) {
          return weighted_sum(ref_rmsnorm(to_doubles(x), wd, N, C, eps), R);
        },
        to_doubles(w), w_checked);
    for (int c = 0; c < C; ++c) want_dw[c] += dw_before[c];
    expect_close(dw.data(), want_dw, w_checked, summed_tol(N), "rmsnorm dw");

    // frozen weight: no dw, the same dx
    Floats dx_frozen(x.size());
    ops->rmsnorm_backward(dx_frozen.data(), nullptr, R.data(), x.data(), w.data(), rstd.data(), N,
                          C);
    EXPECT_EQ(dx_frozen, dx);
  }
}

TEST_F(CpuOpsTest, RopeTablesMatchFormula) {
  const int T = 9, D = 8;
  const float theta = 10000.0f;
  Floats cos(T * D / 2), sin(T * D / 2);
  rope_tables(cos.data(), sin.data(), T, D, theta);
  Doubles want_cos(cos.size()), want_sin(sin.size());
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < D / 2; ++i) {
      const double angle = t * std::pow(static_cast<double>(theta), -2.0 * i / D);
      want_cos[t * D / 2 + i] = std::cos(angle);
      want_sin[t * D / 2 + i] = std::sin(angle);
    }
  expect_close(cos, want_cos, {0.0, 1e-7}, "cos");
  expect_close(sin, want_sin, {0.0, 1e-7}, "sin");
}

TEST_F(CpuOpsTest, RopeForwardMatchesFormulaAndBackwardIsItsTranspose) {
  const int B = 2, T = 5, H = 3, D = 8;
  const double theta = 100.0;  // angles of several radians in every pair
  Floats cos(T * D / 2), sin(T * D / 2);
  rope_tables(cos.data(), sin.data(), T, D, static_cast<float>(theta));
  const Floats x = random_floats(static_cast<size_t>(B) * T * H * D, 30);

  Floats rotated = x;
  ops->rope_forward(rotated.data(), cos.data(), sin.data(), B, T, H, D);
  expect_close(rotated, ref_rope(to_doubles(x), B, T, H, D, theta), kForwardTol, "rope out");

  const Floats R = random_floats(x.size(), 31);
  Floats dx = R;
  ops->rope_backward(dx.data(), cos.data(), sin.data(), B, T, H, D);
  const Doubles want_dx = numeric_grad(
      [&](const Doubles& xd) { return weighted_sum(ref_rope(xd, B, T, H, D, theta), R); },
      to_doubles(x), all_indices(static_cast<int64_t>(x.size())));
  expect_close(dx, want_dx, kGradTol, "rope dx");

  // a rotation's transpose is its inverse
  Floats round_trip = rotated;
  ops->rope_backward(round_trip.data(), cos.data(), sin.data(), B, T, H, D);
  expect_close(round_trip, to_doubles(x), {0.0, 1e-6}, "rope backward(forward(x))");
}

// Attention forward (out and probabilities) against the reference and its backward against
// finite differences on `checked` entries of each of q, k, v.
void check_attention(Ops& ops, int B, int T, int H, int D, int64_t checked) {
  const size_t n = static_cast<size_t>(B) * T * H * D;
  const Floats q = random_floats(n, 40), k = random_floats(n, 41), v = random_floats(n, 42);
  Floats out(n), att(static_cast<size_t>(B) * H * T * T, -1.0f);
  ops.attention_forward(out.data(), att.data(), q.data(), k.data(), v.data(), nullptr, B, T, H, D);
  Doubles want_att;
  const Doubles qd = to_doubles(q), kd = to_doubles(k), vd = to_doubles(v);
  expect_close(out, ref_attention(qd, kd, vd, B, T, H, D, &want_att), kForwardTol, "attention out");
  expect_close(att, want_att, kForwardTol, "attention probabilities");
  for (int bh = 0; bh < B * H; ++bh)
    for (int t = 0; t < T; ++t)
      for (int j = t + 1; j < T; ++j)
        ASSERT_EQ(att[(static_cast<int64_t>(bh) * T + t) * T + j], 0.0f) << "above the diagonal";

  const Floats R = random_floats(n, 43);
  Floats dq(n), dk(n), dv(n), scratch(ops.attention_scratch_floats(B, T, H, D));
  ops.attention_backward(dq.data(), dk.data(), dv.data(), R.data(), out.data(), att.data(),
                         q.data(), k.data(), v.data(), scratch.data(), B, T, H, D);
  const Indices sampled = sample_indices(static_cast<int64_t>(n), checked);
  const Doubles want_dq = numeric_grad(
      [&](const Doubles& x) { return weighted_sum(ref_attention(x, kd, vd, B, T, H, D), R); }, qd,
      sampled);
  const Doubles want_dk = numeric_grad(
      [&](const Doubles& x) { return weighted_sum(ref_attention(qd, x, vd, B, T, H, D), R); }, kd,
      sampled);
  const Doubles want_dv = numeric_grad(
      [&](const Doubles& x) { return weighted_sum(ref_attention(qd, kd, x, B, T, H, D), R); }, vd,
      sampled);
  expect_close(dq.data(), want_dq, sampled, kGradTol, "attention dq");
  expect_close(dk.data(), want_dk, sampled, kGradTol, "attention dk");
  expect_close(dv.data(), want_dv, sampled, kGradTol, "attention dv");
}

TEST_F(CpuOpsTest, AttentionSmall) { check_attention(*ops, 2, 5, 2, 4, 2 * 5 * 2 * 4); }

TEST_F(CpuOpsTest, AttentionSpanningSeveralCausalBlocks) {
  check_attention(*ops, 1, 150, 2, 8, 24);
}

TEST_F(CpuOpsTest, AttentionIsCausal) {
  const int B = 2, T = 5, H = 2, D = 4, C = H * D;
  const size_t n = static_cast<size_t>(B) * T * C;
  const Floats q = random_floats(n, 50), k = random_floats(n, 51), v = random_floats(n, 52);
  Floats out(n), att(static_cast<size_t>(B) * H * T * T);
  ops->attention_forward(out.data(), att.data(), q.data(), k.data(), v.data(), nullptr, B, T, H, D);
  // change the last position's keys and values in every sequence and head
  Floats k2 = k, v2 = v;
  for (int b = 0; b < B; ++b)
    for (int c = 0; c < C; ++c) {
      k2[(b * T + T - 1) * C + c] += 3.0f;
      v2[(b * T + T - 1) * C + c] -= 2.0f;
    }
  Floats out2(n);
  ops->attention_forward(out2.data(), att.data(), q.data(), k2.data(), v2.data(), nullptr, B, T, H, D);
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T - 1; ++t)
      for (int c = 0; c < C; ++c)
        EXPECT_EQ(out2[(b * T + t) * C + c], out[(b * T + t) * C + c]) << "b=" << b << " t=" << t;
    bool last_changed = false;
    for (int c = 0; c < C; ++c)
      last_changed |= out2[(b * T + T - 1) * C + c] != out[(b * T + T - 1) * C + c];
    EXPECT_TRUE(last_changed);
  }
}

TEST_F(CpuOpsTest, SwigluForwardAndBackward) {
  const int64_t n = 37;
  const Floats g = random_floats(n, 60, -6.0f, 6.0f), u = random_floats(n, 61, -2.0f, 2.0f);
  Floats out(n);
  ops->swiglu_forward(out.data(), g.data(), u.data(), n);
  expect_close(out, ref_swiglu(to_doubles(g), to_doubles(u)), kForwardTol, "swiglu out");

  const Floats R = random_floats(n, 62);
  Floats dg(n), du(n);
  ops->swiglu_backward(dg.data(), du.data(), R.data(), g.data(), u.data(), n);
  const Doubles want_dg = numeric_grad(
      [&](const Doubles& gd) { return weighted_sum(ref_swiglu(gd, to_doubles(u)), R); },
      to_doubles(g), all_indices(n));
  const Doubles want_du = numeric_grad(
      [&](const Doubles& ud) { return weighted_sum(ref_swiglu(to_doubles(g), ud), R); },
      to_doubles(u), all_indices(n));
  expect_close(dg, want_dg, kGradTol, "swiglu dg");
  expect_close(du, want_du, kGradTol, "swiglu du");

  // many threads, and gates far in both tails
  const int64_t big = 40000;
  Floats g_big = random_floats(big, 63, -120.0f, 120.0f), u_big = random_floats(big, 64);
  Floats out_big(big);
  ops->swiglu_forward(out_big.data(), g_big.data(), u_big.data(), big);
  expect_close(out_big, ref_swiglu(to_doubles(g_big), to_doubles(u_big)), kForwardTol,
               "swiglu out, wide gates");
}

TEST_F(CpuOpsTest, CrossEntropyLossAndGradient) {
  const int N = 4, V = 11;
  const float d_loss_scale = 0.25f;
  const std::vector<int32_t> targets = {3, 0, 10, 7};
  Floats logits = random_floats(N * V, 70, -3.0f, 3.0f);
  for (int j = 0; j < V; ++j) logits[2 * V + j] += 1000.0f;  // needs the max subtraction
  const Doubles want_losses = ref_cross_entropy(to_doubles(logits), targets, N, V);

  Floats losses(N), d_logits(N * V);
  const double total = ops->cross_entropy(d_logits.data(), losses.data(), logits.data(),
                                          targets.data(), N, V, d_loss_scale);
  expect_close(losses, want_losses, kForwardTol, "losses");
  double want_total = 0.0;
  for (double loss : want_losses) want_total += loss;
  EXPECT_NEAR(total, want_total, 1e-5 * want_total);

  const Doubles want_d = numeric_grad(
      [&](const Doubles& x) {
        double sum = 0.0;
        for (double loss : ref_cross_entropy(x, targets, N, V)) sum += d_loss_scale * loss;
        return sum;
      },
      to_doubles(logits), all_indices(N * V));
  expect_close(d_logits, want_d, kGradTol, "d_logits");

  // without a gradient: the same losses
  Floats losses_only(N);
  EXPECT_NEAR(ops->cross_entropy(nullptr, losses_only.data(), logits.data(), targets.data(), N, V,
                                 d_loss_scale),
              total, 1e-6 * total);
  expect_close(losses_only, to_doubles(losses), {1e-6, 0.0}, "losses without gradient");

  // d_logits aliasing logits: the same gradient, in place
  Floats in_place = logits, losses_in_place(N);
  ops->cross_entropy(in_place.data(), losses_in_place.data(), in_place.data(), targets.data(), N, V,
                     d_loss_scale);
  EXPECT_EQ(in_place, d_logits);
  EXPECT_EQ(losses_in_place, losses);
}

TEST_F(CpuOpsTest, CrossEntropyLargeVocabularyOnManyThreads) {
  const int N = 8, V = 5000;
  const float d_loss_scale = 1.0f / N;
  std::vector<int32_t> targets(N);
  for (int n = 0; n < N; ++n) targets[n] = (n * 977) % V;
  const Floats logits = random_floats(static_cast<size_t>(N) * V, 71, -8.0f, 8.0f);
  Floats losses(N), d_logits(logits.size());
  ops->cross_entropy(d_logits.data(), losses.data(), logits.data(), targets.data(), N, V,
                     d_loss_scale);
  const Doubles logits_d = to_doubles(logits);
  expect_close(losses, ref_cross_entropy(logits_d, targets, N, V), kForwardTol, "losses");
  // d_logits = (softmax - onehot) * scale, straight from the definition
  Doubles want_d(logits.size());
  for (int n = 0; n < N; ++n) {
    const double* row = &logits_d[static_cast<int64_t>(n) * V];
    const double max_logit = *std::max_element(row, row + V);
    double sum = 0.0;
    for (int j = 0; j < V; ++j) sum += std::exp(row[j] - max_logit);
    for (int j = 0; j < V; ++j)
      want_d[n * V + j] = (std::exp(row[j] - max_logit) / sum - (j == targets[n])) * d_loss_scale;
  }
  expect_close(d_logits, want_d, {1e-4, 1e-9}, "d_logits");
}

// Two tensors in one call, each with its own decay and step count: one thread and many.
TEST_F(CpuOpsTest, AdamwMatchesScalarReferenceOverThreeSteps) {
  const float lr = 1e-2f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  const int64_t sizes[2] = {37, 40003};
  const float decays[2] = {0.1f, 0.0f};
  const int64_t first_step[2] = {1, 5};  // the second tensor has been updated 4 times before
  Floats param[2], m[2], v[2];
  Doubles want_param[2], want_m[2], want_v[2];
  for (int t = 0; t < 2; ++t) {
    param[t] = random_floats(sizes[t], 80 + t);
    m[t] = v[t] = Floats(sizes[t], 0.0f);
    want_param[t] = to_doubles(param[t]);
    want_m[t] = want_v[t] = Doubles(sizes[t], 0.0);
  }
  for (int64_t update = 0; update < 3; ++update) {
    Floats grad[2];
    std::vector<AdamwTensor> tensors;
    for (int t = 0; t < 2; ++t) {
      grad[t] = random_floats(sizes[t], 90 + 2 * update + t);
      tensors.push_back({param[t].data(), grad[t].data(), m[t].data(), v[t].data(), sizes[t],
                         decays[t], first_step[t] + update});
    }
    ops->adamw(tensors, {lr, beta1, beta2, eps});
    for (int t = 0; t < 2; ++t) {
      const int64_t step = first_step[t] + update;
      for (int64_t i = 0; i < sizes[t]; ++i) {
        want_m[t][i] = beta1 * want_m[t][i] + (1.0 - beta1) * grad[t][i];
        want_v[t][i] = beta2 * want_v[t][i] + (1.0 - beta2) * grad[t][i] * grad[t][i];
        const double m_hat = want_m[t][i] / (1.0 - std::pow(double{beta1}, step));
        const double v_hat = want_v[t][i] / (1.0 - std::pow(double{beta2}, step));
        want_param[t][i] -=
            lr * (m_hat / (std::sqrt(v_hat) + eps) + decays[t] * want_param[t][i]);
      }
    }
  }
  for (int t = 0; t < 2; ++t) {
    const std::string tag = " (tensor " + std::to_string(t) + ")";
    expect_close(m[t], want_m[t], kForwardTol, "adam m" + tag);
    expect_close(v[t], want_v[t], kForwardTol, "adam v" + tag);
    // an update is lr * O(1); its float error is a few ulp of lr
    expect_close(param[t], want_param[t], {1e-6, 1e-7}, "adamw param" + tag);
  }
}

// Magnitudes from {0, 1, 2, 3} with both signs: many ties at every threshold.
TEST_F(CpuOpsTest, PruneSmallestZeroesExactlyKTiesInIndexOrder) {
  const int64_t n = 1000;
  Floats m0(n);
  for (int64_t i = 0; i < n; ++i)
    m0[i] = static_cast<float>((i * 7919) % 4) * ((i % 3) ? 1.0f : -1.0f);
  for (int64_t k : {int64_t{0}, int64_t{1}, int64_t{250}, int64_t{251}, int64_t{600},
                    int64_t{999}, n}) {
    Floats m = m0, v(n);
    for (int64_t i = 0; i < n; ++i) v[i] = 1.0f + static_cast<float>(i);
    ops->prune_smallest(m.data(), v.data(), n, k);
    // the k zeroed: every |m| below the (k+1)-th smallest, then the ties in index order
    Floats sorted_magnitude(n);
    for (int64_t i = 0; i < n; ++i) sorted_magnitude[i] = std::fabs(m0[i]);
    std::sort(sorted_magnitude.begin(), sorted_magnitude.end());
    const float threshold = k > 0 ? sorted_magnitude[k - 1] : -1.0f;
    int64_t ties_left = k;
    for (int64_t i = 0; i < n; ++i) ties_left -= std::fabs(m0[i]) < threshold;
    for (int64_t i = 0; i < n; ++i) {
      const float a = std::fabs(m0[i]);
      const bool zeroed = a < threshold || (a == threshold && ties_left-- > 0);
      ASSERT_EQ(m[i], zeroed ? 0.0f : m0[i]) << "k=" << k << " i=" << i;
      ASSERT_EQ(v[i], zeroed ? 0.0f : 1.0f + static_cast<float>(i)) << "k=" << k << " i=" << i;
    }
  }
}

// A diverged run's moments: NaN ranks above infinity, infinity above every number, and -0
// ties with +0, so pruning stays a selection over a total order (the CUDA one's).
TEST_F(CpuOpsTest, PruneSmallestOrdersNonFiniteMomentsAboveNumbers) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const Floats m0 = {nan, 1.0f, -inf, -0.0f, 2.0f, -nan, inf, 0.0f, -3.0f};
  // k -> indices left alone
  const std::vector<std::pair<int64_t, std::vector<int>>> cases = {
      {2, {0, 1, 2, 4, 5, 6, 8}}, {5, {0, 2, 5, 6}}, {7, {0, 5}}, {8, {5}}, {9, {}}};
  for (const auto& [k, kept] : cases) {
    Floats m = m0, v(m0.size(), 1.0f);
    ops->prune_smallest(m.data(), v.data(), static_cast<int64_t>(m.size()), k);
    for (int i = 0; i < static_cast<int>(m.size()); ++i) {
      const bool keep = std::find(kept.begin(), kept.end(), i) != kept.end();
      if (keep) {
        EXPECT_EQ(std::memcmp(&m[i], &m0[i], sizeof(float)), 0) << "k=" << k << " i=" << i;
        EXPECT_EQ(v[i], 1.0f) << "k=" << k << " i=" << i;
      } else {
        EXPECT_EQ(m[i], 0.0f) << "k=" << k << " i=" << i;
        EXPECT_EQ(v[i], 0.0f) << "k=" << k << " i=" << i;
      }
    }
  }
}

TEST_F(CpuOpsTest, SumSquaresScaleAxpy) {
  const int64_t n = 100003;
  const Floats x = random_floats(n, 90, -2.0f, 2.0f), y = random_floats(n, 91);
  double want_sum = 0.0;
  for (float value : x) want_sum += static_cast<double>(value) * value;
  EXPECT_NEAR(ops->sum_squares(x.data(), n), want_sum, 1e-12 * want_sum);

  Floats scaled = x;
  ops->scale(scaled.data(), n, -0.3f);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(scaled[i], x[i] * -0.3f) << i;

  Floats updated = y;
  ops->axpy(updated.data(), x.data(), n, 0.7f);
  Doubles want_axpy(n);
  for (int64_t i = 0; i < n; ++i) want_axpy[i] = y[i] + 0.7 * x[i];
  expect_close(updated, want_axpy, {1e-6, 1e-7}, "axpy");
}

// Rounding to nearest with ties to even, specials kept; widening is exact, so every bf16
// word survives the round trip.
TEST_F(CpuOpsTest, Bf16ConversionsRoundToNearestEven) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float one_ulp = std::ldexp(1.0f, -7);  // bf16's spacing at 1
  // (value, bf16 word): exact; below/above the halfway point; ties to even (down from an
  // even word, up from an odd one); overflow to inf; signed zero; a subnormal; inf.
  const std::vector<std::pair<float, uint16_t>> cases = {
      {1.0f, 0x3f80},
      {1.0f + 0.49f * one_ulp, 0x3f80},
      {1.0f + 0.51f * one_ulp, 0x3f81},
      {1.0f + 0.5f * one_ulp, 0x3f80},
      {1.0f + 1.5f * one_ulp, 0x3f82},
      {-2.5f, 0xc020},
      {std::numeric_limits<float>::max(), 0x7f80},
      {-0.0f, 0x8000},
      {std::ldexp(1.0f, -130), 0x0008},
      {inf, 0x7f80},
      {-inf, 0xff80},
  };
  std::vector<float> values;
  for (const auto& c : cases) values.push_back(c.first);
  values.push_back(nan);
  const int64_t n = static_cast<int64_t>(values.size());
  std::vector<uint16_t> words(values.size());
  ops->to_bf16(words.data(), values.data(), n);
  for (size_t i = 0; i < cases.size(); ++i)
    EXPECT_EQ(words[i], cases[i].second) << "value " << cases[i].first << " (case " << i << ")";
  Floats widened(values.size());
  ops->from_bf16(widened.data(), words.data(), n);
  EXPECT_TRUE(std::isnan(widened.back()));
  for (size_t i = 0; i < cases.size(); ++i)
    EXPECT_EQ(float_to_bf16(widened[i]), words[i]) << "round trip of case " << i;
  // every finite word: widening then rounding gives it back, also on many threads
  std::vector<uint16_t> all;
  for (uint32_t w = 0; w < 0x10000; ++w)
    if ((w & 0x7f80u) != 0x7f80u) all.push_back(static_cast<uint16_t>(w));
  Floats wide(all.size());
  std::vector<uint16_t> back(all.size());
  ops->from_bf16(wide.data(), all.data(), static_cast<int64_t>(all.size()));
  ops->to_bf16(back.data(), wide.data(), static_cast<int64_t>(all.size()));
  EXPECT_EQ(back, all);
}

}  // namespace
}  // namespace relora
