// Run outputs: metrics.jsonl (one JSON object per line, flushed as written) and the
// console: a live progress line on a terminal, a plain line every log.every steps otherwise.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>

namespace relora {

struct StepRecord {
  int64_t step = 0;
  bool relora_phase = false;
  int64_t cycle = 0;
  double loss = 0.0;
  double lr = 0.0;
  double grad_norm = 0.0;
  int64_t tokens = 0;         // target tokens trained so far
  double tokens_per_s = 0.0;  // over the logging interval
  double step_ms = 0.0;       // mean over the logging interval
  int64_t comm_bytes = 0;     // payload this rank handed to all-reduce for this update
  double comm_ms = 0.0;       // mean time waiting for it, over the logging interval
};

class MetricsLog {
 public:
  // Opens path, truncated or (append, for a resumed run) appended to. Throws InputError
  // if it cannot be written.
  MetricsLog(const std::string& path, bool append);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  void step(const StepRecord& r);
  void restart(int64_t step, int64_t cycle);
  void eval(int64_t step, double val_loss, double val_ppl);

 private:
  void line(const std::string& json);
  std::FILE* file_ = nullptr;
  std::string path_;
};

class Progress {
 public:
  Progress(int64_t total_steps, int log_every);
  // Called after every update; prints on its own schedule. steps_done: updates made in
  // this process (for the ETA of a resumed run).
  void update(const StepRecord& r, double seconds_elapsed, int64_t steps_done);
  void message(const std::string& text);  // a whole line, not overwritten by the live line
  void finish();

 private:
  int64_t total_;
  int log_every_;
  bool tty_;
  bool live_line_ = false;
};

}  // namespace relora
