// The fused attention kernels of src/backend/cuda/flash_attention.cu, emulated, against the
// CPU backend (tests/cuda's tolerance: 2e-2 of the largest value) and against a float64
// computation on the bf16-rounded inputs the tensor cores see (tighter: what is left is
// the kernels' own rounding of P and dS to bf16). Every head size with kernels, one
// partial tile (T = 1, 17), exactly one tile (64), a tile and one row (65), three tiles
// (130). Cannot detect what cuda_sim.h cannot (weak-memory races, tensor-core rounding).
#include <algorithm>
#include <cmath>
#include <string>

#include "core/bf16.h"
#include "sim_test_support.h"

namespace relora {
namespace {

// Causal attention in float64: out(B,T,H,D), lse(B,H,T), and the gradients dq, dk, dv
// (B,T,H,D) for d_out, as Ops::attention_forward/backward define them.
struct Attention {
  Floats out, lse, dq, dk, dv;
};
Attention attention_in_double(const Floats& q, const Floats& k, const Floats& v,
                              const Floats& d_out, int B, int T, int H, int D) {
  const int C = H * D;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const size_t n = static_cast<size_t>(B) * T * C;
  Attention r{Floats(n), Floats(static_cast<size_t>(B) * H * T), Floats(n), Floats(n), Floats(n)};
  const auto row = [&](int b, int t, int h) { return (static_cast<size_t>(b) * T + t) * C + static_cast<size_t>(h) * D; };
  std::vector<double> P(static_cast<size_t>(T) * T), dS(static_cast<size_t>(T) * T);  // (T,T) of one head
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      for (int t = 0; t < T; ++t) {
        double* p = &P[static_cast<size_t>(t) * T];
        double max_s = -INFINITY;
        for (int j = 0; j <= t; ++j) {
          double dot = 0.0;
          for (int c = 0; c < D; ++c) dot += static_cast<double>(q[row(b, t, h) + c]) * k[row(b, j, h) + c];
          p[j] = dot * scale;
          max_s = std::max(max_s, p[j]);
        }
        double sum = 0.0;
        for (int j = 0; j <= t; ++j) sum += std::exp(p[j] - max_s);
        r.lse[(static_cast<size_t>(b) * H + h) * T + t] = static_cast<float>(max_s + std::log(sum));
        for (int j = 0; j <= t; ++j) p[j] = std::exp(p[j] - max_s) / sum;
        for (int c = 0; c < D; ++c) {
          double o = 0.0;
          for (int j = 0; j <= t; ++j) o += p[j] * v[row(b, j, h) + c];
          r.out[row(b, t, h) + c] = static_cast<float>(o);
        }
        // dS = P (dP - delta), dP = d_out v^T, delta = rowsum(P dP)
        std::vector<double> dp(t + 1);
        double delta = 0.0;
        for (int j = 0; j <= t; ++j) {
          for (int c = 0; c < D; ++c) dp[j] += static_cast<double>(d_out[row(b, t, h) + c]) * v[row(b, j, h) + c];
          delta += p[j] * dp[j];
        }
        for (int j = 0; j <= t; ++j) dS[static_cast<size_t>(t) * T + j] = p[j] * (dp[j] - delta);
      }
      for (int t = 0; t < T; ++t)
        for (int c = 0; c < D; ++c) {
          double dq = 0.0, dk = 0.0, dv = 0.0;
          for (int j = 0; j <= t; ++j) dq += dS[static_cast<size_t>(t) * T + j] * k[row(b, j, h) + c];
          for (int i = t; i < T; ++i) {
            dk += dS[static_cast<size_t>(i) * T + t] * q[row(b, i, h) + c];
            dv += P[static_cast<size_t>(i) * T + t] * d_out[row(b, i, h) + c];
          }
          r.dq[row(b, t, h) + c] = static_cast<float>(dq * scale);
          r.dk[row(b, t, h) + c] = static_cast<float>(dk * scale);
          r.dv[row(b, t, h) + c] = static_cast<float>(dv);
        }
    }
  return r;
}

Floats bf16_rounded(const Floats& x) {
  Floats y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = bf16_to_float(float_to_bf16(x[i]));
  return y;
}

struct Emulated {
  Floats out, lse, dq, dk, dv;
};
// flash_attention_forward then _backward, called as CudaOps calls them.
Emulated run_flash_attention(const Floats& q, const Floats& k, const Floats& v, const Floats& d_out,
                             int B, int T, int H, int D) {
  const size_t n = q.size(), rows = static_cast<size_t>(B) * H * T;
  DeviceBuffer<float> dev_q(q), dev_k(k), dev_v(v), dev_d_out(d_out), out(n), lse(rows);
  DeviceBuffer<float> delta(rows), dq(n), dk(n), dv(n);
  cuda::flash_attention_forward(nullptr, out.data(), lse.data(), dev_q.data(), dev_k.data(),
                                dev_v.data(), B, T, H, D);
  cuda::flash_attention_backward(nullptr, dq.data(), dk.data(), dv.data(), dev_d_out.data(),
                                 out.data(), lse.data(), dev_q.data(), dev_k.data(), dev_v.data(),
                                 delta.data(), B, T, H, D);
  return Emulated{out.host(), lse.host(), dq.host(), dk.host(), dv.host()};
}

// q, k uniform in [-2, 2] (scores up to ~2.7 sigma), v and d_out in [-1, 1].
void check_flash_attention(Ops& cpu, int B, int T, int H, int D) {
  const std::string tag = " B=" + std::to_string(B) + " T=" + std::to_string(T) +
                          " H=" + std::to_string(H) + " D=" + std::to_string(D);
  SCOPED_TRACE(tag);
  const size_t n = static_cast<size_t>(B) * T * H * D;
  const Floats q = random_floats(n, 50, -2.0f, 2.0f), k = random_floats(n, 51, -2.0f, 2.0f);
  const Floats v = random_floats(n, 52), d_out = random_floats(n, 53);
  const Emulated got = run_flash_attention(q, k, v, d_out, B, T, H, D);

  Floats out(n), saved(cpu.attention_saved_floats(B, T, H)), scratch(cpu.attention_scratch_floats(B, T, H, D));
  Floats dq(n), dk(n), dv(n);
  cpu.attention_forward(out.data(), saved.data(), q.data(), k.data(), v.data(), scratch.data(), B, T, H, D);
  cpu.attention_backward(dq.data(), dk.data(), dv.data(), d_out.data(), out.data(), saved.data(),
                         q.data(), k.data(), v.data(), scratch.data(), B, T, H, D);
  // dq, dk: with T = 1 the reference is exactly 0 (one key), so bf16 noise needs a floor
  const Tolerance bf16_floor{kBf16.rel, 1e-4, true};
  expect_close(got.out, out, kBf16, "out vs CPU");
  expect_close(got.dq, dq, bf16_floor, "dq vs CPU");
  expect_close(got.dk, dk, bf16_floor, "dk vs CPU");
  expect_close(got.dv, dv, kBf16, "dv vs CPU");
  expect_close(got.lse, attention_in_double(q, k, v, d_out, B, T, H, D).lse, kBf16, "lse vs float64");

  const Attention exact = attention_in_double(bf16_rounded(q), bf16_rounded(k), bf16_rounded(v),
                                              bf16_rounded(d_out), B, T, H, D);
  expect_close(got.out, exact.out, {5e-3, 0.0, true}, "out vs float64 on bf16 inputs");
  expect_close(got.lse, exact.lse, {0.0, 1e-3, false}, "lse vs float64 on bf16 inputs");
  expect_close(got.dq, exact.dq, {1e-2, 1e-4, true}, "dq vs float64 on bf16 inputs");
  expect_close(got.dk, exact.dk, {1e-2, 1e-4, true}, "dk vs float64 on bf16 inputs");
  expect_close(got.dv, exact.dv, {5e-3, 0.0, true}, "dv vs float64 on bf16 inputs");
}

void check_head_size(Ops& cpu, int D) {
  for (int T : {1, 17, 64, 65, 130}) check_flash_attention(cpu, 2, T, 3, D);
}

TEST_F(CudaSim, FlashAttentionD32) { check_head_size(*cpu, 32); }
TEST_F(CudaSim, FlashAttentionD48) { check_head_size(*cpu, 48); }
TEST_F(CudaSim, FlashAttentionD64) { check_head_size(*cpu, 64); }
TEST_F(CudaSim, FlashAttentionD80) { check_head_size(*cpu, 80); }
TEST_F(CudaSim, FlashAttentionD96) { check_head_size(*cpu, 96); }
TEST_F(CudaSim, FlashAttentionD112) { check_head_size(*cpu, 112); }
TEST_F(CudaSim, FlashAttentionD128) { check_head_size(*cpu, 128); }

// Four query and key tiles, the last one partial.
TEST_F(CudaSim, FlashAttentionFourTiles) { check_flash_attention(*cpu, 1, 200, 2, 64); }

// Scores up to ~11 sigma (q, k in [-8, 8]): the online softmax rescales its running sums
// across key tiles by large factors. The bf16 rounding of q and k alone moves such scores
// by ~0.1, so only the float64 computation on the rounded inputs is a fair reference.
TEST_F(CudaSim, FlashAttentionLargeScores) {
  const int B = 1, T = 150, H = 2, D = 64;
  const size_t n = static_cast<size_t>(B) * T * H * D;
  const Floats q = bf16_rounded(random_floats(n, 54, -8.0f, 8.0f));
  const Floats k = bf16_rounded(random_floats(n, 55, -8.0f, 8.0f));
  const Floats v = bf16_rounded(random_floats(n, 56)), d_out = bf16_rounded(random_floats(n, 57));
  const Emulated got = run_flash_attention(q, k, v, d_out, B, T, H, D);
  const Attention exact = attention_in_double(q, k, v, d_out, B, T, H, D);
  expect_close(got.out, exact.out, {5e-3, 0.0, true}, "out vs float64 on bf16 inputs");
  expect_close(got.lse, exact.lse, {0.0, 1e-3, false}, "lse vs float64 on bf16 inputs");
  expect_close(got.dq, exact.dq, {1e-2, 1e-4, true}, "dq vs float64 on bf16 inputs");
  expect_close(got.dk, exact.dk, {1e-2, 1e-4, true}, "dk vs float64 on bf16 inputs");
  expect_close(got.dv, exact.dv, {5e-3, 0.0, true}, "dv vs float64 on bf16 inputs");
}

}  // namespace
}  // namespace relora
