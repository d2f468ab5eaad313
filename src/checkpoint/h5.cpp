// HDF5 helpers: identifiers, error capture, property lists, attributes and tensor datasets.
#include "checkpoint/h5.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "checkpoint/fletcher32.h"
#include "core/errors.h"

namespace relora::h5 {
namespace {

// Target bytes of one dataset chunk: large enough that per-chunk costs (index entries,
// filter calls, system calls) vanish, small enough that partial chunks waste little.
constexpr int64_t kChunkBytes = 4 << 20;

// "h5.cpp" out of the full __FILE__ path.
const char* base_name(const char* file) {
  const char* slash = std::strrchr(file, '/');
  return slash ? slash + 1 : file;
}

struct ErrorWalk {
  std::string innermost;
  bool filter_failure = false;
};

herr_t visit_error(unsigned n, const H5E_error2_t* err, void* data) {
  auto* walk = static_cast<ErrorWalk*>(data);
  if (n == 0 && err->desc != nullptr) walk->innermost = err->desc;
  if (err->maj_num == H5E_PLINE) walk->filter_failure = true;
  return 0;
}

ErrorWalk walk_error_stack() {
  ErrorWalk walk;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, visit_error, &walk);
  return walk;
}

Id scalar_space() { return Id(H5_CHECK(H5Screate(H5S_SCALAR)), H5Sclose); }

Id vector_space(size_t n) {
  const hsize_t dims[1] = {static_cast<hsize_t>(n)};
  return Id(H5_CHECK(H5Screate_simple(1, dims, nullptr)), H5Sclose);
}

Id utf8_string_type() {
  Id type(H5_CHECK(H5Tcopy(H5T_C_S1)), H5Tclose);
  H5_CHECK(H5Tset_size(type.get(), H5T_VARIABLE));
  H5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8));
  return type;
}

// An empty list is an attribute with no elements: nothing to write (and no buffer).
void write_attribute_data(hid_t obj, const char* name, hid_t file_type, hid_t mem_type,
                          const Id& space, const void* data) {
  Id attr(H5_CHECK(H5Acreate2(obj, name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT)),
          H5Aclose);
  if (H5_CHECK(H5Sget_simple_extent_npoints(space.get())) > 0)
    H5_CHECK(H5Awrite(attr.get(), mem_type, data));
}

// An opened attribute with what reading it needs to check.
struct OpenAttribute {
  Id attr, type, space;
  H5T_class_t type_class;
  hssize_t count;  // elements
  std::string description;  // "attribute 'step' of /optimizer/x"
};

OpenAttribute open_attribute(hid_t obj, const std::string& obj_path, const char* name,
                             const std::string& where) {
  OpenAttribute a;
  a.description = std::string("attribute '") + name + "' of " + obj_path;
  if (H5_CHECK_READ(where, H5Aexists(obj, name)) == 0) {
    RELORA_INPUT_ERROR(where << ": " << a.description << " is missing");
  }
  a.attr = Id(H5_CHECK_READ(where, H5Aopen(obj, name, H5P_DEFAULT)), H5Aclose);
  a.type = Id(H5_CHECK_READ(where, H5Aget_type(a.attr.get())), H5Tclose);
  a.space = Id(H5_CHECK_READ(where, H5Aget_space(a.attr.get())), H5Sclose);
  a.type_class = H5_CHECK_READ(where, H5Tget_class(a.type.get()));
  a.count = H5_CHECK_READ(where, H5Sget_simple_extent_npoints(a.space.get()));
  return a;
}

void expect_class(const OpenAttribute& a, H5T_class_t wanted, const char* kind,
                  const std::string& where) {
  if (a.type_class != wanted) {
    RELORA_INPUT_ERROR(where << ": " << a.description << " is not " << kind);
  }
}

void expect_one_value(const OpenAttribute& a, const std::string& where) {
  if (a.count != 1) {
    RELORA_INPUT_ERROR(where << ": " << a.description << " holds " << a.count
                             << " values, expected one");
  }
}

struct DatasetVisit {
  std::vector<std::string> paths;
};

herr_t visit_link(hid_t group, const char* name, const H5L_info_t* info, void* data) {
  if (info->type != H5L_TYPE_HARD) return 0;
  const hid_t obj = H5Oopen(group, name, H5P_DEFAULT);
  if (obj < 0) return -1;
  const bool is_dataset = H5Iget_type(obj) == H5I_DATASET;
  H5Oclose(obj);
  if (is_dataset) static_cast<DatasetVisit*>(data)->paths.push_back(std::string("/") + name);
  return 0;
}

}  // namespace

