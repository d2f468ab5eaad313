// SentencePiece loading, encoding, decoding and BPE training (see tokenizer.h).
#include "data_pipeline/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdlib>
#include <unordered_map>

#include "core/errors.h"

namespace relora {
namespace {

// Feeds the trainer from memory.
class SentenceList : public sentencepiece::SentenceIterator {
 public:
  explicit SentenceList(const std::vector<std::string>& sentences) : sentences_(sentences) {}
  bool done() const override { return index_ >= sentences_.size(); }
  void Next() override { ++index_; }
  const std::string& value() const override { return sentences_[index_]; }
  sentencepiece::util::Status status() const override { return sentencepiece::util::Status(); }

 private:
  const std::vector<std::string>& sentences_;
  size_t index_ = 0;
};

// The integer after `marker` in `text`, or -1.
long number_after(const std::string& text, const std::string& marker) {
  size_t at = text.find(marker);
  if (at == std::string::npos) return -1;
  char* end = nullptr;
  long value = std::strtol(text.c_str() + at + marker.size(), &end, 10);
  return end == text.c_str() + at + marker.size() ? -1 : value;
}

}  // namespace

Tokenizer::Tokenizer(const std::string& model_path)
    : processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()), name_(model_path) {
  sentencepiece::util::Status status = processor_->Load(model_path);
  if (!status.ok()) {
    RELORA_INPUT_ERROR(model_path << ": cannot load the SentencePiece model: " << status.ToString()
                                  << " (a tokenizer .model file is expected)");
  }
  check_document_marker();
}

Tokenizer::Tokenizer(const std::string& serialized_model, const std::string& name)
    : processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()), name_(name) {
  sentencepiece::util::Status status = processor_->LoadFromSerializedProto(serialized_model);
  RELORA_CHECK(status.ok(),
               "loading the SentencePiece model " << name << ": " << status.ToString());
  check_document_marker();
}

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;

void Tokenizer::check_document_marker() const {
  if (bos_id() < 0 && eos_id() < 0) {
    RELORA_INPUT_ERROR(name_ << ": the tokenizer has neither a BOS nor an EOS token, so documents "
                                "could not be told apart in the token stream");
  }
}

int Tokenizer::vocab_size() const { return processor_->GetPieceSize(); }
int Tokenizer::bos_id() const { return processor_->bos_id(); }
int Tokenizer::eos_id() const { return processor_->eos_id(); }
std::string Tokenizer::piece(int id) const { return processor_->IdToPiece(id); }

void Tokenizer::encode_document(std::string_view text, std::vector<int32_t>* tokens) const {
  std::vector<int> ids;
  sentencepiece::util::Status status = processor_->Encode(text, &ids);
  RELORA_CHECK(status.ok(), "encoding a document of " << text.size() << " bytes with " << name_
                                                      << ": " << status.ToString());
  if (bos_id() >= 0) tokens->push_back(bos_id());
  tokens->insert(tokens->end(), ids.begin(), ids.end());
  if (bos_id() < 0) tokens->push_back(eos_id());
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  sentencepiece::util::Status status =
      processor_->Decode(std::vector<int>(ids.begin(), ids.end()), &text);
  RELORA_CHECK(status.ok(),
               "decoding " << ids.size() << " tokens with " << name_ << ": " << status.ToString());
  return text;
}

std::string train_bpe_tokenizer(const std::vector<std::string>& sentences, int vocab_size) {
  const std::unordered_map<std::string, std::string> options = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(vocab_size)},
      {"byte_fallback", "true"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "false"},
      {"allow_whitespace_only_pieces", "true"},
      {"split_digits", "true"},
      {"character_coverage", "1.0"},
      {"input_sentence_size", "0"},  // the sample is bounded already; use all of it
      {"max_sentence_length", std::to_string(kMaxTrainingSentenceBytes)},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"num_threads", "1"},
      {"minloglevel", "2"},  // errors only: the trainer's progress log is not for our users
  };
  SentenceList sentence_list(sentences);
  std::string model;
  sentencepiece::util::Status status =
      sentencepiece::SentencePieceTrainer::Train(options, &sentence_list, &model);
  if (!status.ok()) {
    const std::string message = status.ToString();
    long at_most = number_after(message, "Please set it to a value <= ");
    if (at_most >= 0) {
      RELORA_INPUT_ERROR("--vocab-size " << vocab_size << " is more than this text allows: at most "
                                         << at_most
                                         << " pieces can be learned from it; lower --vocab-size "
                                            "or add text");
    }
    long needed = number_after(message, std::to_string(vocab_size) + " vs ");
    if (message.find("smaller than required_chars") != std::string::npos && needed >= 0) {
      RELORA_INPUT_ERROR("--vocab-size " << vocab_size << " is too small for this text: it needs "
                                         << "at least " << needed
                                         << " pieces (3 special, 256 byte and one per distinct "
                                            "character); raise --vocab-size");
    }
    RELORA_CHECK(status.ok(), "training the SentencePiece BPE tokenizer: " << message);
  }
  return model;
}

}  // namespace relora
