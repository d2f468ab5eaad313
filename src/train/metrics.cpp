// metrics.jsonl records and the console progress line.
#include "train/metrics.h"

#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cmath>
#include <cstring>

#include "core/errors.h"

namespace relora {
namespace {

std::string fmt(const char* format, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* format, ...) {
  char buf[512];
  va_list args;
  va_start(args, format);
  std::vsnprintf(buf, sizeof(buf), format, args);
  va_end(args);
  return buf;
}

std::string duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e8) return "?";
  int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return fmt("%ldh%02ldm", static_cast<long>(s / 3600), static_cast<long>(s % 3600 / 60));
  if (s >= 60) return fmt("%ldm%02lds", static_cast<long>(s / 60), static_cast<long>(s % 60));
  return fmt("%lds", static_cast<long>(s));
}

// A JSON number, or null for NaN and infinities (which JSON cannot hold).
std::string number(const char* format, double value) {
  return std::isfinite(value) ? fmt(format, value) : "null";
}

}  // namespace

MetricsLog::MetricsLog(const std::string& path, bool append) : path_(path) {
  file_ = std::fopen(path.c_str(), append ? "a" : "w");
  if (!file_) RELORA_INPUT_ERROR(path << ": cannot write metrics: " << std::strerror(errno));
}

MetricsLog::~MetricsLog() {
  if (file_) std::fclose(file_);
}

void MetricsLog::line(const std::string& json) {
  if (std::fputs(json.c_str(), file_) < 0 || std::fputc('\n', file_) == EOF || std::fflush(file_) != 0)
    throw InternalError(path_ + ": write failed: " + std::strerror(errno));
}

void MetricsLog::step(const StepRecord& r) {
  line(fmt("{\"step\":%ld,\"phase\":\"%s\",\"cycle\":%ld,\"loss\":%s,\"lr\":%.6e,"
           "\"grad_norm\":%s,\"tokens\":%ld,\"tokens_per_s\":%.1f,\"step_ms\":%.2f,"
           "\"comm_bytes\":%ld,\"comm_ms\":%.2f}",
           static_cast<long>(r.step), r.relora_phase ? "relora" : "full", static_cast<long>(r.cycle),
           number("%.6f", r.loss).c_str(), r.lr, number("%.6f", r.grad_norm).c_str(),
           static_cast<long>(r.tokens), r.tokens_per_s, r.step_ms, static_cast<long>(r.comm_bytes),
           r.comm_ms));
}

void MetricsLog::restart(int64_t step, int64_t cycle) {
  line(fmt("{\"event\":\"restart\",\"step\":%ld,\"cycle\":%ld}", static_cast<long>(step),
           static_cast<long>(cycle)));
}

void MetricsLog::eval(int64_t step, double val_loss, double val_ppl) {
  line(fmt("{\"step\":%ld,\"val_loss\":%s,\"val_ppl\":%s}", static_cast<long>(step),
           number("%.6f", val_loss).c_str(), number("%.4f", val_ppl).c_str()));
}

Progress::Progress(int64_t total_steps, int log_every)
    // the live line on stderr only when stdout is a terminal too: stdout sent to a file
    // gets the plain lines
    : total_(total_steps),
      log_every_(log_every),
      tty_(isatty(STDERR_FILENO) == 1 && isatty(STDOUT_FILENO) == 1) {}

void Progress::update(const StepRecord& r, double seconds_elapsed, int64_t steps_done) {
  const double eta = steps_done > 0 ? seconds_elapsed / steps_done * (total_ - r.step) : 0.0;
  std::string text = fmt("step %ld/%ld  %s c%ld  loss %.4f  lr %.2e  %.0f tok/s  %.0f ms/step  ETA %s",
                         static_cast<long>(r.step), static_cast<long>(total_),
                         r.relora_phase ? "relora" : "full", static_cast<long>(r.cycle), r.loss, r.lr,
                         r.tokens_per_s, r.step_ms, duration(eta).c_str());
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s", text.c_str());
    std::fflush(stderr);
    live_line_ = true;
  } else if (steps_done == 1 || r.step % log_every_ == 0 || r.step == total_) {
    std::printf("%s\n", text.c_str());
    std::fflush(stdout);
  }
}

void Progress::message(const std::string& text) {
  if (live_line_) {
    std::fprintf(stderr, "\r\033[K");
    live_line_ = false;
  }
  std::printf("%s\n", text.c_str());
  std::fflush(stdout);
}

void Progress::finish() {
  if (live_line_) std::fprintf(stderr, "\n");
  live_line_ = false;
}

}  // namespace relora
