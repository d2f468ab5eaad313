// A bounded, uniform sample of the training text for tokenizer training. SentencePiece
// trains on lines, so lines are sampled: each line (a long one first cut, before a space
// where possible, into pieces of at most kMaxTrainingSentenceBytes) gets a pseudo-random key
// from (seed, document number, line number), and the lines with the smallest keys are kept
// while they fit the byte budget. The sample depends only on the text and the seed.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace relora {

class TrainingSample {
 public:
  TrainingSample(uint64_t seed, int64_t budget_bytes);

  void add_document(int64_t document, std::string_view text);
  // Drops the lines of `document` again.
  void remove_document(int64_t document);
  // Bytes held (text plus a fixed per-line overhead), at most the budget.
  int64_t bytes() const { return bytes_; }
  // The kept lines in (document, line) order; empties the sample.
  std::vector<std::string> take_lines();

 private:
  struct Line {
    double key;
    int64_t document;
    int64_t index;  // within the document
    std::string text;
  };
  void add_line(int64_t document, int64_t index, std::string_view text);
  static int64_t cost(const Line& line);

  uint64_t seed_;
  int64_t budget_;
  int64_t bytes_ = 0;
  std::vector<Line> heap_;  // max-heap by key: the first line to go when over budget on top
};

}  // namespace relora
