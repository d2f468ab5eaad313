// Thin helpers over the HDF5 C API for the checkpoint module: owned identifiers, check
// macros that report the call, our file and line and HDF5's own message, a guard that
// silences HDF5's error printing while we handle errors ourselves, file access without
// file locking (NFS, Lustre), and typed attribute and tensor I/O.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace relora::h5 {

// An HDF5 identifier closed by its matching H5?close when the Id goes away.
class Id {
 public:
  using Closer = herr_t (*)(hid_t);
  Id() = default;
  Id(hid_t id, Closer close) : id_(id), close_(close) {}
  ~Id() {
    if (id_ >= 0) close_(id_);
  }
  Id(Id&& other) noexcept : id_(other.id_), close_(other.close_) { other.id_ = -1; }
  Id& operator=(Id&& other) noexcept;
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;

  hid_t get() const { return id_; }
  // Closes now and returns the close's result (for a file, the close writes its metadata).
  herr_t close();

 private:
  hid_t id_ = -1;
  Closer close_ = nullptr;
};

// HDF5's description of the error it just raised: the innermost (most specific) message of
// the current thread's error stack, or "" when the stack is empty.
std::string last_error_message();

// Whether the current error stack holds a filter-pipeline error (a checksum mismatch).
bool last_error_is_filter_failure();

[[noreturn]] void throw_call_failed(const char* call, const char* file, int line);
[[noreturn]] void throw_read_failed(const std::string& what, const char* call, const char* file,
                                    int line);

template <typename T>
T checked(T result, const char* call, const char* file, int line) {
  if (result < 0) throw_call_failed(call, file, line);
  return result;
}

template <typename T>
T checked_read(T result, const std::string& what, const char* call, const char* file, int line) {
  if (result < 0) throw_read_failed(what, call, file, line);
  return result;
}

// Silences HDF5's automatic error printing for its lifetime, so failures surface only as our
// exceptions; restores the previous handler after.
class QuietErrors {
 public:
  QuietErrors();
  ~QuietErrors();
  QuietErrors(const QuietErrors&) = delete;
  QuietErrors& operator=(const QuietErrors&) = delete;

 private:
  H5E_auto2_t previous_func_ = nullptr;
  void* previous_data_ = nullptr;
};

// A file access property list: the sec2 driver, file locking off (checkpoints live on
// NFS/Lustre, where HDF5's flock fails or hangs), and the HDF5 1.8 file format, which
// checksums most metadata and stores attributes of any size.
Id file_access();
// A file creation property list that tracks link creation order in the root group.
Id file_creation();
// A group creation property list that tracks (and indexes) link creation order, so tools
// list tensors in model order.
Id group_creation();

// Attributes on object `obj`: int64 and uint64 integers, float32, variable-length UTF-8
// strings, and one-dimensional arrays of int64 and of strings.
void write_attribute(hid_t obj, const char* name, int64_t value);
void write_attribute(hid_t obj, const char* name, uint64_t value);
void write_attribute(hid_t obj, const char* name, float value);
void write_attribute(hid_t obj, const char* name, const std::string& value);
void write_attribute(hid_t obj, const char* name, const std::vector<int64_t>& values);
void write_attribute(hid_t obj, const char* name, const std::vector<std::string>& values);

// Reading attribute `name` of object `obj` (at `obj_path`, for messages); a missing or
// mistyped attribute throws InputError prefixed with `where` ("checkpoint runs/x.h5").
int64_t read_int64_attribute(hid_t obj, const std::string& obj_path, const char* name,
                             const std::string& where);
uint64_t read_uint64_attribute(hid_t obj, const std::string& obj_path, const char* name,
                               const std::string& where);
float read_float_attribute(hid_t obj, const std::string& obj_path, const char* name,
                           const std::string& where);
std::string read_string_attribute(hid_t obj, const std::string& obj_path, const char* name,
                                  const std::string& where);
std::vector<int64_t> read_int64s_attribute(hid_t obj, const std::string& obj_path,
                                           const char* name, const std::string& where);
std::vector<std::string> read_strings_attribute(hid_t obj, const std::string& obj_path,
                                                const char* name, const std::string& where);

// Writes float32 datasets chunked (whole rows, about 4 MiB a chunk), uncompressed, with
// the Fletcher32 filter. Chunks go straight to the file (H5Dwrite_chunk) with our own
// checksum: HDF5 reads and verifies them as if its filter had written them, and the write
// costs one copy into a reused buffer instead of the filter pipeline's allocations and copies.
class TensorWriter {
 public:
  // Dataset `name` in group `parent`, from data (row-major, `shape`).
  void write(hid_t parent, const std::string& name, const std::vector<int64_t>& shape,
             const float* data);

 private:
  std::vector<unsigned char> chunk_;  // one chunk and its checksum
};

// Whether every component of the absolute `path` ("/lora/m/A") exists as a link.
bool path_exists(hid_t file, const std::string& path, const std::string& where);

// The shape of dataset `path`.
std::vector<int64_t> dataset_shape(hid_t file, const std::string& path, const std::string& where);

// Reads dataset `path` (shape already checked) into out as float32. A checksum failure throws
// InputError "<where>: dataset <path> is corrupt (checksum mismatch)".
void read_tensor(hid_t file, const std::string& path, float* out, const std::string& where);

// The absolute paths of every dataset in the file, in creation order where the file tracks
// it (ours do), else by name.
std::vector<std::string> list_datasets(hid_t file, const std::string& where);

// "[688, 256]"
std::string shape_text(const std::vector<int64_t>& shape);

}  // namespace relora::h5

// H5_CHECK(H5Dwrite(...)): the call's result; if negative, throws InternalError naming the
// call, this file and line, and HDF5's message. For calls on files we write.
#define H5_CHECK(call) ::relora::h5::checked((call), #call, __FILE__, __LINE__)

// H5_CHECK_READ(where, call): the same for a file we read, where a failure means a bad file:
// throws InputError "<where> is unreadable (corrupt?): <call> failed (file:line): <message>".
#define H5_CHECK_READ(where, call) \
  ::relora::h5::checked_read((call), (where), #call, __FILE__, __LINE__)
