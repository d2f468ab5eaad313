// NcclComm: gradient all-reduce over NCCL on device memory, for CUDA runs with several
// ranks. Rank 0 creates the NCCL unique id and the host communicator (MPI) broadcasts it;
// host-memory collectives (losses, checksums, strings, checkpoint broadcasts) stay on the host
// communicator. NCCL runs on its own stream: a bucket's all-reduce waits for an event
// recorded on the compute stream at the moment backward marked it ready, and wait_all()
// polls for completion, checking ncclCommGetAsyncError (once more after they completed:
// a result finished after an error is not used), so a dead peer or a broken network ends
// the job with a message, at the latest after train.comm_timeout, instead of hanging it. The blocking
// host calls (ncclCommInitRank waits for every rank to join; a collective call may open
// connections) run under a Watchdog with the same timeout.
// libnccl.so.2 is loaded with dlopen when the first NcclComm is made, so single-GPU and CPU
// runs of a CUDA build need no NCCL installed.
#include <dlfcn.h>
#include <nccl.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "backend/cuda/check.h"
#include "backend/cuda/stream.h"
#include "core/errors.h"
#include "dist/communicator.h"
#include "dist/watchdog.h"

namespace relora {
namespace {

// The NCCL entry points this file uses, resolved from libnccl.so.2.
struct NcclApi {
  decltype(&ncclGetVersion) get_version;
  decltype(&ncclGetUniqueId) get_unique_id;
  decltype(&ncclCommInitRank) comm_init_rank;
  decltype(&ncclAllReduce) all_reduce;
  decltype(&ncclCommGetAsyncError) get_async_error;
  decltype(&ncclCommDestroy) comm_destroy;
  decltype(&ncclGetErrorString) error_string;
};

// The emulated build (tests/cuda_sim) names its own NCCL by absolute path, so that no
// LD_LIBRARY_PATH can hand it the real one.
#ifndef RELORA_NCCL_LIBRARY
#define RELORA_NCCL_LIBRARY "libnccl.so.2"
#endif

const NcclApi& nccl_api() {
  static const NcclApi api = [] {
    void* lib = dlopen(RELORA_NCCL_LIBRARY, RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr)
      RELORA_INPUT_ERROR("train.device cuda with several ranks needs NCCL, but " RELORA_NCCL_LIBRARY " could not be "
                         "loaded ("
                         << dlerror() << "); install NCCL or add its lib directory to LD_LIBRARY_PATH");
    auto symbol = [&](const char* name) {
      void* s = dlsym(lib, name);
      if (s == nullptr) RELORA_INPUT_ERROR("libnccl.so.2 has no " << name << ": NCCL 2.10 or newer is needed");
      return s;
    };
    NcclApi a;
    a.get_version = reinterpret_cast<decltype(a.get_version)>(symbol("ncclGetVersion"));
    a.get_unique_id = reinterpret_cast<decltype(a.get_unique_id)>(symbol("ncclGetUniqueId"));
    a.comm_init_rank = reinterpret_cast<decltype(a.comm_init_rank)>(symbol("ncclCommInitRank"));
    a.all_reduce = reinterpret_cast<decltype(a.all_reduce)>(symbol("ncclAllReduce"));
    a.get_async_error = reinterpret_cast<decltype(a.get_async_error)>(symbol("ncclCommGetAsyncError"));
    a.comm_destroy = reinterpret_cast<decltype(a.comm_destroy)>(symbol("ncclCommDestroy"));
    a.error_string = reinterpret_cast<decltype(a.error_string)>(symbol("ncclGetErrorString"));
    return a;
  }();
  return api;
}

// What a failed NCCL call may mean for this program, beyond NCCL's own string.
const char* nccl_hint(ncclResult_t rc) {
  return rc == ncclUnhandledCudaError
             ? " (NCCL allocates device memory beside the arena that the memory budget sized: if the "
               "GPU is nearly full, lower train.micro_batch or set train.recompute: true; NCCL_DEBUG=WARN "
               "says more)"
             : " (NCCL_DEBUG=WARN says more)";
}

#define NCCL_CHECK(call)                                                                      \
  do {                                                                                        \
    const ncclResult_t relora_nccl_rc_ = (call);                                              \
    RELORA_CHECK(relora_nccl_rc_ == ncclSuccess,                                              \
                 #call ": " << nccl_api().error_string(relora_nccl_rc_) << nccl_hint(relora_nccl_rc_)); \
  } while (0)

bool is_device_pointer(const void* p) {
  cudaPointerAttributes attributes;
  CUDA_CHECK(cudaPointerGetAttributes(&attributes, p));
  return attributes.type == cudaMemoryTypeDevice;
}

class NcclComm final : public Communicator {
 public:
  NcclComm(Communicator& host, int64_t timeout_s)
      : host_(host), timeout_s_(timeout_s), watchdog_(timeout_s, "train.comm_timeout", host.rank()) {
    const NcclApi& nccl = nccl_api();
    int version = 0;
    NCCL_CHECK(nccl.get_version(&version));
    if (version < 21000)
      RELORA_INPUT_ERROR("libnccl.so.2 is NCCL " << version << "; relora needs NCCL 2.10 or newer (ncclAvg)");
    check_nccl_environment();
    {
      // every rank waits here for the others: for rank 0's id, then in ncclCommInitRank
      const Watchdog::Guard guard = watchdog_.guard("NCCL set-up (unique id, ncclCommInitRank)");
      ncclUniqueId id;
      std::memset(&id, 0, sizeof(id));
      if (host_.rank() == 0) NCCL_CHECK(nccl.get_unique_id(&id));
      host_.broadcast(&id, sizeof(id), 0);
      const ncclResult_t rc = nccl.comm_init_rank(&comm_, host_.world_size(), id, host_.rank());
      if (rc == ncclInvalidUsage)  // most often two ranks on one GPU
        RELORA_INPUT_ERROR("NCCL refused to connect the ranks (ncclCommInitRank: " << nccl.error_string(rc)
                           << "): does every rank have a GPU of its own? Ranks that each see one GPU "
                              "must see different ones; NCCL_DEBUG=WARN names the problem");
      NCCL_CHECK(rc);
    }
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
  }
  // A healthy communicator is destroyed (under the watchdog: ncclCommDestroy waits for the
  // peers), before its stream and events. One that failed, has all-reduces pending, or is
  // destroyed by an exception's unwinding, is left alone: the job is ending (the error path
  // calls MPI_Abort), and ncclCommAbort itself can block on peers that are gone
  // (NVIDIA/nccl#863), which would keep this rank from ending it.
  ~NcclComm() override {
    // (an exception unwinding through here may have left the peers in a collective: the
    // job is ending, so no destroy that waits for them)
    if (comm_ != nullptr && !failed_ && started_ == 0 && std::uncaught_exceptions() == 0) {
      const Watchdog::Guard guard = watchdog_.guard("NCCL tear-down (ncclCommDestroy)");
      nccl_api().comm_destroy(comm_);
    }
    for (cudaEvent_t e : ready_events_) cudaEventDestroy(e);
    cudaEventDestroy(done_);
    cudaStreamDestroy(stream_);
  }

  int rank() const override { return host_.rank(); }
  int world_size() const override { return host_.world_size(); }
  int local_rank() const override { return host_.local_rank(); }
  int local_size() const override { return host_.local_size(); }
  const char* name() const override { return "nccl"; }

  // Device buffers (gradients) over NCCL; host values over the host communicator.
  void all_reduce(float* data, int64_t n, ReduceOp op) override {
    if (!is_device_pointer(data)) return host_.all_reduce(data, n, op);
    RELORA_CHECK(op == ReduceOp::sum || op == ReduceOp::avg, "float all_reduce: sum or avg");
    start(data, n, ncclFloat, op == ReduceOp::avg ? ncclAvg : ncclSum);
    wait_all();
  }
  void all_reduce(double* data, int64_t n, ReduceOp op) override { host_.all_reduce(data, n, op); }
  void all_reduce(uint64_t* data, int64_t n, ReduceOp op) override { host_.all_reduce(data, n, op); }

  void all_reduce_start(void* data, int64_t n, DType dtype, ReduceOp op) override {
    RELORA_CHECK(is_device_pointer(data), "NCCL all-reduce of a host buffer");
    RELORA_CHECK((dtype == DType::f32 && (op == ReduceOp::sum || op == ReduceOp::avg)) ||
                     (dtype == DType::bf16 && op == ReduceOp::sum),
                 "all_reduce_start: f32 sum or avg, or bf16 sum");
    start(data, n, dtype == DType::bf16 ? ncclBfloat16 : ncclFloat, op == ReduceOp::avg ? ncclAvg : ncclSum);
  }
  void progress() override {}  // NCCL moves on by itself
  // Waits for every started all-reduce, then orders the compute stream after them.
  void wait_all() override {
    if (started_ == 0) return;
    RELORA_CHECK(!failed_, "NCCL communicator used after it failed");
    CUDA_CHECK(cudaEventRecord(done_, stream_));
    const auto begin = std::chrono::steady_clock::now();
    for (;;) {
      const cudaError_t state = cudaEventQuery(done_);
      if (state != cudaSuccess && state != cudaErrorNotReady) CUDA_CHECK(state);
      if (state == cudaErrorNotReady) cudaGetLastError();  // must not linger for the next launch check
      // checked once more after completion too: what NCCL finished after an error is not used
      ncclResult_t async_error = ncclSuccess;
      NCCL_CHECK(nccl_api().get_async_error(comm_, &async_error));
      if (async_error != ncclSuccess) {
        failed_ = true;
        throw InternalError(std::string("NCCL all-reduce failed: ") + nccl_api().error_string(async_error) +
                            " (a peer rank died or the network failed); ending the job");
      }
      if (state == cudaSuccess) break;
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
      if (waited > static_cast<double>(timeout_s_)) {
        failed_ = true;
        throw InternalError("NCCL all-reduce did not complete within train.comm_timeout (" +
                            std::to_string(timeout_s_) + " s): a peer rank is stuck or gone; ending the job");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    CUDA_CHECK(cudaStreamWaitEvent(cuda::compute_stream(), done_, 0));
    started_ = 0;
  }

  void broadcast(void* data, int64_t bytes, int root) override { host_.broadcast(data, bytes, root); }
  void barrier() override { host_.barrier(); }
  [[noreturn]] void abort(int exit_code) override {
    failed_ = true;
    host_.abort(exit_code);
    std::_Exit(exit_code);  // not reached: host_.abort ends the process
  }

 private:
  // Queues an all-reduce of data(n) on the NCCL stream after the compute stream's work so far.
  void start(void* data, int64_t n, ncclDataType_t type, ncclRedOp_t op) {
    RELORA_CHECK(!failed_, "NCCL communicator used after it failed");
    if (started_ == static_cast<int>(ready_events_.size())) {
      ready_events_.emplace_back();
      CUDA_CHECK(cudaEventCreateWithFlags(&ready_events_.back(), cudaEventDisableTiming));
    }
    cudaEvent_t ready = ready_events_[started_++];
    CUDA_CHECK(cudaEventRecord(ready, cuda::compute_stream()));
    CUDA_CHECK(cudaStreamWaitEvent(stream_, ready, 0));
    const Watchdog::Guard guard = watchdog_.guard("queueing an NCCL all-reduce (ncclAllReduce)");
    NCCL_CHECK(nccl_api().all_reduce(data, data, static_cast<size_t>(n), type, op, comm_, stream_));
  }

  Communicator& host_;
  int64_t timeout_s_;
  Watchdog watchdog_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t done_ = nullptr;
  std::vector<cudaEvent_t> ready_events_;  // one per bucket started this update, reused
  int started_ = 0;
  bool failed_ = false;  // an all-reduce failed or timed out, or the job is being aborted
};

}  // namespace

void check_nccl_environment() {
  // non-blocking communicators return ncclInProgress from every call, which relora does not poll
  const char* blocking = std::getenv("NCCL_COMM_BLOCKING");
  char* end = nullptr;
  if (blocking != nullptr && *blocking != '\0' && std::strtol(blocking, &end, 10) == 0 && *end == '\0')
    RELORA_INPUT_ERROR("NCCL_COMM_BLOCKING=0 makes NCCL's communicators non-blocking, which relora does not "
                       "support: unset it (or set it to 1)");
}

std::unique_ptr<Communicator> make_nccl_comm(Communicator& host, int64_t timeout_s) {
  return std::make_unique<NcclComm>(host, timeout_s);
}

}  // namespace relora
