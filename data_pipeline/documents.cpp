// Streaming documents out of text and JSONL files (see documents.h).
#include "data_pipeline/documents.h"

#include <cstdio>

#include "core/errors.h"
#include "data_pipeline/json.h"
#include "data_pipeline/utf8.h"

namespace relora {
namespace {

constexpr int64_t kSkippedLinesReported = 10;  // warnings printed before going quiet

bool is_whitespace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

bool is_blank(std::string_view s) {
  for (char c : s) {
    if (!is_whitespace(c)) return false;
  }
  return true;
}

// "" when `line` is valid UTF-8 without NUL bytes, else what is wrong with it.
std::string text_line_problem(std::string_view line) {
  size_t bad = first_invalid_utf8(line);
  if (bad < line.size()) {
    char byte[8];
    std::snprintf(byte, sizeof(byte), "0x%02X", static_cast<unsigned char>(line[bad]));
    return "invalid UTF-8 at column " + std::to_string(bad + 1) + " (byte " + byte + ")";
  }
  size_t nul = line.find('\0');
  if (nul != std::string_view::npos) {
    return "NUL byte at column " + std::to_string(nul + 1) + " (binary data, not text?)";
  }
  return "";
}

}  // namespace

DocumentReader::DocumentReader(const std::vector<InputFile>& files, const DocumentOptions& options)
    : files_(files), options_(options) {}

DocumentReader::~DocumentReader() = default;

int64_t DocumentReader::input_bytes() const {
  return finished_bytes_ + (reader_ ? reader_->file_offset() : 0);
}

void DocumentReader::bad_line(const std::string& problem, const char* when_skipped) {
  if (!options_.skip_bad) {
    RELORA_INPUT_ERROR(reader_->path() << ":" << reader_->line_number() << ": " << problem
                                       << "; fix the input, or pass --skip-bad to skip bad lines");
  }
  ++bad_lines_;
  if (options_.warn_skipped && bad_lines_ <= kSkippedLinesReported) {
    std::fprintf(
        stderr, "relora: warning: %s:%ld: %s; skipped%s%s\n", reader_->path().c_str(),
        static_cast<long>(reader_->line_number()), problem.c_str(), when_skipped,
        bad_lines_ == kSkippedLinesReported ? " (further skipped lines are only counted)" : "");
  }
}

bool DocumentReader::next(std::string* text) {
  while (true) {
    if (!reader_) {
      if (next_file_ == files_.size()) return false;
      const InputFile& file = files_[next_file_++];
      reader_ = std::make_unique<LineReader>(file.path);
      format_ = file.format;
      if (reader_->looks_binary()) {
        binary_files_.push_back(file.path);
        finished_bytes_ += file.bytes;
        reader_.reset();
        continue;
      }
      read_files_.push_back(file.path);
    }
    std::string_view line;
    if (!reader_->next(&line)) {
      // End of the file: it ends the document being gathered too.
      bool got = format_ == InputFormat::text && take_document(text);
      finished_bytes_ += files_[next_file_ - 1].bytes;
      reader_.reset();
      if (got) return true;
      continue;
    }
    bool got = format_ == InputFormat::jsonl ? next_jsonl(line, text) : next_text(line, text);
    if (got) return true;
  }
}

bool DocumentReader::next_jsonl(std::string_view line, std::string* text) {
  if (is_blank(line)) return false;
  std::string problem = text_line_problem(line);
  if (!problem.empty()) {
    bad_line(problem);
    return false;
  }
  JsonValue value;
  std::string error;
  if (!parse_json(line, &value, &error)) {
    bad_line("invalid JSON: " + error);
    return false;
  }
  if (value.type != JsonValue::Type::object) {
    bad_line(std::string("a JSON line must be an object, this is ") + value.type_name());
    return false;
  }
  const JsonValue* field = value.find(options_.text_field);
  if (field == nullptr) {
    bad_line("no field \"" + options_.text_field + "\" (--text-field names the text's field)");
    return false;
  }
  if (field->type != JsonValue::Type::string) {
    bad_line("field \"" + options_.text_field + "\" is " + field->type_name() + ", not a string");
    return false;
  }
  if (static_cast<int64_t>(field->string.size()) > kMaxDocumentBytes) {
    RELORA_INPUT_ERROR(reader_->path() << ":" << reader_->line_number() << ": document of "
                                       << field->string.size() << " bytes, over the limit of "
                                       << kMaxDocumentBytes << "; split it into smaller documents");
  }
  if (is_blank(field->string)) return false;
  *text = field->string;
  return true;
}

bool DocumentReader::next_text(std::string_view line, std::string* text) {
  std::string problem = text_line_problem(line);
  if (!problem.empty()) {
    bad_line(problem, options_.doc_per_file ? " (the file's document is dropped)" : " (its document is dropped)");
    document_bad_ = true;
    return false;
  }
  if (options_.doc_per_file) {
    append_to_document(line);
    return false;
  }
  std::string_view content = line;
  if (!content.empty() && content.back() == '\r') content.remove_suffix(1);
  bool separator = options_.separator.empty() ? is_blank(content) : content == options_.separator;
  if (separator) return take_document(text);
  append_to_document(line);
  return false;
}

void DocumentReader::append_to_document(std::string_view line) {
  if (document_bad_) return;
  // Lines are joined with '\n'; in a per-file document every '\n' of the file is kept.
  if (document_lines_ > 0 && !options_.doc_per_file) document_ += '\n';
  document_.append(line.data(), line.size());
  if (options_.doc_per_file && reader_->line_had_newline()) document_ += '\n';
  ++document_lines_;
  if (static_cast<int64_t>(document_.size()) > kMaxDocumentBytes) {
    RELORA_INPUT_ERROR(reader_->path()
                       << ":" << reader_->line_number() << ": document longer than the limit of "
                       << kMaxDocumentBytes
                       << " bytes; split the text into smaller documents (blank "
                          "lines or --doc-separator)");
  }
}

bool DocumentReader::take_document(std::string* text) {
  bool got = !document_bad_ && !is_blank(document_);
  if (got) text->swap(document_);
  document_.clear();
  document_lines_ = 0;
  document_bad_ = false;
  return got;
}

}  // namespace relora
