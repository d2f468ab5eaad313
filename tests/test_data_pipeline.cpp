// The data pipeline (relora data prepare / inspect): UTF-8 and JSON handling, line and
// document readers (plain, gzip, JSONL), input expansion, byte-exact text -> shards -> text
// round trips, the deterministic document-level split, shard rotation and checksums, the
// manifest, bad input (one message naming file and line, or --skip-bad), and atomic output.
#include <gtest/gtest.h>
#include <sentencepiece_trainer.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <map>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/errors.h"
#include "core/rng.h"
#include "data/shard.h"
#include "data_pipeline/data_command.h"
#include "data_pipeline/documents.h"
#include "data_pipeline/inputs.h"
#include "data_pipeline/inspect.h"
#include "data_pipeline/json.h"
#include "data_pipeline/line_reader.h"
#include "data_pipeline/manifest.h"
#include "data_pipeline/prepare.h"
#include "data_pipeline/shard_series.h"
#include "data_pipeline/tokenizer.h"
#include "data_pipeline/training_sample.h"
#include "data_pipeline/utf8.h"
#include "test_util.h"

namespace relora {
namespace {

namespace fs = std::filesystem;
using testing::expect_contains;
using testing::input_error_of;
using testing::TempDir;

// ---- helpers ------------------------------------------------------------------------------

void write_file(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

void write_gzip(const std::string& path, const std::string& bytes) {
  gzFile file = gzopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr) << path;
  ASSERT_EQ(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(file), Z_OK);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

// Every token of a shard, after TokenShard has validated it.
std::vector<int32_t> shard_tokens(const std::string& path) {
  TokenShard shard(path, 1 << 30);
  const std::string bytes = read_file(path);
  std::vector<int32_t> tokens(static_cast<size_t>(shard.num_tokens()));
  const char* data = bytes.data() + 1024;
  for (size_t i = 0; i < tokens.size(); ++i) {
    uint32_t token = 0;
    std::memcpy(&token, data + i * shard.bytes_per_token(),
                static_cast<size_t>(shard.bytes_per_token()));
    tokens[i] = static_cast<int32_t>(token);
  }
  return tokens;
}

// Every token of a split's shards in DIR, in order.
std::vector<int32_t> split_tokens(const std::string& dir, const std::string& split) {
  std::vector<int32_t> all;
  for (const std::string& path : glob_files(dir + "/" + split + "_*.bin", split)) {
    std::vector<int32_t> tokens = shard_tokens(path);
    all.insert(all.end(), tokens.begin(), tokens.end());
  }
  return all;
}

// A token stream cut into documents, each starting at `bos`.
std::vector<std::vector<int32_t>> documents_of(const std::vector<int32_t>& tokens, int bos) {
  std::vector<std::vector<int32_t>> documents;
  for (int32_t t : tokens) {
    if (t == bos) {
      documents.emplace_back();
    } else {
      EXPECT_FALSE(documents.empty()) << "tokens before the first BOS";
      if (!documents.empty()) documents.back().push_back(t);
    }
  }
  return documents;
}

// The decoded text of every document of both splits (train first, then val).
std::vector<std::string> decoded_documents(const std::string& dir) {
  Tokenizer tokenizer(dir + "/tokenizer.model");
  std::vector<std::string> texts;
  for (const char* split : {"train", "val"}) {
    for (const auto& doc : documents_of(split_tokens(dir, split), tokenizer.bos_id())) {
      texts.push_back(tokenizer.decode(doc));
    }
  }
  return texts;
}

// Deterministic English-like text: `n` documents of a few lines each, with tabs, runs of
// spaces, digits, punctuation and a little non-ASCII text.
std::vector<std::string> synthetic_documents(int n, uint64_t seed) {
  static const char* words[] = {
      "the",   "model", "learns", "from",  "text", "and",     "every", "restart", "merges",
      "low",   "rank",  "update", "into",  "its",  "weights", "while", "data",    "flows",
      "shard", "token", "café",   "naïve", "über", "日本語",  "piece", "byte",    "fallback"};
  const int num_words = static_cast<int>(sizeof(words) / sizeof(words[0]));
  const char* separators[] = {" ", " ", " ", " ", "  ", "\t", ", ", ". ", "\n", "\n\t"};
  std::vector<std::string> documents;
  int64_t draw = 0;
  auto pick = [&](int range) {
    return static_cast<int>(
        uniform_at({seed, RngPurpose::test, 0, 0}, static_cast<uint64_t>(draw++)) * range);
  };
  for (int d = 0; d < n; ++d) {
    std::string doc;
    int length = 8 + pick(40);
    for (int w = 0; w < length; ++w) {
      if (w > 0) doc += separators[pick(10)];
      doc += pick(12) == 0 ? std::to_string(pick(100000)) : words[pick(num_words)];
    }
    documents.push_back(doc);
  }
  return documents;
}

// `docs` as a fortune-style file: each document followed by a line holding only "%".
std::string fortune_file(const std::vector<std::string>& docs) {
  std::string text;
  for (const std::string& doc : docs) text += doc + "\n%\n";
  return text;
}

PrepareOptions quiet_options(const std::vector<std::string>& inputs, const std::string& out_dir) {
  PrepareOptions options;
  options.inputs = inputs;
  options.out_dir = out_dir;
  options.vocab_size = 400;
  options.jobs = 2;
  options.report = false;
  options.command = "test";
  return options;
}

// Runs `relora data ARGS...` through data_command.
int run_data_command(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  return data_command(static_cast<int>(argv.size()), argv.data());
}

// ---- UTF-8 and JSON -----------------------------------------------------------------------

TEST(Utf8, AcceptsValidAndFindsTheFirstBadByte) {
  const std::string ascii = "plain ascii, long enough for the fast path";
  EXPECT_EQ(first_invalid_utf8(ascii), ascii.size());
  const std::string valid = "é 日本語 😀 \x7f";
  EXPECT_EQ(first_invalid_utf8(valid), valid.size());
  EXPECT_EQ(first_invalid_utf8("ab\xC0\x80"), 2u);        // overlong NUL
  EXPECT_EQ(first_invalid_utf8("abc\xED\xA0\x80"), 3u);   // surrogate U+D800
  EXPECT_EQ(first_invalid_utf8("\xF4\x90\x80\x80"), 0u);  // above U+10FFFF
  EXPECT_EQ(first_invalid_utf8("12345678\xE2\x82"), 8u);  // truncated at the end
  EXPECT_EQ(first_invalid_utf8("x\x80y"), 1u);            // stray continuation byte
  EXPECT_EQ(first_invalid_utf8("\xE0\x9F\xBF"), 0u);      // overlong 3-byte form
  std::string encoded;
  for (uint32_t cp : {0x41u, 0xE9u, 0x65E5u, 0x1F600u}) append_utf8(cp, &encoded);
  EXPECT_EQ(encoded, "Aé日😀");
}

TEST(Json, ParsesEscapesSurrogatePairsAndNesting) {
  JsonValue value;
  std::string error;
  const std::string text = R"( {"text": "a\"b\\c\/d\n\t\u00e9\ud83d\ude00\u0000z",)"
                           R"( "n": [1, -2.5e3, 0, true, false, null, {"y": "z"}], "text": "last"} )";
  ASSERT_TRUE(parse_json(text, &value, &error)) << error;
  ASSERT_EQ(value.type, JsonValue::Type::object);
  EXPECT_EQ(value.object[0].second.string, std::string("a\"b\\c/d\n\té😀\0z", 17));
  EXPECT_EQ(value.find("text")->string, "last");  // a repeated key: the last one
  const JsonValue& n = *value.find("n");
  ASSERT_EQ(n.array.size(), 7u);
  EXPECT_EQ(n.array[1].number, -2500.0);
  EXPECT_EQ(n.array[3].type, JsonValue::Type::boolean);
  EXPECT_EQ(n.array[5].type, JsonValue::Type::null);
  EXPECT_EQ(n.array[6].find("y")->string, "z");
  EXPECT_EQ(value.find("missing"), nullptr);
}

TEST(Json, RejectsInvalidTextWithAColumn) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"a": 1,})", "expected a string as object key at column 9"},
      {R"({"a" 1})", "expected ':'"},
      {R"([1 2])", "expected ',' or ']'"},
      {R"({"a": "abc)", "unterminated string"},
      {R"({"a": "\x"})", "invalid escape '\\x' at column 8"},
      {R"({"a": "\ud800"})", "high surrogate"},
      {R"({"a": "\ud800\u0041"})", "high surrogate"},
      {R"({"a": "\udc00"})", "unpaired low surrogate"},
      {R"({"a": "\u12g4"})", "four hex digits"},
      {R"(01)", "unexpected text after the JSON value"},
      {R"(1.)", "digits expected after '.'"},
      {R"(-)", "invalid number"},
      {R"(tru)", "expected true or false"},
      {R"({"a": 1} x)", "unexpected text after the JSON value at column 10"},
      {"{\"a\": \"tab\there\"}", "control character"},
      {"", "a value was expected"},
      {std::string(600, '['), "nested deeper than 512"},
  };
  for (const auto& [text, expected] : cases) {
    JsonValue value;
    std::string error;
    EXPECT_FALSE(parse_json(text, &value, &error)) << text;
    EXPECT_NE(error.find(expected), std::string::npos) << text << " -> " << error;
  }
}

