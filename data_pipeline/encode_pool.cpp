// The ordered, bounded encoding pool (see encode_pool.h).
#include "data_pipeline/encode_pool.h"

#include "core/errors.h"

namespace relora {

EncodePool::EncodePool(const Tokenizer& tokenizer, int threads, int max_in_flight)
    : tokenizer_(tokenizer), max_in_flight_(static_cast<size_t>(max_in_flight)) {
  RELORA_CHECK(threads > 0 && max_in_flight > 0,
               "threads " << threads << ", batches in flight " << max_in_flight);
  threads_.reserve(static_cast<size_t>(threads));
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { work(); });
}

EncodePool::~EncodePool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_available_.notify_all();
  for (std::thread& thread : threads_) thread.join();
}

bool EncodePool::full() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return in_flight_.size() >= max_in_flight_;
}

bool EncodePool::empty() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return in_flight_.empty();
}

bool EncodePool::ready() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return !in_flight_.empty() && in_flight_.front()->done;
}

void EncodePool::submit(EncodeBatch batch) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    RELORA_CHECK(in_flight_.size() < max_in_flight_, "submit to a full encode pool");
    in_flight_.push_back(std::make_unique<Slot>());
    in_flight_.back()->batch = std::move(batch);
  }
  work_available_.notify_one();
}

EncodeBatch EncodePool::take() {
  std::unique_ptr<Slot> slot;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    RELORA_CHECK(!in_flight_.empty(), "take from an empty encode pool");
    batch_done_.wait(lock, [this] { return in_flight_.front()->done; });
    slot = std::move(in_flight_.front());
    in_flight_.pop_front();
  }
  if (slot->error) std::rethrow_exception(slot->error);
  return std::move(slot->batch);
}

void EncodePool::work() {
  while (true) {
    Slot* slot = nullptr;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_available_.wait(lock, [&] {
        if (stopping_) return true;
        for (const std::unique_ptr<Slot>& s : in_flight_) {
          if (!s->started) {
            slot = s.get();
            return true;
          }
        }
        return false;
      });
      if (slot == nullptr) return;  // stopping
      slot->started = true;
    }
    // Encode outside the lock; the slot stays put until it is marked done and taken.
    try {
      EncodeBatch& batch = slot->batch;
      batch.ends.reserve(batch.documents.size());
      for (std::string& document : batch.documents) {
        tokenizer_.encode_document(document, &batch.tokens);
        batch.ends.push_back(batch.tokens.size());
        std::string().swap(document);
      }
    } catch (...) {
      slot->error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      slot->done = true;
    }
    batch_done_.notify_all();
  }
}

}  // namespace relora
