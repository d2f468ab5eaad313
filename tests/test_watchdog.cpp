// Watchdog: a guarded call that returns in time changes nothing; one that blocks past the
// deadline ends the process with exit code 1 and a line naming the call, rank and setting.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "dist/watchdog.h"

namespace relora {
namespace {

TEST(Watchdog, CallsReturningInTimeAreLeftAlone) {
  Watchdog watchdog(1, "train.comm_timeout", 0);
  for (int i = 0; i < 100; ++i) {
    const Watchdog::Guard guard = watchdog.guard("a quick call");
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1300));  // past the first deadline
  const Watchdog::Guard guard = watchdog.guard("one more quick call");
  SUCCEED();
}

TEST(WatchdogDeathTest, BlockedCallEndsTheProcess) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        Watchdog watchdog(1, "train.comm_timeout", 3);
        const Watchdog::Guard guard = watchdog.guard("NCCL set-up (ncclCommInitRank)");
        std::this_thread::sleep_for(std::chrono::seconds(30));
      },
      ::testing::ExitedWithCode(1),
      "relora: rank 3: error: NCCL set-up \\(ncclCommInitRank\\) did not complete within train.comm_timeout "
      "\\(1 s\\)");
}

}  // namespace
}  // namespace relora