TEST(Json, QuotedStringsParseBack) {
  const std::string text =
      std::string("quote \" backslash \\ newline \n tab \t bell \x07 nul ", 44) +
      std::string(1, '\0') + " é 😀";
  JsonValue value;
  std::string error;
  ASSERT_TRUE(parse_json(json_quote(text), &value, &error)) << error;
  EXPECT_EQ(value.string, text);
}

// ---- reading lines, documents and inputs --------------------------------------------------

TEST(LineReader, ReadsPlainAndGzipAlikeWithLineNumbers) {
  TempDir dir;
  const std::string long_line(3 << 20, 'x');  // longer than one read
  const std::string text = "first\r\n\nthird\n" + long_line + "\nlast without newline";
  write_file(dir.file("a.txt"), text);
  write_gzip(dir.file("a.txt.gz"), text);
  for (const char* name : {"a.txt", "a.txt.gz"}) {
    LineReader reader(dir.file(name));
    std::vector<std::string> lines;
    std::string_view line;
    while (reader.next(&line)) {
      lines.emplace_back(line);
      EXPECT_EQ(reader.line_number(), static_cast<int64_t>(lines.size()));
      EXPECT_EQ(reader.line_had_newline(), lines.size() < 5) << name << " line " << lines.size();
    }
    ASSERT_EQ(lines.size(), 5u) << name;
    EXPECT_EQ(lines[0], "first\r");
    EXPECT_EQ(lines[1], "");
    EXPECT_EQ(lines[3], long_line);
    EXPECT_EQ(lines[4], "last without newline");
    EXPECT_FALSE(reader.looks_binary());
  }
}

