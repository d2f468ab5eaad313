// Fletcher32 as HDF5 computes it: sums of big-endian 16-bit words, folded to 16 bits (one
// end-around carry) after every block of 360 words and once more at the end. Each block is
// done in closed form, which the compiler vectorises: for words w_0..w_{n-1},
//   sum2 += n * sum1 + sum_i (n - i) w_i,   sum1 += sum_i w_i,
// exactly what HDF5's word-by-word loop adds, in the same wrapping uint32 arithmetic.
#include "checkpoint/fletcher32.h"

#include "core/errors.h"

namespace relora::checkpoint_detail {

uint32_t fletcher32(const unsigned char* data, size_t bytes) {
  RELORA_CHECK(bytes % 2 == 0, "fletcher32 of an odd number of bytes (" << bytes << ")");
  constexpr size_t kBlockWords = 360;
  size_t words = bytes / 2;
  uint32_t sum1 = 0, sum2 = 0;
  while (words > 0) {
    const uint32_t n = static_cast<uint32_t>(words < kBlockWords ? words : kBlockWords);
    uint32_t plain = 0, weighted = 0;
    for (uint32_t i = 0; i < n; ++i) {
      const uint32_t word = (static_cast<uint32_t>(data[2 * i]) << 8) | data[2 * i + 1];
      plain += word;
      weighted += (n - i) * word;
    }
    sum2 += n * sum1 + weighted;
    sum1 += plain;
    sum1 = (sum1 & 0xffff) + (sum1 >> 16);
    sum2 = (sum2 & 0xffff) + (sum2 >> 16);
    data += 2 * n;
    words -= n;
  }
  sum1 = (sum1 & 0xffff) + (sum1 >> 16);
  sum2 = (sum2 & 0xffff) + (sum2 >> 16);
  return (sum2 << 16) | sum1;
}

}  // namespace relora::checkpoint_detail