Id& Id::operator=(Id&& other) noexcept {
  if (this != &other) {
    if (id_ >= 0) close_(id_);
    id_ = other.id_;
    close_ = other.close_;
    other.id_ = -1;
  }
  return *this;
}

herr_t Id::close() {
  const herr_t status = id_ >= 0 ? close_(id_) : 0;
  id_ = -1;
  return status;
}

std::string last_error_message() { return walk_error_stack().innermost; }

bool last_error_is_filter_failure() { return walk_error_stack().filter_failure; }

void throw_call_failed(const char* call, const char* file, int line) {
  const std::string message = last_error_message();
  throw InternalError(std::string(base_name(file)) + ":" + std::to_string(line) +
                      ": HDF5 call failed: " + call + (message.empty() ? "" : ": " + message));
}

void throw_read_failed(const std::string& what, const char* call, const char* file, int line) {
  const std::string message = last_error_message();
  throw InputError(what + " is unreadable (corrupt file?): " + call + " failed (" +
                   base_name(file) + ":" + std::to_string(line) + ")" +
                   (message.empty() ? "" : ": " + message));
}

QuietErrors::QuietErrors() {
#if !(H5_VERSION_GE(1, 12, 1) || (H5_VERS_MAJOR == 1 && H5_VERS_MINOR == 10 && H5_VERS_RELEASE >= 7))
  // No H5Pset_file_locking in this HDF5: its environment switch is the only way.
  setenv("HDF5_USE_FILE_LOCKING", "FALSE", 0);
#endif
  H5Eget_auto2(H5E_DEFAULT, &previous_func_, &previous_data_);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

QuietErrors::~QuietErrors() { H5Eset_auto2(H5E_DEFAULT, previous_func_, previous_data_); }

Id file_access() {
  Id fapl(H5_CHECK(H5Pcreate(H5P_FILE_ACCESS)), H5Pclose);
  H5_CHECK(H5Pset_fapl_sec2(fapl.get()));
#if H5_VERSION_GE(1, 12, 1) || (H5_VERS_MAJOR == 1 && H5_VERS_MINOR == 10 && H5_VERS_RELEASE >= 7)
  H5_CHECK(H5Pset_file_locking(fapl.get(), false, true));
#endif
  H5_CHECK(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V18, H5F_LIBVER_V18));
  return fapl;
}

Id file_creation() {
  Id fcpl(H5_CHECK(H5Pcreate(H5P_FILE_CREATE)), H5Pclose);
  H5_CHECK(H5Pset_link_creation_order(fcpl.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED));
  return fcpl;
}

Id group_creation() {
  Id gcpl(H5_CHECK(H5Pcreate(H5P_GROUP_CREATE)), H5Pclose);
  H5_CHECK(H5Pset_link_creation_order(gcpl.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED));
  return gcpl;
}

void write_attribute(hid_t obj, const char* name, int64_t value) {
  write_attribute_data(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, scalar_space(), &value);
}

void write_attribute(hid_t obj, const char* name, uint64_t value) {
  write_attribute_data(obj, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, scalar_space(), &value);
}

void write_attribute(hid_t obj, const char* name, float value) {
  write_attribute_data(obj, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, scalar_space(), &value);
}

void write_attribute(hid_t obj, const char* name, const std::string& value) {
  const Id type = utf8_string_type();
  const char* text = value.c_str();
  write_attribute_data(obj, name, type.get(), type.get(), scalar_space(), &text);
}

void write_attribute(hid_t obj, const char* name, const std::vector<int64_t>& values) {
  write_attribute_data(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, vector_space(values.size()),
                       values.data());
}

void write_attribute(hid_t obj, const char* name, const std::vector<std::string>& values) {
  const Id type = utf8_string_type();
  std::vector<const char*> texts;
  for (const std::string& value : values) texts.push_back(value.c_str());
  write_attribute_data(obj, name, type.get(), type.get(), vector_space(values.size()),
                       texts.data());
}

