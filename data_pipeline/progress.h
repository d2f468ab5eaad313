// The progress line of `relora data prepare` on stderr: on a terminal one line rewritten in
// place (at most 5 times a second), otherwise a plain line every 30 seconds.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace relora {

struct ProgressCounts {
  int64_t input_bytes = 0;  // bytes of the input files read (compressed bytes for gzip)
  int64_t text_bytes = 0;   // bytes of document text
  int64_t documents = 0;
  int64_t tokens = 0;  // 0 while only reading
};

class ProgressLine {
 public:
  // `what`: the phase, e.g. "encoding"; `total_input_bytes`: for the percentage and ETA.
  ProgressLine(const std::string& what, int64_t total_input_bytes);
  // Shows `counts` if enough time has passed since the last line.
  void update(const ProgressCounts& counts);
  // Clears a live line (so the next output starts on a clean line).
  void finish();
  double seconds() const;

 private:
  std::string what_;
  int64_t total_input_bytes_;
  bool tty_;
  bool live_line_ = false;
  std::chrono::steady_clock::time_point start_, last_shown_;
};

// "2.58 MB", "812 kB", "17 B" (SI units, as throughput figures are given).
std::string format_bytes(double bytes);
// 1234567 -> "1,234,567".
std::string format_count(int64_t n);

}  // namespace relora
