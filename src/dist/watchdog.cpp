// Watchdog: one thread per watchdog, asleep until a guard is armed, then until its deadline.
#include "dist/watchdog.h"

#include <cstdio>
#include <cstdlib>

#include "core/errors.h"

namespace relora {

Watchdog::Watchdog(int64_t timeout_s, std::string setting, int rank)
    : timeout_(timeout_s), setting_(std::move(setting)), rank_(rank), thread_([this] { watch(); }) {}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_one();
  thread_.join();
}

Watchdog::Guard Watchdog::guard(const char* what) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    RELORA_CHECK(what_ == nullptr, "watchdog guards nest: " << what << " inside " << what_);
    what_ = what;
    deadline_ = std::chrono::steady_clock::now() + timeout_;
  }
  changed_.notify_one();
  return Guard(*this);
}

void Watchdog::disarm() {
  std::lock_guard<std::mutex> lock(mutex_);
  what_ = nullptr;  // the thread sees it at its next wake-up; no notify needed
}

void Watchdog::watch() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    if (stopping_) return;
    if (what_ == nullptr) {
      changed_.wait(lock);
      continue;
    }
    const auto deadline = deadline_;
    if (changed_.wait_until(lock, deadline) == std::cv_status::timeout && what_ != nullptr &&
        deadline_ == deadline && !stopping_) {
      std::fprintf(stderr,
                   "relora: rank %d: error: %s did not complete within %s (%lld s): a peer rank "
                   "is stuck or gone, or the network is down; ending the job\n",
                   rank_, what_, setting_.c_str(), static_cast<long long>(timeout_.count()));
      std::fflush(stderr);
      std::_Exit(1);  // the guarded call cannot be interrupted; nothing else is flushed
    }
  }
}

}  // namespace relora
