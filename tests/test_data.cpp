// Token shards (format, validation, windows) and the Loader (order, epochs, resume).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/errors.h"
#include "test_util.h"
#include "data/loader.h"
#include "data/shard.h"

namespace relora {
namespace {

namespace fs = std::filesystem;
using testing::expect_contains;
using testing::input_error_of;

// Tokens first, first + 1, ..., first + n - 1.
std::vector<int32_t> counting(int32_t first, int n) {
  std::vector<int32_t> tokens(n);
  for (int i = 0; i < n; ++i) tokens[i] = first + i;
  return tokens;
}

// A fresh directory per test, removed afterwards.
class DataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "relora_data_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (fs::path(dir_) / name).string(); }

  // Three shards whose token i of shard s is s * 1000 + i: 41, 5 and 33 tokens, i.e. 5, 0
  // and 4 windows of seq 8.
  void write_three_shards() const {
    write_token_shard(path("s0.bin"), counting(0, 41));
    write_token_shard(path("s1.bin"), counting(1000, 5));
    write_token_shard(path("s2.bin"), counting(2000, 33));
  }

  std::string dir_;
};

// A file with the given header words (the rest of the 256 zero) followed by `payload_bytes`
// zero bytes.
void write_raw(const std::string& path, std::initializer_list<int32_t> header_words,
               size_t payload_bytes) {
  std::vector<int32_t> header(256, 0);
  std::copy(header_words.begin(), header_words.end(), header.begin());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(header.data()), 256 * sizeof(int32_t));
  std::vector<char> payload(payload_bytes, 0);
  out.write(payload.data(), static_cast<std::streamsize>(payload.size()));
}

std::vector<int32_t> window_of(const TokenShard& shard, int64_t k, int seq) {
  std::vector<int32_t> out(seq + 1);
  shard.read_window(k, seq, out.data());
  return out;
}

// (shard, window) of every sample in [first, first + n).
std::vector<std::pair<int, int64_t>> order(Loader& loader, int64_t first, int64_t n) {
  std::vector<std::pair<int, int64_t>> visited;
  for (int64_t s = first; s < first + n; ++s) {
    int shard = 0;
    int64_t window = 0;
    loader.locate(s, &shard, &window);
    visited.emplace_back(shard, window);
  }
  return visited;
}

TEST_F(DataTest, Uint16RoundTrip) {
  std::vector<int32_t> tokens = counting(65000, 536);  // largest token 65535
  write_token_shard(path("a.bin"), tokens);
  EXPECT_EQ(fs::file_size(path("a.bin")), 1024u + 2 * tokens.size());
  EXPECT_FALSE(fs::exists(path("a.bin.tmp")));
  TokenShard shard(path("a.bin"), 65536);
  EXPECT_EQ(shard.bytes_per_token(), 2);
  EXPECT_EQ(shard.num_tokens(), 536);
  EXPECT_EQ(shard.path(), path("a.bin"));
  std::vector<int32_t> expected(tokens.begin() + 100, tokens.begin() + 151);
  EXPECT_EQ(window_of(shard, 2, 50), expected);
}

TEST_F(DataTest, Uint32RoundTrip) {
  std::vector<int32_t> tokens = {5, 65536, 7, 200000, 9};
  write_token_shard(path("a.bin"), tokens);
  EXPECT_EQ(fs::file_size(path("a.bin")), 1024u + 4 * tokens.size());
  TokenShard shard(path("a.bin"), 200001);
  EXPECT_EQ(shard.bytes_per_token(), 4);
  EXPECT_EQ(shard.num_tokens(), 5);
  EXPECT_EQ(window_of(shard, 0, 4), tokens);
}

TEST_F(DataTest, WindowsDropTheLastPartialWindow) {
  write_token_shard(path("a.bin"), counting(0, 10));
  TokenShard shard(path("a.bin"), 100);
  EXPECT_EQ(shard.num_windows(4), 2);  // [0,5) and [4,9); token 9 starts no full window
  EXPECT_EQ(window_of(shard, 0, 4), counting(0, 5));
  EXPECT_EQ(window_of(shard, 1, 4), counting(4, 5));
  EXPECT_EQ(shard.num_windows(3), 3);  // 9 / 3: the last window ends exactly at token 9
  EXPECT_EQ(window_of(shard, 2, 3), counting(6, 4));
  EXPECT_EQ(shard.num_windows(9), 1);
  EXPECT_EQ(shard.num_windows(10), 0);  // fewer than seq + 1 tokens: opens, no window
}

