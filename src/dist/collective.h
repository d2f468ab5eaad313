// Start-up work that every rank does alike (read the config, open the data, build the
// model), ended by an agreement: if any rank failed, every rank learns it, the error is
// printed once (by rank 0 when it failed too, else by each failing rank with its number),
// and every rank exits with the same code — no MPI_Abort and no hang.
#pragma once
#include <functional>
#include <stdexcept>

#include "dist/communicator.h"

namespace relora {

// Thrown on every rank after an agreed failure; the message is already printed.
struct AgreedExit : std::runtime_error {
  explicit AgreedExit(int code) : std::runtime_error("agreed exit"), exit_code(code) {}
  int exit_code;
};

// Runs work(); then all ranks agree. Throws AgreedExit on every rank if any failed
// (exit code 2 for InputError, 1 otherwise). At world size 1 it is just work(): its
// exceptions propagate unchanged.
void collectively(Communicator& comm, const std::function<void()>& work);

// "relora: rank R: error: msg" (with_rank and world size > 1) or "relora: error: msg";
// "internal error" instead of "error" for exit code 1.
void print_error(const Communicator& comm, const char* what, int exit_code, bool with_rank);

}  // namespace relora