TEST(LineReader, NamesUnreadableAndCorruptFiles) {
  TempDir dir;
  expect_contains(input_error_of([&] { LineReader r(dir.file("missing.txt")); }),
                  {dir.file("missing.txt"), "cannot open", "No such file"});
  std::string text;
  for (int i = 0; i < 20000; ++i) text += "line " + std::to_string(i) + " of a compressed file\n";
  write_gzip(dir.file("whole.gz"), text);
  const std::string gz = read_file(dir.file("whole.gz"));
  write_file(dir.file("cut.gz"), gz.substr(0, gz.size() / 2));
  expect_contains(input_error_of([&] {
                    LineReader reader(dir.file("cut.gz"));
                    std::string_view line;
                    while (reader.next(&line)) {
                    }
                  }),
                  {dir.file("cut.gz") + ":", "corrupt or truncated"});
  write_file(dir.file("binary.dat"), std::string("\0\0\0\2 strfile index", 19));
  EXPECT_TRUE(LineReader(dir.file("binary.dat")).looks_binary());
}

std::vector<std::string> read_documents(const std::vector<InputFile>& files,
                                        const DocumentOptions& options) {
  DocumentReader reader(files, options);
  std::vector<std::string> documents;
  std::string text;
  while (reader.next(&text)) documents.push_back(text);
  return documents;
}

TEST(Documents, SplitsTextAtBlankLinesSeparatorsOrFiles) {
  TempDir dir;
  write_file(dir.file("blank.txt"), "\n\none\nstill one\n \t\ntwo\r\n\r\n\n  three  \n\n");
  write_file(dir.file("fortune"), "%\nfirst\n\n  indented\n%\r\nsecond\n%\n%\n   \n%\nthird");
  write_file(dir.file("whole.txt"), "  leading\n\ntrailing blank lines\n\n");
  auto file = [&](const std::string& name) {
    return InputFile{dir.file(name), InputFormat::text, 0};
  };
  DocumentOptions blank;
  EXPECT_EQ(read_documents({file("blank.txt")}, blank),
            (std::vector<std::string>{"one\nstill one", "two\r", "  three  "}));
  DocumentOptions percent;
  percent.separator = "%";
  EXPECT_EQ(read_documents({file("fortune")}, percent),
            (std::vector<std::string>{"first\n\n  indented", "second", "third"}));
  DocumentOptions per_file;
  per_file.doc_per_file = true;
  EXPECT_EQ(read_documents({file("whole.txt"), file("fortune")}, per_file),
            (std::vector<std::string>{"  leading\n\ntrailing blank lines\n\n",
                                      "%\nfirst\n\n  indented\n%\r\nsecond\n%\n%\n   \n%\nthird"}));
}

TEST(Documents, ReadsJsonlFieldsWithEscapes) {
  TempDir dir;
  const std::string jsonl =
      R"({"id": 1, "text": "line one\nline \"two\"\t\u00e9 \ud83d\ude00",)"
      R"( "meta": {"text": "nested"}})"
      "\n"
      "\n"
      R"({"text": "   "})"
      "\n"
      R"({"body": "other field", "text": "x"})"
      "\n";
  write_file(dir.file("a.jsonl"), jsonl);
  write_gzip(dir.file("b.jsonl.gz"), jsonl);
  std::vector<InputFile> files = resolve_inputs({dir.path()}, {});
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[1].format, InputFormat::jsonl);
  DocumentOptions options;
  const std::vector<std::string> expected = {"line one\nline \"two\"\té 😀", "x"};
  std::vector<std::string> documents = read_documents(files, options);
  EXPECT_EQ(documents,
            (std::vector<std::string>{expected[0], expected[1], expected[0], expected[1]}));
  options.text_field = "body";
  options.skip_bad = true;
  options.warn_skipped = false;
  DocumentReader reader({files[0]}, options);
  std::string text;
  ASSERT_TRUE(reader.next(&text));
  EXPECT_EQ(text, "other field");
  EXPECT_FALSE(reader.next(&text));
  EXPECT_EQ(reader.bad_lines(), 2);  // lines 1 and 3 have no "body"
}