namespace {

// One value of HDF5 class `cls` read as `memory_type` into a T.
template <typename T>
T read_scalar_attribute(hid_t obj, const std::string& obj_path, const char* name, const std::string& where,
                        H5T_class_t cls, const char* what, hid_t memory_type) {
  const OpenAttribute a = open_attribute(obj, obj_path, name, where);
  expect_class(a, cls, what, where);
  expect_one_value(a, where);
  T value{};
  H5_CHECK_READ(where, H5Aread(a.attr.get(), memory_type, &value));
  return value;
}

}  // namespace

int64_t read_int64_attribute(hid_t obj, const std::string& obj_path, const char* name,
                             const std::string& where) {
  return read_scalar_attribute<int64_t>(obj, obj_path, name, where, H5T_INTEGER, "an integer", H5T_NATIVE_INT64);
}

uint64_t read_uint64_attribute(hid_t obj, const std::string& obj_path, const char* name,
                               const std::string& where) {
  return read_scalar_attribute<uint64_t>(obj, obj_path, name, where, H5T_INTEGER, "an integer",
                                         H5T_NATIVE_UINT64);
}

float read_float_attribute(hid_t obj, const std::string& obj_path, const char* name,
                           const std::string& where) {
  return read_scalar_attribute<float>(obj, obj_path, name, where, H5T_FLOAT, "a number", H5T_NATIVE_FLOAT);
}

std::string read_string_attribute(hid_t obj, const std::string& obj_path, const char* name,
                                  const std::string& where) {
  const OpenAttribute a = open_attribute(obj, obj_path, name, where);
  expect_class(a, H5T_STRING, "a string", where);
  expect_one_value(a, where);
  if (H5_CHECK_READ(where, H5Tis_variable_str(a.type.get())) > 0) {
    const Id type = utf8_string_type();
    char* text = nullptr;
    H5_CHECK_READ(where, H5Aread(a.attr.get(), type.get(), &text));
    std::string value = text ? text : "";
    H5free_memory(text);
    return value;
  }
  // A fixed-length string (as tools other than relora may write): NUL-padded bytes.
  std::string value(H5_CHECK_READ(where, H5Tget_size(a.type.get())), '\0');
  H5_CHECK_READ(where, H5Aread(a.attr.get(), a.type.get(), value.data()));
  value.resize(std::strlen(value.c_str()));
  return value;
}

std::vector<int64_t> read_int64s_attribute(hid_t obj, const std::string& obj_path,
                                           const char* name, const std::string& where) {
  const OpenAttribute a = open_attribute(obj, obj_path, name, where);
  expect_class(a, H5T_INTEGER, "a list of integers", where);
  std::vector<int64_t> values(static_cast<size_t>(a.count));
  if (!values.empty()) H5_CHECK_READ(where, H5Aread(a.attr.get(), H5T_NATIVE_INT64, values.data()));
  return values;
}

std::vector<std::string> read_strings_attribute(hid_t obj, const std::string& obj_path,
                                                const char* name, const std::string& where) {
  const OpenAttribute a = open_attribute(obj, obj_path, name, where);
  expect_class(a, H5T_STRING, "a list of strings", where);
  if (H5_CHECK_READ(where, H5Tis_variable_str(a.type.get())) <= 0) {
    RELORA_INPUT_ERROR(where << ": " << a.description
                             << " is not a list of variable-length strings");
  }
  std::vector<char*> texts(static_cast<size_t>(a.count), nullptr);
  if (!texts.empty()) {
    const Id type = utf8_string_type();
    H5_CHECK_READ(where, H5Aread(a.attr.get(), type.get(), texts.data()));
  }
  std::vector<std::string> values;
  for (char* text : texts) {
    values.push_back(text ? text : "");
    H5free_memory(text);
  }
  return values;
}

