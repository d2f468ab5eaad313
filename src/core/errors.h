// Errors and check macros.
// InputError: the user's input (config, data file, command line) is wrong; the CLI prints
// its one-line message and exits with code 2. InternalError: a library call failed or an
// invariant broke; exit code 1. Every check reports file and line.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace relora {

struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct InternalError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace relora

// RELORA_INPUT_ERROR("file.yaml: key 'x': must be > 0") — throws InputError; the message
// is streamed, so `<< value` works inside it.
#define RELORA_INPUT_ERROR(msg)                    \
  do {                                             \
    std::ostringstream relora_oss_;                \
    relora_oss_ << msg;                            \
    throw ::relora::InputError(relora_oss_.str()); \
  } while (0)

// RELORA_CHECK(cond, msg) — an internal invariant or a library call's result.
#define RELORA_CHECK(cond, msg)                                                        \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::ostringstream relora_oss_;                                                  \
      relora_oss_ << __FILE__ << ":" << __LINE__ << ": check failed: " #cond ": " << msg; \
      throw ::relora::InternalError(relora_oss_.str());                                \
    }                                                                                  \
  } while (0)
