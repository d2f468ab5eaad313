// Loader: maps global sample indices to shard windows through a per-epoch permutation.
#include "data/loader.h"

#include <algorithm>
#include <numeric>

#include "core/errors.h"
#include "core/rng.h"

namespace relora {

Loader::Loader(const std::string& pattern, int vocab_size, int seq_len, uint64_t seed, bool shuffle,
               int rank, int ranks)
    : seq_len_(seq_len), seed_(seed), shuffle_(shuffle) {
  RELORA_CHECK(ranks >= 1 && rank >= 0 && rank < ranks, "rank " << rank << " of " << ranks);
  RELORA_CHECK(seq_len > 0, "sequence length " << seq_len);
  files_ = glob_files(pattern, "token shards");
  shards_.reserve(files_.size());
  first_window_.reserve(files_.size() + 1);
  for (size_t i = 0; i < files_.size(); ++i) {
    shards_.emplace_back(files_[i], vocab_size, static_cast<int>(i % ranks) == rank);
    first_window_.push_back(total_windows_);
    total_windows_ += shards_.back().num_windows(seq_len);
  }
  first_window_.push_back(total_windows_);
  if (total_windows_ == 0) {
    RELORA_INPUT_ERROR("token shards '"
                       << pattern << "': the " << files_.size()
                       << " shard(s) each hold fewer than seq_len+1 = " << seq_len + 1
                       << " tokens, so no sample fits; add data or lower seq_len");
  }
  window_.resize(static_cast<size_t>(seq_len) + 1);
}

const std::vector<std::string>& Loader::files() const { return files_; }

std::vector<int64_t> Loader::shard_tokens() const {
  std::vector<int64_t> tokens;
  for (const TokenShard& shard : shards_) tokens.push_back(shard.num_tokens());
  return tokens;
}

void Loader::read(int64_t offset, int count, int32_t* inputs, int32_t* targets) {
  for (int i = 0; i < count; ++i) {
    int shard = 0;
    int64_t window = 0;
    locate(cursor_ + offset + i, &shard, &window);
    shards_[shard].read_window(window, seq_len_, window_.data());
    std::copy(window_.begin(), window_.end() - 1, inputs + static_cast<int64_t>(i) * seq_len_);
    std::copy(window_.begin() + 1, window_.end(), targets + static_cast<int64_t>(i) * seq_len_);
  }
}

void Loader::locate(int64_t sample, int* shard, int64_t* window) {
  RELORA_CHECK(sample >= 0, "negative sample index " << sample);
  int64_t epoch = sample / total_windows_;
  int64_t position = sample % total_windows_;
  int64_t global_window = position;
  if (shuffle_) {
    if (epoch != perm_epoch_) {
      // Fisher-Yates, swap position i drawing j = floor(u_i * (i + 1)) from draw i of the
      // (seed, data_order, 0, epoch) stream; the min() guards against u_i * (i + 1) rounding up.
      RngKey key{seed_, RngPurpose::data_order, 0, static_cast<uint64_t>(epoch)};
      perm_.resize(static_cast<size_t>(total_windows_));
      std::iota(perm_.begin(), perm_.end(), int64_t{0});
      for (int64_t i = total_windows_ - 1; i > 0; --i) {
        int64_t j = std::min(i, static_cast<int64_t>(uniform_at(key, i) * (i + 1)));
        std::swap(perm_[i], perm_[j]);
      }
      perm_epoch_ = epoch;
    }
    global_window = perm_[position];
  }
  // The last shard whose first window is <= global_window (shards without windows are skipped).
  auto next = std::upper_bound(first_window_.begin(), first_window_.end(), global_window);
  *shard = static_cast<int>(next - first_window_.begin()) - 1;
  *window = global_window - first_window_[*shard];
}

}  // namespace relora
