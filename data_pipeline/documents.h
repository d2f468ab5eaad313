// Documents from the input files, streamed one at a time: plain text split at blank lines,
// at a separator line or per file; JSONL with the text in one string field. A binary file
// (a NUL byte near its start) is skipped and listed. Every line is checked (UTF-8, JSON); a
// bad line is an InputError naming file and line, or, with skip_bad, is skipped and counted.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data_pipeline/inputs.h"
#include "data_pipeline/line_reader.h"

namespace relora {

// The longest document accepted: the encoder holds a whole document (and a few times its
// size in working memory) at once.
constexpr int64_t kMaxDocumentBytes = int64_t{64} << 20;

struct DocumentOptions {
  bool doc_per_file = false;  // text: each file is one document, byte for byte
  std::string separator;      // text: a line holding only this ends a document; "" = a blank line
  std::string text_field = "text";  // jsonl: the field holding the document
  bool skip_bad = false;            // skip and count bad lines instead of stopping
  bool warn_skipped = true;         // print the first few skipped lines on stderr
};

class DocumentReader {
 public:
  DocumentReader(const std::vector<InputFile>& files, const DocumentOptions& options);
  ~DocumentReader();

  // The next document (never empty or only whitespace); false after the last one.
  bool next(std::string* text);

  int64_t bad_lines() const { return bad_lines_; }
  // Files read so far, and binary files skipped so far.
  const std::vector<std::string>& read_files() const { return read_files_; }
  const std::vector<std::string>& binary_files() const { return binary_files_; }
  // Bytes of the input files consumed so far (compressed bytes for gzip).
  int64_t input_bytes() const;

 private:
  bool next_jsonl(std::string_view line, std::string* text);
  // Handles one text line; true when it completes a document, moved into *text.
  bool next_text(std::string_view line, std::string* text);
  // Moves the document gathered so far into *text if it has content; resets it either way.
  bool take_document(std::string* text);
  void append_to_document(std::string_view line);
  // A bad line: InputError, or (skip_bad) counted and maybe reported, with `when_skipped`
  // (what skipping it does beyond the line, e.g. " (its document is dropped)").
  void bad_line(const std::string& problem, const char* when_skipped = "");

  std::vector<InputFile> files_;
  DocumentOptions options_;
  size_t next_file_ = 0;
  std::unique_ptr<LineReader> reader_;
  InputFormat format_ = InputFormat::text;
  int64_t finished_bytes_ = 0;  // bytes of the files read to the end
  int64_t bad_lines_ = 0;
  std::vector<std::string> read_files_, binary_files_;

  // The text document being gathered.
  std::string document_;
  int64_t document_lines_ = 0;
  bool document_bad_ = false;
};

}  // namespace relora