TEST(Documents, BadLinesNameFileAndLineOrAreSkippedAndCounted) {
  TempDir dir;
  write_file(dir.file("bad.jsonl"),
             "{\"text\": \"fine\"}\n{\"text\": \"unterminated}\n{\"title\": \"no text\"}\n"
             "{\"text\": 42}\n[\"not an object\"]\n{\"text\": \"bad \xC3\x28 utf8\"}\n{\"text\": "
             "\"ok\"}\n");
  write_file(dir.file("bad.txt"), "good doc\n\nbad \xFF line\nsame doc\n\nnext good\n");
  const InputFile jsonl{dir.file("bad.jsonl"), InputFormat::jsonl, 0};
  const InputFile text{dir.file("bad.txt"), InputFormat::text, 0};
  DocumentOptions strict;
  expect_contains(
      input_error_of([&] { read_documents({jsonl}, strict); }),
      {dir.file("bad.jsonl") + ":2: invalid JSON: unterminated string at column 10", "--skip-bad"});
  const std::string text_error = input_error_of([&] { read_documents({text}, strict); });
  expect_contains(text_error, {dir.file("bad.txt") + ":3: invalid UTF-8 at column 5 (byte 0xFF)", "--skip-bad"});
  EXPECT_EQ(text_error.find("dropped"), std::string::npos) << text_error;  // nothing is, it stops

  const std::vector<std::pair<int, std::string>> expected_problems = {
      {2, "invalid JSON"},
      {3, "no field \"text\""},
      {4, "field \"text\" is a number"},
      {5, "a JSON line must be an object, this is an array"},
      {6, "invalid UTF-8 at column 15"}};
  std::string lines = read_file(dir.file("bad.jsonl"));
  for (const auto& [line, problem] : expected_problems) {
    // Each bad line alone after a good one: the message names that line.
    std::istringstream in(lines);
    std::string first, current;
    std::getline(in, first);
    for (int i = 2; i <= line; ++i) std::getline(in, current);
    write_file(dir.file("one.jsonl"), first + "\n" + current + "\n");
    expect_contains(input_error_of([&] {
                      read_documents({{dir.file("one.jsonl"), InputFormat::jsonl, 0}}, strict);
                    }),
                    {dir.file("one.jsonl") + ":2: " + problem});
  }

  DocumentOptions skip;
  skip.skip_bad = true;
  skip.warn_skipped = false;
  DocumentReader jsonl_reader({jsonl}, skip);
  std::vector<std::string> kept;
  std::string doc;
  while (jsonl_reader.next(&doc)) kept.push_back(doc);
  EXPECT_EQ(kept, (std::vector<std::string>{"fine", "ok"}));
  EXPECT_EQ(jsonl_reader.bad_lines(), 5);
  DocumentReader text_reader({text}, skip);
  kept.clear();
  while (text_reader.next(&doc)) kept.push_back(doc);
  EXPECT_EQ(kept, (std::vector<std::string>{"good doc",
                                            "next good"}));  // the bad line's document is dropped
  EXPECT_EQ(text_reader.bad_lines(), 1);
}

TEST(Inputs, ExpandsDirectoriesGlobsAndExcludesOnce) {
  TempDir dir;
  write_file(dir.file("corpus/b.txt"), "b");
  write_file(dir.file("corpus/a.jsonl.gz"), "a");
  write_file(dir.file("corpus/sub/c"), "c");
  write_file(dir.file("corpus/sub/c.dat"), "index");
  write_file(dir.file("corpus/.hidden"), "h");
  write_file(dir.file("corpus/off/rot13"), "o");
  fs::create_symlink(dir.file("corpus/sub/c"), dir.file("corpus/sub/c.u8"));
  std::vector<InputFile> files =
      resolve_inputs({dir.file("corpus"), dir.file("corpus/b.txt")}, {"*.dat", "off"});
  std::vector<std::string> paths;
  for (const InputFile& f : files) paths.push_back(f.path);
  EXPECT_EQ(paths, (std::vector<std::string>{dir.file("corpus/a.jsonl.gz"),
                                             dir.file("corpus/b.txt"), dir.file("corpus/sub/c")}));
  EXPECT_EQ(files[0].format, InputFormat::jsonl);
  EXPECT_EQ(files[1].format, InputFormat::text);
  EXPECT_EQ(files[1].bytes, 1);

  files = resolve_inputs({dir.file("corpus/sub/c*")}, {"*.dat"});
  ASSERT_EQ(files.size(), 1u);  // c and its symlink c.u8: one file
  expect_contains(input_error_of([&] { resolve_inputs({dir.file("nothing")}, {}); }),
                  {"--input " + dir.file("nothing"), "no such file"});
  expect_contains(input_error_of([&] { resolve_inputs({dir.file("corpus/*.md")}, {}); }),
                  {"no file matches", dir.file("corpus/*.md")});
  expect_contains(input_error_of([&] { resolve_inputs({dir.file("corpus/sub")}, {"c*"}); }),
                  {"no file to read"});
  fs::create_symlink(dir.file("gone"), dir.file("corpus/dangling"));
  expect_contains(input_error_of([&] { resolve_inputs({dir.file("corpus")}, {}); }),
                  {dir.file("corpus/dangling"), "cannot read"});
}

// ---- the tokenizer, the sample and the shard writer ---------------------------------------

TEST(TrainingSample, KeepsTheSmallestKeysWithinTheBudgetWhateverTheOrder) {
  std::vector<std::string> docs = synthetic_documents(200, 5);
  TrainingSample forward(7, 4000), backward(7, 4000);
  for (size_t i = 0; i < docs.size(); ++i) forward.add_document(static_cast<int64_t>(i), docs[i]);
  for (size_t i = docs.size(); i-- > 0;) backward.add_document(static_cast<int64_t>(i), docs[i]);
  EXPECT_LE(forward.bytes(), 4000);
  EXPECT_GT(forward.bytes(), 3000);
  std::vector<std::string> lines = forward.take_lines();
  EXPECT_EQ(lines, backward.take_lines());
  EXPECT_GT(lines.size(), 10u);
  for (const std::string& line : lines) {
    EXPECT_FALSE(line.empty());
    EXPECT_EQ(line.find('\n'), std::string::npos);
  }
  TrainingSample long_lines(1, 1 << 20);
  std::string words;
  while (words.size() < 3 * kMaxTrainingSentenceBytes) words += "word ";
  long_lines.add_document(0, words);
  lines = long_lines.take_lines();
  ASSERT_EQ(lines.size(), 4u);
  std::string joined;
  for (const std::string& line : lines) {
    EXPECT_LE(line.size(), kMaxTrainingSentenceBytes);
    joined += line;
  }
  EXPECT_EQ(joined, words);  // cut before spaces, nothing lost
}