TEST_F(DataTest, TinyShardsHaveNoWindows) {
  write_token_shard(path("empty.bin"), {});
  write_token_shard(path("one.bin"), {3});
  EXPECT_EQ(TokenShard(path("empty.bin"), 10).num_windows(1), 0);
  EXPECT_EQ(TokenShard(path("one.bin"), 10).num_windows(1), 0);
}

TEST_F(DataTest, MovedShardKeepsItsMapping) {
  write_token_shard(path("a.bin"), counting(0, 9));
  TokenShard first(path("a.bin"), 10);
  TokenShard second(std::move(first));
  EXPECT_EQ(window_of(second, 1, 4), counting(4, 5));
}

TEST_F(DataTest, RejectsMissingFile) {
  std::string missing = path("missing.bin");
  expect_contains(input_error_of([&] { TokenShard s(missing, 10); }),
                  {missing, "cannot open", "No such file"});
}

TEST_F(DataTest, RejectsDirectory) {
  expect_contains(input_error_of([&] { TokenShard s(dir_, 10); }), {dir_, "not a regular file"});
}

TEST_F(DataTest, RejectsFileShorterThanHeader) {
  std::ofstream(path("short.bin"), std::ios::binary) << "0123456789";
  expect_contains(input_error_of([&] { TokenShard s(path("short.bin"), 10); }),
                  {path("short.bin"), "10 bytes", "1024"});
}

TEST_F(DataTest, RejectsBadMagic) {
  write_raw(path("magic.bin"), {12345, 1, 0}, 0);
  expect_contains(input_error_of([&] { TokenShard s(path("magic.bin"), 10); }),
                  {path("magic.bin"), "magic 12345 version 1", "20240520", "20240801"});
}

TEST_F(DataTest, RejectsMagicWithTheOtherFormatsVersion) {
  write_raw(path("version.bin"), {20240520, 7, 0}, 0);
  expect_contains(
      input_error_of([&] { TokenShard s(path("version.bin"), 10); }),
      {path("version.bin"), "magic 20240520 version 7", "version 1 (uint16", "version 7 (uint32"});
}

TEST_F(DataTest, RejectsSizeMismatch) {
  write_raw(path("truncated.bin"), {20240520, 1, 100}, 150);  // 100 uint16 tokens need 200 bytes
  expect_contains(input_error_of([&] { TokenShard s(path("truncated.bin"), 10); }),
                  {path("truncated.bin"), "1174 bytes", "1224 bytes", "100 tokens"});
  write_raw(path("long.bin"), {20240801, 7, 10}, 41);
  expect_contains(input_error_of([&] { TokenShard s(path("long.bin"), 10); }),
                  {path("long.bin"), "1065 bytes", "1064 bytes"});
}

TEST_F(DataTest, RejectsNegativeCount) {
  write_raw(path("negative.bin"), {20240520, 1, -4}, 0);
  expect_contains(input_error_of([&] { TokenShard s(path("negative.bin"), 10); }),
                  {path("negative.bin"), "-4"});
}

TEST_F(DataTest, RejectsTokenOutsideVocabularyNamingTheFirst) {
  std::vector<int32_t> tokens(1 << 20, 7);  // large enough for the scan to run in parallel
  tokens[700001] = 4096;
  tokens[900000] = 5000;
  write_token_shard(path("vocab.bin"), tokens);
  expect_contains(input_error_of([&] { TokenShard s(path("vocab.bin"), 4096); }),
                  {path("vocab.bin"), "token 4096", "index 700001", "vocab_size 4096"});
  EXPECT_NO_THROW(TokenShard(path("vocab.bin"), 5001));

  // a job's ranks check their share of the shards' tokens: shard i on rank i % ranks
  write_token_shard(path("vocab_ok.bin"), {1, 2, 3});
  const std::string both = path("vocab*.bin");  // vocab.bin (bad), vocab_ok.bin
  expect_contains(input_error_of([&] { Loader(both, 4096, 1, 1, false, 0, 2); }), {path("vocab.bin"), "token 4096"});
  Loader unchecked(both, 4096, 1, 1, false, 1, 2);  // vocab.bin's tokens not scanned here...
  std::vector<int32_t> inputs(1), targets(1);
  expect_contains(input_error_of([&] { unchecked.read(700000, 1, inputs.data(), targets.data()); }),
                  {path("vocab.bin"), "token 4096", "index 700001"});  // ...but never handed out

  write_token_shard(path("vocab32.bin"), {1, 2, 70000});
  expect_contains(input_error_of([&] { TokenShard s(path("vocab32.bin"), 65536); }),
                  {path("vocab32.bin"), "token 70000", "index 2", "vocab_size 65536"});
}

