// The prepare progress line (see progress.h).
#include "data_pipeline/progress.h"

#include <unistd.h>

#include <cstdio>

namespace relora {
namespace {

constexpr double kTerminalInterval = 0.2;  // seconds between rewrites of a live line
constexpr double kLogInterval = 30;        // seconds between lines when not on a terminal

std::string format_duration(double seconds) {
  long s = static_cast<long>(seconds + 0.5);
  char text[32];
  if (s >= 3600) {
    std::snprintf(text, sizeof(text), "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  } else {
    std::snprintf(text, sizeof(text), "%ld:%02ld", s / 60, s % 60);
  }
  return text;
}

}  // namespace

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int unit = 0;
  while (bytes >= 1000 && unit < 4) {
    bytes /= 1000;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof(text), unit == 0 ? "%.0f %s" : "%.2f %s", bytes, units[unit]);
  return text;
}

std::string format_count(int64_t n) {
  std::string digits = std::to_string(n < 0 ? -n : n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

ProgressLine::ProgressLine(const std::string& what, int64_t total_input_bytes)
    : what_(what),
      total_input_bytes_(total_input_bytes),
      tty_(isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()),
      last_shown_(start_) {}

double ProgressLine::seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void ProgressLine::update(const ProgressCounts& c) {
  const auto now = std::chrono::steady_clock::now();
  const double since_shown = std::chrono::duration<double>(now - last_shown_).count();
  if (since_shown < (tty_ ? kTerminalInterval : kLogInterval)) return;
  last_shown_ = now;
  const double elapsed = seconds();
  const double fraction =
      total_input_bytes_ > 0 ? static_cast<double>(c.input_bytes) / total_input_bytes_ : 0.0;
  std::string text = what_ + ": " + format_bytes(static_cast<double>(c.input_bytes)) + " of " +
                     format_bytes(static_cast<double>(total_input_bytes_)) + " read (" +
                     std::to_string(static_cast<int>(fraction * 100)) + "%), " +
                     format_count(c.documents) + " documents";
  if (c.tokens > 0) text += ", " + format_count(c.tokens) + " tokens";
  text += ", " + format_bytes(c.text_bytes / elapsed) + "/s of text";
  if (fraction > 0.01) text += ", ETA " + format_duration(elapsed / fraction - elapsed);
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s", text.c_str());
    live_line_ = true;
  } else {
    std::fprintf(stderr, "%s\n", text.c_str());
  }
  std::fflush(stderr);
}

void ProgressLine::finish() {
  if (live_line_) std::fprintf(stderr, "\r\033[K");
  std::fflush(stderr);
  live_line_ = false;
}

}  // namespace relora
