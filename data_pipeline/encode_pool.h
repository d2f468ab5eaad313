// Encodes batches of documents on a pool of threads and hands them back in the order they
// were submitted; at most `max_in_flight` batches are held at once, so memory stays bounded
// whatever the size of the input.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "data_pipeline/tokenizer.h"

namespace relora {

struct EncodeBatch {
  std::vector<std::string> documents;  // the texts; emptied once encoded
  std::vector<int64_t> text_bytes;     // bytes of each document's text
  std::vector<int32_t> tokens;         // every document's tokens, one after the other
  std::vector<size_t> ends;            // ends[i]: end of document i's tokens in `tokens`
};

class EncodePool {
 public:
  EncodePool(const Tokenizer& tokenizer, int threads, int max_in_flight);
  ~EncodePool();
  EncodePool(const EncodePool&) = delete;
  EncodePool& operator=(const EncodePool&) = delete;

  // max_in_flight batches are submitted and not yet taken back.
  bool full() const;
  // No batch is in flight.
  bool empty() const;
  // The oldest batch in flight is encoded.
  bool ready() const;
  // Queues a batch for encoding; requires !full().
  void submit(EncodeBatch batch);
  // Waits for the oldest batch in flight and returns it encoded; requires !empty(). Rethrows
  // the error if encoding it failed.
  EncodeBatch take();

 private:
  struct Slot {
    EncodeBatch batch;
    bool started = false;
    bool done = false;
    std::exception_ptr error;
  };
  void work();

  const Tokenizer& tokenizer_;
  const size_t max_in_flight_;
  mutable std::mutex mutex_;
  std::condition_variable work_available_, batch_done_;
  std::deque<std::unique_ptr<Slot>> in_flight_;  // submission order
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace relora