TEST_F(DataTest, GlobIsSortedAndNamesThePatternWhenNothingMatches) {
  for (const char* name : {"b.bin", "c.bin", "a.bin", "a.txt"}) write_token_shard(path(name), {1});
  EXPECT_EQ(glob_files(path("*.bin"), "shards"),
            (std::vector<std::string>{path("a.bin"), path("b.bin"), path("c.bin")}));
  std::string pattern = path("train_*.bin");
  expect_contains(input_error_of([&] { glob_files(pattern, "train data"); }),
                  {"train data", "no file matches", "'" + pattern + "'"});
}

TEST_F(DataTest, LoaderWithoutShuffleKeepsFileThenWindowOrder) {
  write_three_shards();
  Loader loader(path("s*.bin"), 3000, 8, 1, /*shuffle=*/false);
  EXPECT_EQ(loader.num_samples(), 9);
  EXPECT_EQ(loader.files().size(), 3u);
  std::vector<std::pair<int, int64_t>> expected = {{0, 0}, {0, 1}, {0, 2}, {0, 3}, {0, 4},
                                                   {2, 0}, {2, 1}, {2, 2}, {2, 3}};
  EXPECT_EQ(order(loader, 0, 9), expected);
  EXPECT_EQ(order(loader, 9, 9), expected);  // the next epoch repeats the order

  std::vector<int32_t> inputs(3 * 8), targets(3 * 8);
  loader.read(4, 3, inputs.data(), targets.data());  // samples 4, 5, 6
  for (int t = 0; t < 8; ++t) {
    EXPECT_EQ(inputs[0 * 8 + t], 32 + t);
    EXPECT_EQ(targets[0 * 8 + t], 33 + t);
    EXPECT_EQ(inputs[1 * 8 + t], 2000 + t);
    EXPECT_EQ(targets[1 * 8 + t], 2001 + t);
    EXPECT_EQ(inputs[2 * 8 + t], 2008 + t);
    EXPECT_EQ(targets[2 * 8 + t], 2009 + t);
  }
  EXPECT_EQ(loader.cursor(), 0);  // read does not move the cursor
}

TEST_F(DataTest, ShuffledEpochIsADeterministicPermutation) {
  for (int s = 0; s < 4; ++s) {
    write_token_shard(path("p" + std::to_string(s) + ".bin"), counting(0, 161));
  }
  Loader first(path("p*.bin"), 200, 4, 42, /*shuffle=*/true);
  Loader second(path("p*.bin"), 200, 4, 42, /*shuffle=*/true);
  Loader other_seed(path("p*.bin"), 200, 4, 43, /*shuffle=*/true);
  ASSERT_EQ(first.num_samples(), 160);

  auto epoch0 = order(first, 0, 160);
  auto epoch1 = order(first, 160, 160);
  std::set<std::pair<int, int64_t>> distinct(epoch0.begin(), epoch0.end());
  EXPECT_EQ(distinct.size(), 160u);
  EXPECT_EQ(*distinct.begin(), std::make_pair(0, int64_t{0}));
  EXPECT_EQ(*distinct.rbegin(), std::make_pair(3, int64_t{39}));
  std::set<std::pair<int, int64_t>> distinct1(epoch1.begin(), epoch1.end());
  EXPECT_EQ(distinct1, distinct);

  EXPECT_EQ(order(second, 0, 160), epoch0);
  EXPECT_EQ(order(second, 160, 160), epoch1);
  EXPECT_NE(epoch1, epoch0);
  EXPECT_NE(order(other_seed, 0, 160), epoch0);
  Loader unshuffled(path("p*.bin"), 200, 4, 42, /*shuffle=*/false);
  EXPECT_NE(order(unshuffled, 0, 160), epoch0);
  // Going back to an earlier epoch regenerates the same permutation.
  EXPECT_EQ(order(first, 0, 160), epoch0);
}

