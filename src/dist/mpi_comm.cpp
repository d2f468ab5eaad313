// MpiComm: the communicator over MPI_COMM_WORLD, host memory, through the MPI plugin
// (librelora_mpi.so, the C interface of mpi_api.h). The plugin is loaded only here, when an
// MPI launcher started the process, so relora itself links no MPI: a single-process run
// needs no MPI runtime on the node. The plugin lies next to the relora executable, or where
// RELORA_MPI_PLUGIN says; it stays loaded until the process exits.
#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/errors.h"
#include "dist/communicator.h"
#include "dist/mpi_api.h"

// A plugin call: its failure is an InternalError with the plugin's message.
#define PLUGIN_CHECK(call)                             \
  do {                                                 \
    err_[0] = '\0';                                    \
    const int plugin_rc_ = (call);                     \
    RELORA_CHECK(plugin_rc_ == 0, #call ": " << err_); \
  } while (0)

namespace relora {
namespace {

// MPI counts are int: reduce and broadcast in pieces of at most 1 Gi elements.
constexpr int64_t kMaxCount = 1 << 30;

// The directory of the running executable.
std::string executable_dir() {
  std::string path(4096, '\0');
  const ssize_t n = readlink("/proc/self/exe", path.data(), path.size());
  RELORA_CHECK(n > 0 && n < static_cast<ssize_t>(path.size()),
               "readlink(/proc/self/exe): " << std::strerror(errno));
  path.resize(static_cast<size_t>(n));
  return path.substr(0, path.rfind('/'));
}

std::string plugin_path() {
  const char* path = std::getenv("RELORA_MPI_PLUGIN");
  return path && *path ? path : executable_dir() + "/librelora_mpi.so";
}

[[noreturn]] void plugin_error(const std::string& path, const std::string& what) {
  RELORA_INPUT_ERROR("an MPI launcher started this process, but the MPI plugin "
                     << path << " " << what
                     << "; install the MPI runtime relora was built with (ldd on the plugin names it), "
                        "keep librelora_mpi.so next to the relora executable (or set RELORA_MPI_PLUGIN), "
                        "or run without mpirun for a single process");
}

// Loads the plugin. RTLD_GLOBAL: some MPI builds dlopen components of their own that look
// up libmpi's symbols in the global scope (mpi4py loads MPI so too; the Debian 12 Open MPI
// also works with RTLD_LOCAL); the plugin itself exports only its entry point.
const RelMpiApi& load_plugin() {
  const std::string path = plugin_path();
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (!handle) plugin_error(path, std::string("cannot be loaded: ") + dlerror());
  void* entry = dlsym(handle, RELORA_MPI_API_SYMBOL);
  if (!entry) plugin_error(path, std::string("is not relora's MPI plugin: ") + dlerror());
  const RelMpiApi* api = reinterpret_cast<RelMpiApiEntry>(entry)(RELORA_MPI_API_VERSION);
  if (!api) plugin_error(path, "is of another relora build (interface version differs)");
  return *api;
}

RelMpiOp plugin_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::avg: return REL_MPI_SUM;
    case ReduceOp::min: return REL_MPI_MIN;
    case ReduceOp::max: return REL_MPI_MAX;
  }
  return REL_MPI_SUM;
}

class MpiComm final : public Communicator {
 public:
  MpiComm() : api_(load_plugin()) { PLUGIN_CHECK(api_.init(&rank_, &world_, &local_rank_, &local_size_, err_)); }
  ~MpiComm() override {
    if (api_.finalize(err_) != 0) std::fprintf(stderr, "relora: warning: %s\n", err_);
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }
  const char* name() const override { return "mpi"; }

  void all_reduce(float* data, int64_t n, ReduceOp op) override {
    RELORA_CHECK(op == ReduceOp::sum || op == ReduceOp::avg, "float all_reduce: sum or avg");
    reduce(data, n, REL_MPI_FLOAT, plugin_op(op));
    if (op == ReduceOp::avg) divide_by_world(data, n);
  }
  void all_reduce(double* data, int64_t n, ReduceOp op) override {
    reduce(data, n, REL_MPI_DOUBLE, plugin_op(op));
    if (op == ReduceOp::avg)
      for (int64_t i = 0; i < n; ++i) data[i] /= world_;
  }
  void all_reduce(uint64_t* data, int64_t n, ReduceOp op) override {
    RELORA_CHECK(op != ReduceOp::avg, "uint64 all_reduce: sum, min or max");
    reduce(data, n, REL_MPI_UINT64, plugin_op(op));
  }

  // MPI has no average: the plugin sums, and wait_all divides what was started as avg.
  void all_reduce_start(void* data, int64_t n, DType dtype, ReduceOp op) override {
    RELORA_CHECK((dtype == DType::f32 && (op == ReduceOp::sum || op == ReduceOp::avg)) ||
                     (dtype == DType::bf16 && op == ReduceOp::sum),
                 "all_reduce_start: f32 sum or avg, or bf16 sum");
    const RelMpiType type = dtype == DType::bf16 ? REL_MPI_BF16 : REL_MPI_FLOAT;
    char* bytes = static_cast<char*>(data);
    const int64_t element = static_cast<int64_t>(element_size(dtype));
    for (int64_t done = 0; done < n; done += kMaxCount)
      PLUGIN_CHECK(api_.all_reduce_sum_start(bytes + done * element, piece(n - done), type, err_));
    if (op == ReduceOp::avg) pending_averages_.push_back({static_cast<float*>(data), n});
  }
  void progress() override { PLUGIN_CHECK(api_.progress(err_)); }
  void wait_all() override {
    std::vector<Span> averages;
    averages.swap(pending_averages_);  // forgotten even when the wait fails
    PLUGIN_CHECK(api_.wait_all(err_));
    for (const Span& span : averages) divide_by_world(span.data, span.n);
  }

  void broadcast(void* data, int64_t bytes, int root) override {
    char* p = static_cast<char*>(data);
    for (int64_t done = 0; done < bytes; done += kMaxCount)
      PLUGIN_CHECK(api_.broadcast(p + done, piece(bytes - done), root, err_));
  }
  void barrier() override { PLUGIN_CHECK(api_.barrier(err_)); }
  [[noreturn]] void abort(int exit_code) override {
    api_.abort(exit_code);
    std::_Exit(exit_code);
  }

 private:
  struct Span {
    float* data;
    int64_t n;
  };

  static int piece(int64_t left) { return static_cast<int>(std::min(kMaxCount, left)); }

  // Sum to average, in place (exact when the world size is a power of two).
  void divide_by_world(float* x, int64_t n) const {
    const float world = static_cast<float>(world_);
    for (int64_t i = 0; i < n; ++i) x[i] /= world;
  }

  template <typename T>
  void reduce(T* data, int64_t n, RelMpiType type, RelMpiOp op) {
    for (int64_t done = 0; done < n; done += kMaxCount)
      PLUGIN_CHECK(api_.all_reduce(data + done, piece(n - done), type, op, err_));
  }

  const RelMpiApi& api_;
  int rank_ = 0, world_ = 1, local_rank_ = 0, local_size_ = 1;
  std::vector<Span> pending_averages_;  // f32 started as avg, divided by wait_all
  char err_[RELORA_MPI_ERROR_LEN] = {};
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_comm() { return std::make_unique<MpiComm>(); }

}  // namespace relora