TEST(Tokenizer, VocabularyThatDoesNotFitIsOneClearLine) {
  std::vector<std::string> lines = {"a small text", "with few pieces to learn"};
  expect_contains(
      input_error_of([&] { train_bpe_tokenizer(lines, 5000); }),
      {"--vocab-size 5000 is more than this text allows: at most", "lower --vocab-size"});
  lines.push_back("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789");
  expect_contains(
      input_error_of([&] { train_bpe_tokenizer(lines, 270); }),
      {"--vocab-size 270 is too small for this text: it needs at least", "raise --vocab-size"});
  TempDir dir;
  write_file(dir.file("not.model"), "not a model");
  expect_contains(input_error_of([&] { Tokenizer t(dir.file("not.model")); }),
                  {dir.file("not.model"), "cannot load the SentencePiece model"});
}

TEST(ShardWriter, AppearsUnderItsNameOnlyWhenCompleteWithTheFilesCrc) {
  TempDir dir;
  const std::string path = dir.file("s.bin");
  for (int width : {2, 4}) {
    fs::remove(path);
    std::vector<int32_t> tokens;
    for (int i = 0; i < 300000; ++i) tokens.push_back(width == 2 ? i % 65536 : 70000 + i);
    {
      TokenShardWriter writer(path, width);
      writer.append(tokens.data(), 1000);
      EXPECT_FALSE(fs::exists(path));
      EXPECT_TRUE(fs::exists(path + ".tmp"));
    }
    EXPECT_FALSE(fs::exists(path + ".tmp")) << "an abandoned shard leaves nothing behind";
    EXPECT_FALSE(fs::exists(path));
    TokenShardWriter writer(path, width);
    writer.append(tokens.data(), 123);
    writer.append(tokens.data() + 123, tokens.size() - 123);
    uint32_t crc = writer.commit();
    EXPECT_FALSE(fs::exists(path + ".tmp"));
    const std::string bytes = read_file(path);
    EXPECT_EQ(crc, crc32(0, reinterpret_cast<const Bytef*>(bytes.data()),
                         static_cast<uInt>(bytes.size())));
    EXPECT_EQ(shard_tokens(path), tokens);
    EXPECT_EQ(TokenShard(path, 1 << 30).bytes_per_token(), width);
  }
}

TEST(ShardSeries, RotatesAtShardTokensAcrossDocuments) {
  TempDir dir;
  std::vector<int32_t> tokens(250);
  for (int i = 0; i < 250; ++i) tokens[static_cast<size_t>(i)] = i;
  ShardSeries series(dir.path(), "train", 2, 100);
  series.append(tokens.data(), 30);
  series.append(tokens.data() + 30, 220);
  std::vector<ShardRecord> shards = series.finish();
  ASSERT_EQ(shards.size(), 3u);
  EXPECT_EQ(shards[0].file, "train_000000.bin");
  EXPECT_EQ(shards[2].file, "train_000002.bin");
  EXPECT_EQ(shards[0].tokens, 100);
  EXPECT_EQ(shards[2].tokens, 50);
  EXPECT_EQ(split_tokens(dir.path(), "train"), tokens);
  EXPECT_EQ(shards[1].checksum.substr(0, 6), "crc32:");
  EXPECT_EQ(shards[1].checksum.size(), 14u);
}

// ---- prepare end to end -------------------------------------------------------------------

class PrepareTest : public ::testing::Test {
 protected:
  // 300 documents in two fortune-style files, one of them gzipped.
  void SetUp() override {
    documents_ = synthetic_documents(300, 11);
    documents_[0] = " leading space, trailing spaces   \n\nand a blank line inside";
    documents_[1] =
        "tabs\tand\t\ttabs, unicode ü 日本語, emoji 😀👍🏽 (byte fallback), \r carriage";
    documents_[2] = "\n\nstarts with newlines and ends with them\n\n";
    std::vector<std::string> first(documents_.begin(), documents_.begin() + 150);
    std::vector<std::string> second(documents_.begin() + 150, documents_.end());
    write_file(dir_.file("in/a_fortunes"), fortune_file(first));
    write_gzip(dir_.file("in/b_fortunes.gz"), fortune_file(second));
  }
  PrepareOptions options(const std::string& out) const {
    PrepareOptions o = quiet_options({dir_.file("in")}, dir_.file(out));
    o.documents.separator = "%";
    return o;
  }

  TempDir dir_;
  std::vector<std::string> documents_;
};

TEST_F(PrepareTest, RoundTripIsByteExactAndTheSplitIsByDocument) {
  PrepareOptions o = options("out");
  o.val_fraction = 0.1;
  PrepareResult result = prepare_data(o);
  const Manifest& m = result.manifest;
  EXPECT_EQ(m.train.documents + m.val.documents, 300);
  EXPECT_GT(m.val.documents, 10);
  EXPECT_LT(m.val.documents, 60);
  EXPECT_EQ(m.vocab_size, 400);
  EXPECT_EQ(m.bytes_per_token, 2);

  // Every document comes back byte for byte, train ones in input order, then val ones.
  std::vector<std::string> train_docs, val_docs;
  for (size_t i = 0; i < documents_.size(); ++i) {
    (uniform_at({o.seed, RngPurpose::data_split, 0, 0}, i) < o.val_fraction ? val_docs : train_docs)
        .push_back(documents_[i]);
  }
  std::vector<std::string> expected = train_docs;
  expected.insert(expected.end(), val_docs.begin(), val_docs.end());
  EXPECT_EQ(decoded_documents(o.out_dir), expected);
  EXPECT_EQ(m.val.documents, static_cast<int64_t>(val_docs.size()));
}