// Pins the order itself: a change here breaks resuming runs started with the old order.
TEST_F(DataTest, ShuffledOrderIsPinned) {
  write_token_shard(path("a.bin"), counting(0, 41));
  Loader loader(path("a.bin"), 100, 4, 42, /*shuffle=*/true);
  std::vector<std::pair<int, int64_t>> epoch0, epoch1;
  for (int64_t w : {6, 8, 3, 2, 1, 0, 9, 7, 5, 4}) epoch0.emplace_back(0, w);
  for (int64_t w : {0, 9, 7, 3, 8, 1, 4, 6, 5, 2}) epoch1.emplace_back(0, w);
  EXPECT_EQ(order(loader, 0, 10), epoch0);
  EXPECT_EQ(order(loader, 10, 10), epoch1);
}

TEST_F(DataTest, ReadCrossesTheEpochBoundary) {
  write_three_shards();
  Loader loader(path("s*.bin"), 3000, 8, 7, /*shuffle=*/true);
  Loader reference(path("s*.bin"), 3000, 8, 7, /*shuffle=*/true);
  loader.set_cursor(7);
  std::vector<int32_t> inputs(4 * 8), targets(4 * 8);
  loader.read(0, 4, inputs.data(), targets.data());  // samples 7, 8 | 9, 10 (epoch 1)
  std::vector<int32_t> one_in(8), one_target(8);
  for (int i = 0; i < 4; ++i) {
    reference.set_cursor(7 + i);
    reference.read(0, 1, one_in.data(), one_target.data());
    EXPECT_EQ(std::vector<int32_t>(inputs.begin() + i * 8, inputs.begin() + i * 8 + 8), one_in);
    EXPECT_EQ(std::vector<int32_t>(targets.begin() + i * 8, targets.begin() + i * 8 + 8),
              one_target);
    for (int t = 0; t + 1 < 8; ++t) EXPECT_EQ(targets[i * 8 + t], inputs[i * 8 + t + 1]);
  }
}

TEST_F(DataTest, SetCursorResumesTheSameStream) {
  write_three_shards();
  const int batch = 2, seq = 8;
  Loader straight(path("s*.bin"), 3000, seq, 3, /*shuffle=*/true);
  std::vector<std::vector<int32_t>> batches;
  for (int step = 0; step < 12; ++step) {  // 24 samples: almost three epochs of 9
    std::vector<int32_t> inputs(batch * seq), targets(batch * seq);
    straight.read(0, batch, inputs.data(), targets.data());
    straight.advance(batch);
    batches.push_back(inputs);
  }
  EXPECT_EQ(straight.cursor(), 24);

  Loader resumed(path("s*.bin"), 3000, seq, 3, /*shuffle=*/true);
  resumed.set_cursor(5 * batch);
  for (int step = 5; step < 12; ++step) {
    std::vector<int32_t> inputs(batch * seq), targets(batch * seq);
    resumed.read(0, batch, inputs.data(), targets.data());
    resumed.advance(batch);
    EXPECT_EQ(inputs, batches[step]) << "step " << step;
  }
}

TEST_F(DataTest, LoaderRejectsShardsWithoutAWindow) {
  write_token_shard(path("s0.bin"), counting(0, 8));
  write_token_shard(path("s1.bin"), counting(0, 3));
  std::string pattern = path("s*.bin");
  expect_contains(input_error_of([&] { Loader l(pattern, 100, 8, 1, true); }),
                  {"'" + pattern + "'", "fewer than seq_len+1 = 9 tokens", "2 shard"});
}

TEST_F(DataTest, LoaderRejectsPatternWithoutFilesAndBadShards) {
  std::string pattern = path("none_*.bin");
  expect_contains(input_error_of([&] { Loader l(pattern, 100, 8, 1, true); }),
                  {"no file matches", pattern});
  write_token_shard(path("big.bin"), {1, 2, 300});
  expect_contains(input_error_of([&] { Loader l(path("big.bin"), 100, 1, 1, true); }),
                  {path("big.bin"), "token 300"});
}

}  // namespace
}  // namespace relora
