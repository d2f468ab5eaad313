// The start-up agreement on failures.
#include "dist/collective.h"

#include <cstdio>
#include <string>

#include "core/errors.h"

namespace relora {

void print_error(const Communicator& comm, const char* what, int exit_code, bool with_rank) {
  const char* kind = exit_code == 2 ? "error" : "internal error";
  if (with_rank && comm.world_size() > 1)
    std::fprintf(stderr, "relora: rank %d: %s: %s\n", comm.rank(), kind, what);
  else
    std::fprintf(stderr, "relora: %s: %s\n", kind, what);
  std::fflush(stderr);
}

void collectively(Communicator& comm, const std::function<void()>& work) {
  if (comm.world_size() == 1) {  // nobody to agree with: errors propagate as they are
    work();
    return;
  }
  std::string message;
  uint64_t code = 0;
  try {
    work();
  } catch (const InputError& e) {
    message = e.what();
    code = 2;
  } catch (const std::exception& e) {
    message = e.what();
    code = 1;
  }
  uint64_t worst = code;
  comm.all_reduce(&worst, 1, ReduceOp::max);
  if (worst == 0) return;
  uint64_t rank0_failed = comm.rank() == 0 ? code : 0;
  comm.broadcast(&rank0_failed, sizeof(rank0_failed), 0);
  // Rank 0's message stands for all (a bad config is met by every rank alike); a rank
  // that failed alone says so with its number.
  if (code != 0 && (comm.rank() == 0 || rank0_failed == 0))
    print_error(comm, message.c_str(), static_cast<int>(code), comm.rank() != 0);
  throw AgreedExit(static_cast<int>(worst));
}

}  // namespace relora
