// The device arena's bookkeeping: aligned first-fit ranges, reuse after release, merging of
// neighbouring free ranges, and a clear error when it is full.
#include <gtest/gtest.h>

#include <string>

#include "core/arena.h"
#include "core/errors.h"

namespace relora {
namespace {

TEST(Arena, AlignsReusesAndMerges) {
  Arena arena(1024, 256);
  const int64_t a = arena.allocate(10), b = arena.allocate(256), c = arena.allocate(300);
  EXPECT_EQ(a, 0);
  EXPECT_EQ(b, 256);
  EXPECT_EQ(c, 512);  // 300 rounds up to 512 bytes: the arena is full
  EXPECT_EQ(arena.in_use(), 1024);
  EXPECT_EQ(arena.requested_in_use(), 10 + 256 + 300);
  EXPECT_EQ(arena.largest_free(), 0);
  arena.release(a);
  arena.release(b);  // merges with a's range: 512 free at the front
  EXPECT_EQ(arena.largest_free(), 512);
  EXPECT_EQ(arena.allocate(512), 0);
  arena.release(0);
  arena.release(c);  // merges with the range before it: one free range again
  EXPECT_EQ(arena.largest_free(), 1024);
  EXPECT_EQ(arena.in_use(), 0);
  EXPECT_EQ(arena.requested_in_use(), 0);
}

TEST(Arena, FullArenaSaysHowFull) {
  Arena arena(1024, 256);
  arena.allocate(512);
  const int64_t middle = arena.allocate(256);
  arena.allocate(256);
  arena.release(middle);
  try {
    arena.allocate(300);  // 256 free, but not in one range large enough
    FAIL() << "allocation succeeded";
  } catch (const InternalError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("device arena full: 300 bytes requested, 768 of 1024 in use, largest free range 256"),
              std::string::npos)
        << what;
  }
  EXPECT_THROW(arena.release(5), InternalError);
}

}  // namespace
}  // namespace relora
