// Whole small files: reading one, and writing one atomically (temporary name, then rename),
// for the tokenizer model and the manifest.
#pragma once
#include <string>

namespace relora {

// The bytes of `path`; InputError naming the file if it cannot be read.
std::string read_whole_file(const std::string& path);

// Writes `bytes` to `path` + ".tmp", then renames it to `path`, so `path` is either the old
// file or the complete new one.
void write_file_atomically(const std::string& path, const std::string& bytes);

}  // namespace relora
