// SentencePiece behind one small interface: load a model (ours, LLaMA's, T5's...), encode a
// document (BOS first, or EOS last for a model without BOS), decode, and train the BPE
// model `relora data prepare` makes when it is given no tokenizer.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace relora {

class Tokenizer {
 public:
  // Loads a SentencePiece model file; InputError if it cannot be read or is not a model,
  // or if the model has neither BOS nor EOS (documents could not be told apart).
  explicit Tokenizer(const std::string& model_path);
  // A model from its serialized bytes (as train_bpe_tokenizer returns them).
  Tokenizer(const std::string& serialized_model, const std::string& name);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;

  int vocab_size() const;
  int bos_id() const;  // -1 when the model has none
  int eos_id() const;  // -1 when the model has none
  // The piece of token `id`, e.g. "▁the" or "<0x0A>".
  std::string piece(int id) const;

  // Appends the document's tokens: BOS then the text's ids, or, for a model without BOS,
  // the ids then EOS. Safe to call from several threads at once.
  void encode_document(std::string_view text, std::vector<int32_t>* tokens) const;
  // The text of `ids` (control tokens such as BOS and EOS decode to nothing).
  std::string decode(const std::vector<int32_t>& ids) const;

 private:
  void check_document_marker() const;

  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
  std::string name_;
};

// Trains a BPE model of `vocab_size` pieces on `sentences` (lines of text, each at most
// kMaxTrainingSentenceBytes) with byte fallback, identity normalisation, whitespace kept
// and no dummy prefix, so that decode(encode(text)) == text byte for byte; unk 0, BOS 1,
// EOS 2, no padding. Returns the serialized model. InputError when `vocab_size` does not
// fit the text (too small for its characters, or more than it has pieces to learn).
// SentencePiece's BPE trainer runs on one thread (more do not speed it up), and the thread
// count is recorded in the model, so it is fixed at 1: the model does not depend on --jobs.
std::string train_bpe_tokenizer(const std::vector<std::string>& sentences, int vocab_size);

// SentencePiece's trainer ignores longer sentences (its max_sentence_length).
constexpr size_t kMaxTrainingSentenceBytes = 4192;

}  // namespace relora
