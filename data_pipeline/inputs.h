// Which files `relora data prepare --input ...` reads, in which order and as what format.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace relora {

enum class InputFormat {
  text,   // plain text: documents separated by blank lines (or a separator line), or one per file
  jsonl,  // one JSON object per line, the document in one string field
};

struct InputFile {
  std::string path;  // as reached: the argument, directory + entry names, or a glob match
  InputFormat format;
  int64_t bytes;  // size on disk (compressed size for gzip)
};

// The format a file name implies: jsonl for names ending in .jsonl or .jsonl.gz, text for
// any other (gzip is recognised by content, not by name).
InputFormat format_of(const std::string& path);

// Expands --input arguments into a list of files, in a fixed order: a file as it is; a
// directory recursively, entries sorted by name, hidden entries (".*") skipped; anything
// else as a glob pattern, matches sorted. A file or directory whose base name matches one
// of `excludes` (shell patterns, e.g. "*.dat") is skipped. A file reached twice (two
// arguments, or a symlink to a file already listed) is listed once. Throws InputError for
// an argument that names nothing, or when no file remains.
std::vector<InputFile> resolve_inputs(const std::vector<std::string>& arguments,
                                      const std::vector<std::string>& excludes);

}  // namespace relora