void TensorWriter::write(hid_t parent, const std::string& name, const std::vector<int64_t>& shape,
                         const float* data) {
  RELORA_CHECK(!shape.empty() && shape[0] > 0, name << ": no rows");
  const std::vector<hsize_t> dims(shape.begin(), shape.end());
  // Whole rows per chunk, the chunks of a tensor near-equal in size and about kChunkBytes.
  int64_t row_floats = 1;
  for (size_t i = 1; i < shape.size(); ++i) row_floats *= shape[i];
  const int64_t row_bytes = row_floats * static_cast<int64_t>(sizeof(float));
  const int64_t rows = shape[0];
  const int64_t chunks = std::clamp<int64_t>((rows * row_bytes + kChunkBytes - 1) / kChunkBytes, 1, rows);
  const int64_t chunk_rows = (rows + chunks - 1) / chunks;
  std::vector<hsize_t> chunk_dims = dims;
  chunk_dims[0] = static_cast<hsize_t>(chunk_rows);

  Id dcpl(H5_CHECK(H5Pcreate(H5P_DATASET_CREATE)), H5Pclose);
  H5_CHECK(H5Pset_chunk(dcpl.get(), static_cast<int>(chunk_dims.size()), chunk_dims.data()));
  H5_CHECK(H5Pset_fletcher32(dcpl.get()));
  H5_CHECK(H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER));
  Id space(H5_CHECK(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr)),
           H5Sclose);
  // The file type is the memory type (IEEE little-endian float32 on every machine we build
  // for), so chunk bytes need no conversion.
  Id dataset(H5_CHECK(H5Dcreate2(parent, name.c_str(), H5T_NATIVE_FLOAT, space.get(), H5P_DEFAULT,
                                 dcpl.get(), H5P_DEFAULT)),
             H5Dclose);

  // A chunk is always stored whole: the last one, if partial, is zero-padded.
  const size_t chunk_bytes = static_cast<size_t>(chunk_rows * row_bytes);
  chunk_.resize(chunk_bytes + 4);
  std::vector<hsize_t> offset(dims.size(), 0);
  for (int64_t row = 0; row < rows; row += chunk_rows) {
    const size_t used = static_cast<size_t>(std::min(chunk_rows, rows - row) * row_bytes);
    std::memcpy(chunk_.data(), data + row * row_floats, used);
    std::memset(chunk_.data() + used, 0, chunk_bytes - used);
    const uint32_t checksum = checkpoint_detail::fletcher32(chunk_.data(), chunk_bytes);
    for (int i = 0; i < 4; ++i) chunk_[chunk_bytes + i] = static_cast<unsigned char>(checksum >> (8 * i));
    offset[0] = static_cast<hsize_t>(row);
    H5_CHECK(H5Dwrite_chunk(dataset.get(), H5P_DEFAULT, 0, offset.data(), chunk_.size(), chunk_.data()));
  }
}

bool path_exists(hid_t file, const std::string& path, const std::string& where) {
  for (size_t slash = path.find('/', 1);; slash = path.find('/', slash + 1)) {
    const std::string prefix = path.substr(0, slash);
    if (H5_CHECK_READ(where, H5Lexists(file, prefix.c_str(), H5P_DEFAULT)) <= 0) return false;
    if (slash == std::string::npos) return true;
  }
}

std::vector<int64_t> dataset_shape(hid_t file, const std::string& path, const std::string& where) {
  Id dataset(H5_CHECK_READ(where, H5Dopen2(file, path.c_str(), H5P_DEFAULT)), H5Dclose);
  Id space(H5_CHECK_READ(where, H5Dget_space(dataset.get())), H5Sclose);
  const int rank = H5_CHECK_READ(where, H5Sget_simple_extent_ndims(space.get()));
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5_CHECK_READ(where, H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr));
  return std::vector<int64_t>(dims.begin(), dims.end());
}

void read_tensor(hid_t file, const std::string& path, float* out, const std::string& where) {
  Id dataset(H5_CHECK_READ(where, H5Dopen2(file, path.c_str(), H5P_DEFAULT)), H5Dclose);
  if (H5Dread(dataset.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) {
    if (last_error_is_filter_failure()) {
      RELORA_INPUT_ERROR(where << ": dataset " << path << " is corrupt (checksum mismatch); use "
                               "another checkpoint (relora inspect lists a file's tensors)");
    }
    throw_read_failed(where, "H5Dread", __FILE__, __LINE__);
  }
}

std::vector<std::string> list_datasets(hid_t file, const std::string& where) {
  DatasetVisit visit;
  if (H5Lvisit(file, H5_INDEX_CRT_ORDER, H5_ITER_INC, visit_link, &visit) >= 0) return visit.paths;
  visit.paths.clear();  // a file without creation order (not written by relora): by name
  H5_CHECK_READ(where, H5Lvisit(file, H5_INDEX_NAME, H5_ITER_INC, visit_link, &visit));
  return visit.paths;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

}  // namespace relora::h5
