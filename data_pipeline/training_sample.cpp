// The bounded tokenizer-training sample (see training_sample.h).
#include "data_pipeline/training_sample.h"

#include <algorithm>

#include "core/rng.h"
#include "data_pipeline/tokenizer.h"

namespace relora {
namespace {

constexpr int64_t kLineOverheadBytes = 64;  // the Line record and the string's own allocation

bool key_less(double a_key, int64_t a_doc, int64_t a_index, double b_key, int64_t b_doc,
              int64_t b_index) {
  if (a_key != b_key) return a_key < b_key;
  if (a_doc != b_doc) return a_doc < b_doc;
  return a_index < b_index;
}

// Where to cut `text` (longer than `limit`) so that the first piece has at most `limit`
// bytes: before the last space within the limit, else at a UTF-8 character boundary.
size_t cut_position(std::string_view text, size_t limit) {
  size_t space = text.rfind(' ', limit);
  if (space != std::string_view::npos && space > 0) return space;
  size_t cut = limit;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return cut > 0 ? cut : limit;
}

}  // namespace

TrainingSample::TrainingSample(uint64_t seed, int64_t budget_bytes)
    : seed_(seed), budget_(budget_bytes) {}

int64_t TrainingSample::cost(const Line& line) {
  return static_cast<int64_t>(line.text.size()) + kLineOverheadBytes;
}

void TrainingSample::add_document(int64_t document, std::string_view text) {
  int64_t index = 0;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    while (line.size() > kMaxTrainingSentenceBytes) {
      size_t cut = cut_position(line, kMaxTrainingSentenceBytes);
      add_line(document, index++, line.substr(0, cut));
      line.remove_prefix(cut);
    }
    if (!line.empty()) add_line(document, index++, line);
    start = end + 1;
  }
}

void TrainingSample::add_line(int64_t document, int64_t index, std::string_view text) {
  const RngKey key{seed_, RngPurpose::data_sample, 0, static_cast<uint64_t>(document)};
  Line line{uniform_at(key, static_cast<uint64_t>(index)), document, index, std::string()};
  auto heap_less = [](const Line& a, const Line& b) {
    return key_less(a.key, a.document, a.index, b.key, b.document, b.index);
  };
  if (bytes_ + static_cast<int64_t>(text.size()) + kLineOverheadBytes > budget_) {
    // Over budget: this line only gets in if it beats the largest key kept.
    if (heap_.empty() || !heap_less(line, heap_.front())) return;
  }
  line.text.assign(text.data(), text.size());
  bytes_ += cost(line);
  heap_.push_back(std::move(line));
  std::push_heap(heap_.begin(), heap_.end(), heap_less);
  while (bytes_ > budget_ && !heap_.empty()) {
    std::pop_heap(heap_.begin(), heap_.end(), heap_less);
    bytes_ -= cost(heap_.back());
    heap_.pop_back();
  }
}

void TrainingSample::remove_document(int64_t document) {
  auto removed = std::remove_if(heap_.begin(), heap_.end(),
                                [&](const Line& line) { return line.document == document; });
  for (auto it = removed; it != heap_.end(); ++it) bytes_ -= cost(*it);
  heap_.erase(removed, heap_.end());
  std::make_heap(heap_.begin(), heap_.end(), [](const Line& a, const Line& b) {
    return key_less(a.key, a.document, a.index, b.key, b.document, b.index);
  });
}

std::vector<std::string> TrainingSample::take_lines() {
  std::sort(heap_.begin(), heap_.end(), [](const Line& a, const Line& b) {
    return a.document != b.document ? a.document < b.document : a.index < b.index;
  });
  std::vector<std::string> lines;
  lines.reserve(heap_.size());
  for (Line& line : heap_) lines.push_back(std::move(line.text));
  heap_.clear();
  bytes_ = 0;
  return lines;
}

}  // namespace relora
