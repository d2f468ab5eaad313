// cuda_sim's host side of the CUDA runtime: the calls CudaOps, CudaMemory and the kernel
// launchers make (src/backend/cuda/*.cu), on one emulated device, "cuda_sim" with sm_90's
// limits. Everything runs at once, in call order, on the calling thread, so streams and
// events are handles (an event holds the host time it was recorded at). Device memory is
// guarded_alloc memory marked as device (0xFF bytes, NaN, until written; guard pages at
// both ends) and the calls check their pointers as the device would meet them: a copy
// whose kind does not match where its pointers live, a memset or copy past the end of an
// allocation, cudaFree of something cudaMalloc did not return, registering host memory
// twice. Each such misuse is recorded as an emulator error (sim::take_errors) naming the
// call's site, and the call returns the runtime's error code, so CUDA_CHECK throws.
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda_sim.h"

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};
constexpr unsigned cudaStreamNonBlocking = 1;
constexpr unsigned cudaHostRegisterDefault = 0;

constexpr unsigned cudaEventDefault = 0;
constexpr unsigned cudaEventDisableTiming = 2;

struct CUstream_st {};
struct CUevent_st {
  bool recorded = false;
  bool timing = true;  // not with cudaEventDisableTiming
  double ms = 0.0;     // host time of the last record, in ms
};
typedef CUevent_st* cudaEvent_t;

// The fields relora reads, with sm_90 (H100/H200) values.
struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlockOptin;
  int major, minor;
  int multiProcessorCount;
};

namespace sim {

// The device's memory, what cudaMemGetInfo reports: 16 GiB, or SIM_DEVICE_MEMORY_MB (for
// the tests of a run that would leave too little beside its arena).
inline size_t device_memory_bytes() {
  static const size_t bytes = [] {
    const char* value = std::getenv("SIM_DEVICE_MEMORY_MB");
    const long long mb = value == nullptr || *value == '\0' ? 0 : std::atoll(value);
    return mb > 0 ? static_cast<size_t>(mb) << 20 : size_t{16} << 30;
  }();
  return bytes;
}

struct HostRuntime {
  size_t allocated = 0;  // bytes of cudaMalloc memory in use
  struct Registered {
    const char* begin;
    size_t bytes;
  };
  std::vector<Registered> registered;  // cudaHostRegister
};
inline HostRuntime& host_rt() {
  static HostRuntime r;
  return r;
}

// A runtime call fails with `code`: as on the device, cudaGetLastError reports it next.
inline cudaError_t fail(cudaError_t code) {
  rt().last_error = code;
  return code;
}

// Records a misuse of a runtime or cuBLAS call at the caller's site; returns `code` (a
// runtime error also becomes the last error).
template <typename Code>
Code api_error(Code code, const std::string& what, const Site& site) {
  Runtime& r = rt();
  if constexpr (std::is_same_v<Code, cudaError_t>) r.last_error = code;
  record("cuda_sim: " + what + " in " + site.op + " called from " + site.function + " (" +
         site.location() + ")");
  return code;
}

inline double host_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace sim

// ---- errors --------------------------------------------------------------------------------
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorHostMemoryAlreadyRegistered: return "part or all of the requested memory range is already mapped";
    case cudaErrorHostMemoryNotRegistered: return "pointer does not correspond to a registered memory region";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unknown error";
}
inline cudaError_t cudaGetLastError() {
  const cudaError_t e = sim::rt().last_error;
  sim::rt().last_error = cudaSuccess;
  return e;
}
template <typename Kernel>
cudaError_t cudaFuncSetAttribute(Kernel* kernel, cudaFuncAttribute attribute, int value) {
  if (attribute != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
      static_cast<size_t>(value) > sim::kMaxDynamicSmem)
    return cudaErrorInvalidValue;
  sim::rt().max_dynamic_smem[reinterpret_cast<const void*>(kernel)] = static_cast<size_t>(value);
  return cudaSuccess;
}