TEST_F(PrepareTest, ManifestMatchesTheShardsAndInspectChecksThem) {
  PrepareOptions o = options("out");
  o.shard_tokens = 2000;
  o.command = "relora data prepare --input in --doc-separator % --out out";
  const Manifest written = prepare_data(o).manifest;
  const Manifest m = read_manifest(o.out_dir + "/manifest.json");
  EXPECT_EQ(m.command, o.command);
  EXPECT_EQ(m.inputs,
            (std::vector<std::string>{dir_.file("in/a_fortunes"), dir_.file("in/b_fortunes.gz")}));
  EXPECT_EQ(m.tokenizer_source, "trained");
  EXPECT_EQ(m.bos_id, 1);
  EXPECT_EQ(m.eos_id, 2);
  EXPECT_EQ(m.seed, 1234u);
  EXPECT_EQ(m.val_fraction, 0.005);
  int64_t hashed_to_val = 0;
  for (uint64_t i = 0; i < 300; ++i)
    hashed_to_val += uniform_at({1234, RngPurpose::data_split, 0, 0}, i) < 0.005;
  EXPECT_EQ(m.val.documents, std::max<int64_t>(hashed_to_val, 1));
  EXPECT_EQ(m.shards.size(), written.shards.size());
  std::map<std::string, SplitCounts> found;
  for (const ShardRecord& record : m.shards) {
    const std::string path = o.out_dir + "/" + record.file;
    const std::vector<int32_t> tokens = shard_tokens(path);
    EXPECT_EQ(static_cast<int64_t>(tokens.size()), record.tokens) << record.file;
    EXPECT_LE(record.tokens, 2000);
    const std::string bytes = read_file(path);
    EXPECT_EQ(
        record.checksum,
        crc32_checksum(static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(bytes.data()),
                                                   static_cast<uInt>(bytes.size())))));
    found[record.split].tokens += record.tokens;
    for (int32_t t : tokens) found[record.split].documents += t == m.bos_id;
  }
  EXPECT_GT(found["train"].tokens, 2000) << "several train shards";
  for (const auto& [split, counts] :
       {std::pair<std::string, SplitCounts>{"train", m.train}, {"val", m.val}}) {
    EXPECT_EQ(found[split].tokens, counts.tokens) << split;
    EXPECT_EQ(found[split].documents, counts.documents) << split;
  }
  int64_t text_bytes = 0;
  for (const std::string& doc : documents_) text_bytes += static_cast<int64_t>(doc.size());
  EXPECT_EQ(m.train.text_bytes + m.val.text_bytes, text_bytes);

  ::testing::internal::CaptureStdout();
  inspect_data({o.out_dir, 16, ""});
  const std::string report = ::testing::internal::GetCapturedStdout();
  EXPECT_NE(report.find("command:   " + o.command), std::string::npos) << report;
  EXPECT_NE(report.find("text: <s>"), std::string::npos) << report;
  EXPECT_NE(report.find("\nok\n"), std::string::npos) << report;

  // A changed byte (here in the header's unused words) or a stray shard is an error naming
  // the file.
  const std::string shard = o.out_dir + "/train_000001.bin";
  std::string bytes = read_file(shard);
  bytes[100] ^= 1;
  write_file(shard, bytes);
  ::testing::internal::CaptureStdout();
  const std::string changed = input_error_of([&] { inspect_data({o.out_dir, 0, ""}); });
  ::testing::internal::GetCapturedStdout();
  expect_contains(changed, {shard, "checksum crc32:", "re-run prepare"});
  write_file(o.out_dir + "/val_000007.bin", read_file(o.out_dir + "/val_000000.bin"));
  ::testing::internal::CaptureStdout();
  const std::string stray = input_error_of([&] { inspect_data({o.out_dir, 0, ""}); });
  ::testing::internal::GetCapturedStdout();
  expect_contains(stray, {"val_000007.bin is not in", "manifest.json"});
}

TEST_F(PrepareTest, OutputIsDeterministicWhateverTheThreadCount) {
  PrepareOptions o = options("one");
  o.jobs = 1;
  o.val_fraction = 0.2;
  o.shard_tokens = 3000;
  prepare_data(o);
  PrepareOptions p = options("three");
  p.jobs = 3;
  p.val_fraction = 0.2;
  p.shard_tokens = 3000;
  prepare_data(p);
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(o.out_dir))
    names.push_back(entry.path().filename().string());
  EXPECT_GE(names.size(), 5u);
  for (const std::string& name : names) {
    EXPECT_TRUE(read_file(o.out_dir + "/" + name) == read_file(p.out_dir + "/" + name)) << name;
  }
  PrepareOptions q = options("other_seed");
  q.val_fraction = 0.2;
  q.seed = 99;
  const Manifest other = prepare_data(q).manifest;
  EXPECT_NE(split_tokens(q.out_dir, "val"), split_tokens(o.out_dir, "val"));
  EXPECT_EQ(other.train.documents + other.val.documents, 300);
}

