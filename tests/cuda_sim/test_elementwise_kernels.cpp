// The elementwise and gather/scatter kernels of src/backend/cuda/kernels_elementwise.cu,
// emulated, against the CPU backend: embedding and adapter columns (bit for bit: the
// scatters add each token's rows in position order, as the CPU), RoPE, SwiGLU, scale,
// axpy, the bf16 conversions (bit for bit, specials included) and the double sum of
// squares. Sizes around the 256-thread blocks. The probe fills (launch_fill_*) have no CPU
// counterpart and are not tested. Cannot detect what cuda_sim.h cannot.
#include <cmath>
#include <iterator>
#include <limits>
#include <string>

#include "sim_test_support.h"

namespace relora {
namespace {

// table(V,C), tokens(N) with repeats -> out(N,C); d_table(V,C) += rows of d_out(N,C).
// The adapter columns: cols(N,r) from a(r,V), d_a(r,V) += d_cols(N,r), here with r = C.
TEST_F(CudaSim, EmbeddingAndAdapterColumns) {
  const int N = 50, V = 11;
  Tokens tokens;
  for (int n = 0; n < N; ++n) tokens.push_back((n * 7) % 5 + (n % 3 == 0 ? 6 : 0));
  tokens[N - 1] = V - 1;
  Tokens order(N);
  token_order(order.data(), tokens.data(), N);
  DeviceBuffer<int32_t> dev_tokens(tokens), dev_order(order);
  for (int C : {1, 33, 256, 300}) {
    SCOPED_TRACE("C=" + std::to_string(C));
    const size_t rows = static_cast<size_t>(N) * C, table_size = static_cast<size_t>(V) * C;
    const Floats table = random_floats(table_size, 10), d_out = random_floats(rows, 11);
    const Floats d_table_start = random_floats(table_size, 12);
    Floats out(rows), d_table = d_table_start;
    cpu->embedding_forward(out.data(), tokens.data(), table.data(), N, C);
    cpu->embedding_backward(d_table.data(), d_out.data(), tokens.data(), order.data(), N, C);
    DeviceBuffer<float> dev_table(table), dev_out(rows), dev_d_out(d_out), dev_d_table(d_table_start);
    cuda::launch_embedding_forward(nullptr, dev_out.data(), dev_tokens.data(), dev_table.data(), N, C);
    cuda::launch_embedding_backward(nullptr, dev_d_table.data(), dev_d_out.data(), dev_tokens.data(),
                                    dev_order.data(), N, C);
    expect_bitwise_equal(dev_out.host(), out, "embedding out");
    expect_bitwise_equal(dev_d_table.host(), d_table, "embedding d_table");

    const int r = C;
    const Floats a = random_floats(table_size, 20), d_cols = random_floats(rows, 21);
    const Floats d_a_start = random_floats(table_size, 22);
    Floats cols(rows), d_a = d_a_start;
    cpu->gather_columns(cols.data(), a.data(), tokens.data(), N, r, V);
    cpu->scatter_add_columns(d_a.data(), d_cols.data(), tokens.data(), order.data(), N, r, V);
    DeviceBuffer<float> dev_a(a), dev_cols(rows), dev_d_cols(d_cols), dev_d_a(d_a_start);
    cuda::launch_gather_columns(nullptr, dev_cols.data(), dev_a.data(), dev_tokens.data(), N, r, V);
    cuda::launch_scatter_add_columns(nullptr, dev_d_a.data(), dev_d_cols.data(), dev_tokens.data(),
                                     dev_order.data(), N, r, V);
    expect_bitwise_equal(dev_cols.host(), cols, "gather_columns");
    expect_bitwise_equal(dev_d_a.host(), d_a, "scatter_add_columns");
  }
}

// x(B,T,H,D) rotated in place, both directions; D = 18 pairs dimensions 0..8 with 9..17.
TEST_F(CudaSim, Rope) {
  struct Shape {
    int B, T, H, D;
  };
  for (Shape s : {Shape{2, 5, 3, 8}, Shape{1, 33, 2, 18}}) {
    SCOPED_TRACE("T=" + std::to_string(s.T) + " D=" + std::to_string(s.D));
    Floats cos(static_cast<size_t>(s.T) * s.D / 2), sin(cos.size());
    rope_tables(cos.data(), sin.data(), s.T, s.D, 10000.0f);
    DeviceBuffer<float> dev_cos(cos), dev_sin(sin);
    const Floats x = random_floats(static_cast<size_t>(s.B) * s.T * s.H * s.D, 40);
    Floats forward = x, backward = x;
    cpu->rope_forward(forward.data(), cos.data(), sin.data(), s.B, s.T, s.H, s.D);
    cpu->rope_backward(backward.data(), cos.data(), sin.data(), s.B, s.T, s.H, s.D);
    DeviceBuffer<float> dev_forward(x), dev_backward(x);
    cuda::launch_rope(nullptr, dev_forward.data(), dev_cos.data(), dev_sin.data(), s.B, s.T, s.H, s.D, 1.0f);
    cuda::launch_rope(nullptr, dev_backward.data(), dev_cos.data(), dev_sin.data(), s.B, s.T, s.H, s.D, -1.0f);
    expect_close(dev_forward.host(), forward, kFp32, "rope forward");
    expect_close(dev_backward.host(), backward, kFp32, "rope backward");
  }
}

// n = 1 (one thread of one block), 1003 (a partial block), 70001 (274 blocks).
TEST_F(CudaSim, SwigluScaleAxpy) {
  for (int64_t n : {int64_t{1}, int64_t{1003}, int64_t{70001}}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    const Floats g = random_floats(n, 60, -6.0f, 6.0f), u = random_floats(n, 61, -2.0f, 2.0f);
    const Floats d_out = random_floats(n, 62);
    Floats out(n), dg(n), du(n), scaled = g, y = u;
    cpu->swiglu_forward(out.data(), g.data(), u.data(), n);
    cpu->swiglu_backward(dg.data(), du.data(), d_out.data(), g.data(), u.data(), n);
    cpu->scale(scaled.data(), n, -0.37f);
    cpu->axpy(y.data(), g.data(), n, 1.7f);
    DeviceBuffer<float> dev_g(g), dev_u(u), dev_d_out(d_out), dev_out(n), dev_dg(n), dev_du(n);
    DeviceBuffer<float> dev_scaled(g), dev_y(u);
    cuda::launch_swiglu_forward(nullptr, dev_out.data(), dev_g.data(), dev_u.data(), n);
    cuda::launch_swiglu_backward(nullptr, dev_dg.data(), dev_du.data(), dev_d_out.data(), dev_g.data(), dev_u.data(), n);
    cuda::launch_scale(nullptr, dev_scaled.data(), n, -0.37f);
    cuda::launch_axpy(nullptr, dev_y.data(), dev_g.data(), n, 1.7f);
    expect_close(dev_out.host(), out, kFp32, "swiglu out");
    expect_close(dev_dg.host(), dg, kFp32, "swiglu dg");
    expect_close(dev_du.host(), du, kFp32, "swiglu du");
    expect_close(dev_scaled.host(), scaled, kFp32, "scale");
    expect_close(dev_y.host(), y, kFp32, "axpy");
  }
}

// The CPU's words bit for bit: NaN (canonical 0x7fff), infinities, signed zero, the
// largest float, a denormal, a tie that rounds to even; and back.
TEST_F(CudaSim, Bf16Conversions) {
  Floats x = random_floats(10007, 102, -1e4f, 1e4f);
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(), -0.0f, std::numeric_limits<float>::max(),
                            std::ldexp(1.0f, -130), 1.0f + std::ldexp(1.0f, -8), 1.0f + 3 * std::ldexp(1.0f, -8)};
  std::copy(std::begin(specials), std::end(specials), x.begin());
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<uint16_t> words(x.size());
  Floats wide(x.size());
  cpu->to_bf16(words.data(), x.data(), n);
  cpu->from_bf16(wide.data(), words.data(), n);
  DeviceBuffer<float> dev_x(x), dev_wide(x.size());
  DeviceBuffer<uint16_t> dev_words(x.size());
  cuda::launch_to_bf16(nullptr, dev_words.data(), dev_x.data(), n);
  cuda::launch_from_bf16(nullptr, dev_wide.data(), dev_words.data(), n);
  expect_bitwise_equal(dev_words.host(), words, "to_bf16");
  expect_bitwise_equal(dev_wide.host(), wide, "from_bf16");
}

// sum x^2 in double over a fixed 256-block split; n = 0 still writes the result; 70001 >
// the 65536 threads of the grid.
TEST_F(CudaSim, SumSquares) {
  DeviceBuffer<double> result(1), partials(cuda::kSumSquaresBlocks);
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{70001}}) {
    const Floats x = random_floats(n, 90, -3.0f, 3.0f);
    DeviceBuffer<float> dev_x(x);
    cuda::launch_sum_squares(nullptr, result.data(), partials.data(), dev_x.data(), n);
    const double want = cpu->sum_squares(x.data(), n);
    EXPECT_NEAR(result.host()[0], want, 1e-10 * want) << "n=" << n;
  }
}

}  // namespace
}  // namespace relora