// ---- the device ----------------------------------------------------------------------------
// SIM_DEVICES=N (default 1) identical devices, for the device-binding tests; they share the
// one emulated memory (a process uses one device). SIM_DEVICES=0: a machine without a GPU.
namespace sim {
inline int device_count() {
  const char* value = std::getenv("SIM_DEVICES");
  const int n = value == nullptr || *value == '\0' ? 1 : std::atoi(value);
  return n >= 0 && n <= 64 ? n : 1;
}
inline int& current_device() {
  static int device = 0;
  return device;
}
}  // namespace sim
inline cudaError_t cudaGetDeviceCount(int* count) {
  *count = sim::device_count();
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int device, sim::Site site = sim::Site::current("cudaSetDevice")) {
  if (device < 0 || device >= sim::device_count())
    return sim::api_error(cudaErrorInvalidDevice,
                          "device " + std::to_string(device) + " of " + std::to_string(sim::device_count()), site);
  sim::current_device() = device;
  return cudaSuccess;
}
inline cudaError_t cudaGetDevice(int* device) {
  *device = sim::current_device();
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device < 0 || device >= sim::device_count()) return sim::fail(cudaErrorInvalidDevice);
  std::memset(prop, 0, sizeof *prop);
  std::strcpy(prop->name, "cuda_sim: sm_90 emulated on the CPU");
  prop->totalGlobalMem = sim::device_memory_bytes();
  prop->sharedMemPerBlockOptin = sim::kMaxDynamicSmem;
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = 132;
  return cudaSuccess;
}