TEST_F(PrepareTest, GivenTokenizerIsUsedAsItIsAndCopied) {
  PrepareOptions trained = options("trained");
  prepare_data(trained);
  PrepareOptions given = options("given");
  given.tokenizer = trained.out_dir + "/tokenizer.model";
  given.vocab_size = 0;
  const Manifest m = prepare_data(given).manifest;
  EXPECT_EQ(m.tokenizer_source, given.tokenizer);
  EXPECT_EQ(read_file(given.out_dir + "/tokenizer.model"), read_file(given.tokenizer));
  EXPECT_EQ(split_tokens(given.out_dir, "train"), split_tokens(trained.out_dir, "train"));
  given.tokenizer = given.out_dir + "/tokenizer.model";  // its own copy: used in place
  prepare_data(given);
  EXPECT_EQ(split_tokens(given.out_dir, "train"), split_tokens(trained.out_dir, "train"));
}

TEST_F(PrepareTest, ModelWithoutBosEndsEveryDocumentWithEos) {
  // A T5-like model: no BOS, EOS 1.
  std::vector<std::string> lines;
  for (const std::string& doc : documents_) lines.push_back(doc.substr(0, doc.find('\n')));
  struct Lines : sentencepiece::SentenceIterator {
    const std::vector<std::string>* lines;
    size_t i = 0;
    bool done() const override { return i >= lines->size(); }
    void Next() override { ++i; }
    const std::string& value() const override { return (*lines)[i]; }
    sentencepiece::util::Status status() const override { return {}; }
  } iterator;
  iterator.lines = &lines;
  std::string model;
  const std::unordered_map<std::string, std::string> spec = {
      {"model_type", "bpe"}, {"vocab_size", "400"}, {"byte_fallback", "true"},
      {"bos_id", "-1"},      {"eos_id", "1"},       {"unk_id", "0"},
      {"pad_id", "-1"},      {"minloglevel", "2"}};
  ASSERT_TRUE(sentencepiece::SentencePieceTrainer::Train(spec, &iterator, &model).ok());
  write_file(dir_.file("t5like.model"), model);
  PrepareOptions o = options("eos");
  o.tokenizer = dir_.file("t5like.model");
  const Manifest m = prepare_data(o).manifest;
  EXPECT_EQ(m.bos_id, -1);
  EXPECT_EQ(m.eos_id, 1);
  const std::vector<int32_t> tokens = split_tokens(o.out_dir, "train");
  ASSERT_FALSE(tokens.empty());
  EXPECT_EQ(tokens.back(), 1);
  int64_t eos = 0;
  for (int32_t t : tokens) eos += t == 1;
  EXPECT_EQ(eos, m.train.documents);
}

TEST_F(PrepareTest, AtLeastOneValidationDocumentAndEnoughDocuments) {
  write_file(dir_.file("three/docs.txt"), "first document\n\nsecond document\n\nthird document\n");
  PrepareOptions o = quiet_options({dir_.file("three")}, dir_.file("three_out"));
  o.vocab_size = 280;
  o.val_fraction = 1e-9;
  const Manifest m = prepare_data(o).manifest;
  EXPECT_EQ(m.val.documents, 1);
  EXPECT_EQ(m.train.documents, 2);
  EXPECT_EQ(decoded_documents(o.out_dir),
            (std::vector<std::string>{"first document", "second document", "third document"}));

  write_file(dir_.file("one/doc.txt"), "a single document\nof two lines\n");
  PrepareOptions single = quiet_options({dir_.file("one")}, dir_.file("one_out"));
  expect_contains(input_error_of([&] { prepare_data(single); }),
                  {"only 1 document", "at least 2 are needed", "or use --doc-per-file"});
  single.documents.doc_per_file = true;  // then the hint is more files, not the option given
  single.out_dir = dir_.file("one_out_per_file");
  const std::string per_file = input_error_of([&] { prepare_data(single); });
  expect_contains(per_file, {"only 1 document", "give at least 2 input files"});
  EXPECT_EQ(per_file.find("--doc-per-file"), std::string::npos) << per_file;
  PrepareOptions most = quiet_options({dir_.file("three")}, dir_.file("three_out"));
  most.val_fraction = 0.999999;
  expect_contains(input_error_of([&] { prepare_data(most); }),
                  {"--val-fraction 0.999999: all 3 documents went to validation"});
}

TEST_F(PrepareTest, BadInputStopsWithFileAndLineOrIsSkippedWithSkipBad) {
  write_file(dir_.file("in/c.jsonl"),
             "{\"text\": \"a good line of json text\"}\n{\"text\": oops}\n");
  PrepareOptions o = options("bad");
  expect_contains(input_error_of([&] { prepare_data(o); }),
                  {dir_.file("in/c.jsonl") + ":2: invalid JSON", "--skip-bad"});
  EXPECT_FALSE(fs::exists(o.out_dir + "/manifest.json"));
  o.documents.skip_bad = true;
  o.documents.warn_skipped = false;
  const Manifest m = prepare_data(o).manifest;
  EXPECT_EQ(m.skipped_lines, 1);
  EXPECT_EQ(m.train.documents + m.val.documents, 301);
  EXPECT_EQ(read_manifest(o.out_dir + "/manifest.json").skipped_lines, 1);
}

TEST_F(PrepareTest, EmptyCorpusAndOversizedVocabularyAreClearErrors) {
  write_file(dir_.file("empty/a.txt"), "\n\n   \n");
  write_gzip(dir_.file("empty/b.txt.gz"), "");
  PrepareOptions empty = quiet_options({dir_.file("empty")}, dir_.file("empty_out"));
  expect_contains(input_error_of([&] { prepare_data(empty); }),
                  {"--input " + dir_.file("empty"), "no documents in the 2 input file(s)"});
  PrepareOptions huge = options("huge");
  huge.vocab_size = 50000;
  expect_contains(input_error_of([&] { prepare_data(huge); }),
                  {"--vocab-size 50000 is more than this text allows"});
}

