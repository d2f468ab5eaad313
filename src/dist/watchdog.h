// Watchdog: a deadline for blocking library calls that cannot time out by themselves (NCCL's
// communicator set-up, and the connections NCCL opens inside a collective call). If a
// guarded call is still running when its deadline passes, the watchdog thread prints one
// line naming the call and the timeout, and ends the process with exit code 1; an MPI
// launcher then ends the other ranks (each of which also has its own deadline).
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace relora {

class Watchdog {
 public:
  // timeout_s: how long one guarded call may block; `setting` names it in the message
  // ("train.comm_timeout"). rank: printed with the message.
  Watchdog(int64_t timeout_s, std::string setting, int rank);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Arms the deadline for the call described by `what` until the Guard goes out of scope.
  // Guards do not nest (a second one while one is armed is an InternalError) and must not
  // outlive their Watchdog.
  class Guard {
   public:
    ~Guard() { dog_.disarm(); }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    friend class Watchdog;
    explicit Guard(Watchdog& dog) : dog_(dog) {}
    Watchdog& dog_;
  };
  [[nodiscard]] Guard guard(const char* what);

 private:
  void disarm();
  void watch();

  const std::chrono::seconds timeout_;
  const std::string setting_;
  const int rank_;
  std::mutex mutex_;
  std::condition_variable changed_;
  const char* what_ = nullptr;  // the guarded call, nullptr when disarmed
  std::chrono::steady_clock::time_point deadline_;
  bool stopping_ = false;
  std::thread thread_;  // last: starts after the members it reads
};

}  // namespace relora