// ---- device memory -------------------------------------------------------------------------
inline cudaError_t cudaMalloc(void** p, size_t bytes) {
  sim::HostRuntime& h = sim::host_rt();
  if (bytes > sim::device_memory_bytes() - h.allocated) return sim::fail(cudaErrorMemoryAllocation);
  *p = sim::guarded_alloc(bytes, 256, "cudaMalloc memory", true);
  h.allocated += bytes;
  return cudaSuccess;
}
inline cudaError_t cudaFree(void* p, sim::Site site = sim::Site::current("cudaFree")) {
  if (p == nullptr) return cudaSuccess;
  std::vector<sim::Guarded>& list = sim::rt().guarded;
  for (const sim::Guarded& g : list) {
    if (g.device && g.begin == p) {
      sim::host_rt().allocated -= g.bytes;
      sim::guarded_free(p);
      return cudaSuccess;
    }
  }
  return sim::api_error(cudaErrorInvalidValue, "a pointer cudaMalloc did not return", site);
}
inline cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  *total_bytes = sim::device_memory_bytes();
  *free_bytes = sim::device_memory_bytes() - sim::host_rt().allocated;
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t = nullptr,
                                   sim::Site site = sim::Site::current("cudaMemsetAsync")) {
  if (!sim::device_range(p, bytes))
    return sim::api_error(cudaErrorInvalidValue, std::to_string(bytes) + " bytes of " + sim::describe_range(p, bytes), site);
  std::memset(p, value, bytes);
  return cudaSuccess;
}
enum cudaMemoryType {
  cudaMemoryTypeUnregistered = 0,
  cudaMemoryTypeHost = 1,
  cudaMemoryTypeDevice = 2,
  cudaMemoryTypeManaged = 3
};
struct cudaPointerAttributes {
  cudaMemoryType type;
  int device;
  void* devicePointer;
  void* hostPointer;
};
// As CUDA 11+: device for any address inside a cudaMalloc allocation, host for registered
// host memory, unregistered (no error) for any other host address.
inline cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attributes, const void* p) {
  if (attributes == nullptr) return sim::fail(cudaErrorInvalidValue);
  const char* a = static_cast<const char*>(p);
  *attributes = cudaPointerAttributes{cudaMemoryTypeUnregistered, -1, nullptr, nullptr};
  for (const sim::Guarded& g : sim::rt().guarded) {
    if (g.device && a >= g.begin && a < g.begin + g.bytes) {
      *attributes = cudaPointerAttributes{cudaMemoryTypeDevice, 0, const_cast<char*>(a), nullptr};
      return cudaSuccess;
    }
  }
  for (const sim::HostRuntime::Registered& r : sim::host_rt().registered) {
    if (a >= r.begin && a < r.begin + r.bytes) {
      *attributes = cudaPointerAttributes{cudaMemoryTypeHost, 0, const_cast<char*>(a), const_cast<char*>(a)};
      return cudaSuccess;
    }
  }
  return cudaSuccess;
}
// Host memory is anything outside device allocations (pageable or registered).
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                                   cudaStream_t = nullptr,
                                   sim::Site site = sim::Site::current("cudaMemcpyAsync")) {
  const std::string to = sim::describe_range(dst, bytes), from = sim::describe_range(src, bytes);
  bool ok = kind == cudaMemcpyDefault || kind == cudaMemcpyHostToHost;
  if (kind == cudaMemcpyHostToDevice) ok = from == "host memory" && to == "device memory";
  if (kind == cudaMemcpyDeviceToHost) ok = from == "device memory" && to == "host memory";
  if (kind == cudaMemcpyDeviceToDevice) ok = from == "device memory" && to == "device memory";
  if (!ok) {
    return sim::api_error(cudaErrorInvalidValue,
                          std::to_string(bytes) + " bytes from " + from + " to " + to + " with kind " +
                              std::to_string(kind),
                          site);
  }
  if (bytes > 0) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaHostRegister(void* p, size_t bytes, unsigned flags,
                                    sim::Site site = sim::Site::current("cudaHostRegister")) {
  if (flags != cudaHostRegisterDefault || bytes == 0 || sim::device_range(p, 0))
    return sim::api_error(cudaErrorInvalidValue, "not a host range with default flags", site);
  // the driver locks whole pages: ranges that share one overlap
  const uintptr_t page = sim::page_size(), first = reinterpret_cast<uintptr_t>(p) / page,
                  last = (reinterpret_cast<uintptr_t>(p) + bytes - 1) / page;
  const char* a = static_cast<const char*>(p);
  for (const sim::HostRuntime::Registered& g : sim::host_rt().registered) {
    const uintptr_t g_first = reinterpret_cast<uintptr_t>(g.begin) / page,
                    g_last = (reinterpret_cast<uintptr_t>(g.begin) + g.bytes - 1) / page;
    if (first <= g_last && g_first <= last)
      return sim::api_error(cudaErrorHostMemoryAlreadyRegistered,
                            "a range whose pages overlap those of a registered one", site);
  }
  sim::host_rt().registered.push_back({a, bytes});
  return cudaSuccess;
}
inline cudaError_t cudaHostUnregister(void* p) {
  std::vector<sim::HostRuntime::Registered>& list = sim::host_rt().registered;
  for (size_t i = 0; i < list.size(); ++i) {
    if (list[i].begin == p) {
      list.erase(list.begin() + static_cast<std::ptrdiff_t>(i));
      return cudaSuccess;
    }
  }
  return sim::fail(cudaErrorHostMemoryNotRegistered);
}

// ---- streams and events --------------------------------------------------------------------
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned) {
  *stream = new CUstream_st;
  return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  delete stream;
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaEventCreate(cudaEvent_t* event) {
  *event = new CUevent_st;
  return cudaSuccess;
}
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags) {
  if ((flags & ~cudaEventDisableTiming) != 0) return sim::fail(cudaErrorInvalidValue);
  *event = new CUevent_st;
  (*event)->timing = (flags & cudaEventDisableTiming) == 0;
  return cudaSuccess;
}
// Work runs when it is queued, so every event has completed by the time it can be asked.
inline cudaError_t cudaEventQuery(cudaEvent_t event) {
  return event == nullptr ? sim::fail(cudaErrorInvalidResourceHandle) : cudaSuccess;
}
inline cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t event, unsigned flags) {
  if (event == nullptr) return sim::fail(cudaErrorInvalidResourceHandle);
  return flags == 0 ? cudaSuccess : sim::fail(cudaErrorInvalidValue);
}
inline cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete event;
  return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t = nullptr) {
  if (event == nullptr) return sim::fail(cudaErrorInvalidResourceHandle);
  event->recorded = true;
  event->ms = sim::host_ms();
  return cudaSuccess;
}
inline cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  return event == nullptr ? sim::fail(cudaErrorInvalidResourceHandle) : cudaSuccess;
}
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t stop) {
  if (start == nullptr || stop == nullptr || !start->recorded || !stop->recorded ||
      !start->timing || !stop->timing)
    return sim::fail(cudaErrorInvalidResourceHandle);
  *ms = static_cast<float>(stop->ms - start->ms);
  return cudaSuccess;
}