TEST_F(PrepareTest, FailedRunLeavesNoCompleteLookingShardAndNoManifest) {
  PrepareOptions o = options("out");
  o.shard_tokens = 1000;
  prepare_data(o);
  const size_t first_run_shards = read_manifest(o.out_dir + "/manifest.json").shards.size();
  EXPECT_GT(first_run_shards, 5u);
  // A bad line at the very end: shards were already being written when it is found.
  write_file(dir_.file("in/z.txt"), "fine text\n\nbroken \xC3 text\n");
  PrepareOptions given = o;
  given.tokenizer = dir_.file("tok.model");
  fs::copy_file(o.out_dir + "/tokenizer.model", given.tokenizer);
  given.vocab_size = 0;
  expect_contains(input_error_of([&] { prepare_data(given); }),
                  {dir_.file("in/z.txt") + ":3: invalid UTF-8"});
  EXPECT_FALSE(fs::exists(o.out_dir + "/manifest.json"))
      << "an interrupted directory has no manifest";
  for (const auto& entry : fs::directory_iterator(o.out_dir)) {
    const std::string name = entry.path().filename().string();
    EXPECT_EQ(name.find(".tmp"), std::string::npos) << name;
    if (name.find(".bin") != std::string::npos) {
      EXPECT_NO_THROW(TokenShard(entry.path().string(), 400)) << name;
    }
  }
  // A later run with larger shards removes the shards it does not write.
  fs::remove(dir_.file("in/z.txt"));
  o.shard_tokens = 100000000;
  EXPECT_EQ(prepare_data(o).manifest.shards.size(), 2u);
  EXPECT_EQ(glob_files(o.out_dir + "/*.bin", "shards").size(), 2u);
}

// ---- the command line ---------------------------------------------------------------------

TEST(DataCommand, HelpAndArgumentErrors) {
  ::testing::internal::CaptureStdout();
  EXPECT_EQ(run_data_command({"--help"}), 0);
  EXPECT_EQ(run_data_command({"prepare", "--help"}), 0);
  EXPECT_EQ(run_data_command({"inspect", "--help"}), 0);
  const std::string help = ::testing::internal::GetCapturedStdout();
  for (const char* option :
       {"--input PATH...", "--exclude GLOB", "--doc-separator S", "--doc-per-file",
        "--text-field NAME", "--skip-bad", "--tokenizer MODEL", "--vocab-size N", "--sample-mb N",
        "--out DIR", "--val-fraction F", "--seed N", "--shard-tokens N", "--jobs N",
        "--tokens N"}) {
    EXPECT_NE(help.find(option), std::string::npos) << option;
  }
  expect_contains(input_error_of([] {
                    run_data_command({"prepare", "--input", "x"});
                  }),
                  {"--out DIR is required"});
  expect_contains(input_error_of([] {
                    run_data_command({"prepare", "--out", "x"});
                  }),
                  {"--input PATH... is required"});
  expect_contains(input_error_of([] {
                    run_data_command({"prepare", "--input", "x", "--out", "y", "--bogus"});
                  }),
                  {"unknown option '--bogus'"});
  expect_contains(input_error_of([] {
                    run_data_command({"prepare", "--input", "x", "--out", "y", "--tokenizer",
                                      "t.model", "--vocab-size", "100"});
                  }),
                  {"--vocab-size applies to a tokenizer trained here"});
  expect_contains(
      input_error_of([] {
        run_data_command({"prepare", "--input", "x", "--out", "y", "--val-fraction", "1"});
      }),
      {"--val-fraction 1: expected a number between 0 and 1"});
  expect_contains(input_error_of([] {
                    run_data_command({"prepare", "--input", "x", "--out", "y", "--jobs", "0"});
                  }),
                  {"--jobs 0: expected an integer in [1, 1024]"});
  expect_contains(input_error_of([] { run_data_command({"frobnicate"}); }),
                  {"unknown command 'relora data frobnicate'"});
  expect_contains(input_error_of([] {
                    run_data_command({"inspect", "/nonexistent/dir"});
                  }),
                  {"/nonexistent/dir: no such file or directory"});
}

TEST(DataCommand, PrepareRecordsItsCommandLineQuotedForTheShell) {
  TempDir dir;
  std::string text;
  for (const std::string& doc : synthetic_documents(40, 3)) text += doc + "\n\n";
  write_file(dir.file("in dir/a.txt"), text);
  ::testing::internal::CaptureStdout();
  EXPECT_EQ(run_data_command({"prepare", "--input", dir.file("in dir"), "--exclude", "*.md",
                              "--out", dir.file("out"), "--vocab-size", "400", "--jobs", "2"}),
            0);
  const std::string output = ::testing::internal::GetCapturedStdout();
  EXPECT_NE(output.find("/s with 2 thread(s)"), std::string::npos) << output;
  EXPECT_EQ(read_manifest(dir.file("out/manifest.json")).command,
            "relora data prepare --input '" + dir.file("in dir") + "' --exclude '*.md' --out " +
                dir.file("out") + " --vocab-size 400 --jobs 2");
}

}  // namespace
}  // namespace relora
