// cuda_sim: a CPU emulator of the part of CUDA that relora's CUDA backend uses, so that the
// sources of src/backend/cuda run unchanged in the test suite on machines without a GPU.
// This file runs kernels; cuda_sim_runtime.h holds the host runtime API and cublas_v2.h
// the products. Test-only: the fake <cuda_runtime.h>, <cuda_bf16.h>, <mma.h>,
// <cub/block/block_scan.cuh> and <cublas_v2.h> next to this file include it, and only the
// users of relora_lib_emulated see them. emulate_cuda_source.cmake rewrites the two
// things C++ cannot express (kernel<<<grid, block, smem, stream>>>(args) and
// `extern __shared__ T name[];`); everything else compiles as written.
//
// Execution model. Blocks run one after another on one OS thread. The threads of a block
// are fibers (256 KiB stacks with a guard page; made once with ucontext, switched with
// _setjmp/_longjmp, which unlike swapcontext make no system call, and which x86 CET shadow
// stacks, if a glibc turned them on, would refuse) that run until they reach a sync
// point (__syncthreads, __syncwarp, a shuffle) and then wait; a barrier is released when
// every live thread of the block (warp) waits there, and the released threads are resumed
// in a pseudo-random order. The order is chosen by environment variables, read once:
//   SIM_SCHED=1  (default) warp-serial: one random warp runs as far as it can before
//                another moves (a warp running ahead of the others: missing __syncthreads).
//           =0  round: every runnable thread runs to its next sync point, in random order
//                (warps in near-lockstep, lanes interleaved: missing __syncwarp).
//   SIM_SEED=1  (default) the seed of that order.
//   SIM_WMMA_BARRIER=0 (default) wmma loads and stores do not synchronize the warp (code
//                must order shared memory with __syncwarp, as the CUDA memory model says);
//           =1  they are warp barriers ("waits until all lanes have arrived"): more lenient.
//
// What it detects, as one error message naming the kernel, its launch site, the block, the
// thread and the thread's last sync point (tests fail on any; sim::take_errors()):
//   * pointer arguments that are neither null nor inside device memory (the launch is not
//     run: host memory would fault on the device);
//   * launch configurations the hardware rejects: more than 1024 threads, grid limits, more
//     than 48 KiB of dynamic shared memory without cudaFuncSetAttribute covering it, more
//     than sm_90's 227 KiB (the launch also fails, as on the device: cudaGetLastError);
//   * out-of-bounds accesses: dynamic shared memory and the tests' device buffers end at
//     PROT_NONE guard pages (a SIGSEGV there abandons the launch with a message saying how
//     far past which buffer); fiber stack overflows likewise;
//   * deadlocks: threads waiting at barriers that can never be released (which threads wait
//     where); __syncthreads reached at different program points; lanes of one warp at
//     different warp operations; a shuffle reading an exited lane; full-mask warp operations
//     with exited lanes; partial masks (not modelled); wmma pointers not 32-byte aligned or
//     ldm not a multiple of 16 bytes;
//   * missing barriers, indirectly: dynamic shared memory is filled with 0xFF bytes (NaN as
//     fp32 and bf16) for every block, and each wmma lane stores only its own 8 accumulator
//     elements (the sm_80 layout), so a read that a barrier should have ordered sees NaN or
//     stale data and the comparison with the CPU backend fails.
// Any of these fails the launch as the device would (cudaGetLastError), so the host code's
// launch check throws as well.
// What it cannot detect: weak memory-model races (fibers are sequentially consistent, and
// a shuffle orders memory here, not on the device); races on static __shared__ arrays
// (C++ statics: not poisoned per block); __launch_bounds__ violations; bank conflicts,
// occupancy, timing; nvcc's arithmetic (FMA contraction, fast-math intrinsics: fp32
// results may differ in the last bits) and the tensor cores' (mma accumulates in k order
// in fp32). An infinite loop without sync points hangs (ctest's timeout ends it).
#pragma once
#include <setjmp.h>  // first: the _FORTIFY_SOURCE check below needs features.h
#if defined(__USE_FORTIFY_LEVEL) && __USE_FORTIFY_LEVEL > 0
#error "cuda_sim switches between fiber stacks with _longjmp, which _FORTIFY_SOURCE stops: compile with -U_FORTIFY_SOURCE"
#endif
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>  // expf, sqrtf, fmaxf...: the device math functions, as nvcc provides them
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __launch_bounds__(...)
#define __grid_constant__
#define __align__(n) alignas(n)
#define __shared__ static

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
inline uint3 threadIdx{0, 0, 0};
inline uint3 blockIdx{0, 0, 0};
inline dim3 blockDim{1, 1, 1};
inline dim3 gridDim{1, 1, 1};

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorNotReady = 600,
  cudaErrorIllegalAddress = 700,
  cudaErrorHostMemoryAlreadyRegistered = 712,
  cudaErrorHostMemoryNotRegistered = 713,
  cudaErrorLaunchFailure = 719
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
struct CUstream_st;
typedef CUstream_st* cudaStream_t;

namespace sim {

constexpr size_t kDefaultDynamicSmem = 48 * 1024;  // without cudaFuncSetAttribute
constexpr size_t kMaxDynamicSmem = 232448;          // sm_90 opt-in maximum (227 KiB)
constexpr size_t kStackBytes = 256 * 1024;          // per emulated thread

// Where an emulated thread is: the operation and its call site in the kernel source (the
// generated sources carry #line directives, so these are src/backend/cuda/*.cu lines).
struct Site {
  const char* op = nullptr;
  const char* file = "";
  int line = 0;
  const char* function = "";
  static Site current(const char* op, const char* file = __builtin_FILE(),
                      int line = __builtin_LINE(), const char* function = __builtin_FUNCTION()) {
    return Site{op, file, line, function};
  }
  std::string location() const {
    const char* slash = std::strrchr(file, '/');
    return std::string(slash ? slash + 1 : file) + ":" + std::to_string(line);
  }
  std::string str() const { return std::string(op) + " in " + function + " (" + location() + ")"; }
};

struct Settings {
  int schedule = 1;  // SIM_SCHED
  uint64_t seed = 1;
  bool wmma_barrier = false;
};
inline const Settings& settings() {
  static const Settings s = [] {
    Settings r;
    if (const char* v = std::getenv("SIM_SCHED")) r.schedule = std::atoi(v);
    if (const char* v = std::getenv("SIM_SEED")) r.seed = std::strtoull(v, nullptr, 10);
    if (const char* v = std::getenv("SIM_WMMA_BARRIER")) r.wmma_barrier = std::atoi(v) != 0;
    return r;
  }();
  return s;
}

enum class State { runnable, at_block_barrier, at_warp_barrier, done };

struct Fiber {
  ucontext_t context;  // its first entry: fiber_main on its stack
  jmp_buf resume;      // where it continues, once started
  bool started = false;  // in fiber_main's loop (false again after an abandoned launch)
  uint3 tid{0, 0, 0};
  State state = State::done;
  Site site;  // the barrier it waits at, or the last one it passed
  unsigned shuffles = 0;  // its shuffles so far: which half of the slots the next one uses
  char* stack = nullptr;
};

// A guarded allocation (guarded_alloc): a mapping of a PROT_NONE page, the pages holding
// [begin, begin + bytes) with its end rounded up to the alignment at their end, and a
// PROT_NONE page.
struct Guarded {
  char* begin;
  size_t bytes;
  const char* what;  // for fault messages: "dynamic shared memory"
  bool device;       // device memory (cudaMalloc, the tests' buffers): kernels may use it
  char* mapping;
  size_t mapping_bytes;
};

// A piece of a device allocation (note_piece) and the red zone after it.
struct Piece {
  size_t bytes, red_zone;
};
struct Runtime {
  jmp_buf scheduler;  // run_block, where a fiber that waits or finishes returns to
  std::vector<Fiber> fibers;  // grows to the largest block; fibers[0, threads) are in use
  int threads = 0;
  Fiber* current = nullptr;
  std::function<void()> body;  // one thread's call of the kernel
  std::mt19937_64 rng{settings().seed};
  struct ShuffleSlot {
    uint64_t bits;
    unsigned shuffle;  // the number (from 1) of the writer's shuffle that wrote it
  };
  std::vector<ShuffleSlot> shuffle_slots;  // two sets of one per thread, used alternately
  unsigned char* dynamic_smem = nullptr;
  std::map<const void*, size_t> max_dynamic_smem;  // cudaFuncSetAttribute, per kernel
  std::vector<Guarded> guarded;
  std::map<const char*, Piece> pieces;  // note_piece: begin -> piece
  cudaError_t last_error = cudaSuccess;
  const char* kernel = "";
  Site launch_site;
  bool running = false;  // blocks of a launch are running
  bool abandon = false;  // the launch ends: a fault or a deadlock
  std::vector<std::string> errors;
  size_t errors_dropped = 0;
  std::vector<std::string> reported;  // this launch's errors, without where: one of each
};
inline Runtime& rt() {
  static Runtime r;
  return r;
}

// "kernel "k" launched in f (file.cu:12), block (1,0,0) thread (37,0,0), last sync point ..."
inline std::string where() {
  Runtime& r = rt();
  char block[64], thread[64];
  std::snprintf(block, sizeof block, ", block (%u,%u,%u)", blockIdx.x, blockIdx.y, blockIdx.z);
  std::snprintf(thread, sizeof thread, " thread (%u,%u,%u)", threadIdx.x, threadIdx.y, threadIdx.z);
  std::string s = std::string("kernel \"") + r.kernel + "\" launched in " +
                  r.launch_site.function + " (" + r.launch_site.location() + ")";
  if (r.running) s += block;
  if (r.current != nullptr) {
    s += thread;
    if (r.current->site.op != nullptr) s += ", last sync point " + r.current->site.str();
  }
  return s;
}
// Keeps a whole error message ("cuda_sim: ...") for take_errors and prints it; the first 20.
inline void record(const std::string& message) {
  Runtime& r = rt();
  if (r.errors.size() >= 20) {
    ++r.errors_dropped;
    return;
  }
  r.errors.push_back(message);
  std::fprintf(stderr, "%s\n", message.c_str());
}
// Records an error of the running kernel (the current thread, if any), once per launch.
// The launch then fails (cudaGetLastError), so the host code's launch check throws.
inline void error(const std::string& what) {
  Runtime& r = rt();
  if (r.running && r.last_error == cudaSuccess) r.last_error = cudaErrorLaunchFailure;
  if (std::find(r.reported.begin(), r.reported.end(), what) != r.reported.end()) return;
  r.reported.push_back(what);
  record("cuda_sim: " + what + "; " + where());
}
// The errors recorded since the last call (and how many more were not kept).
inline std::vector<std::string> take_errors() {
  Runtime& r = rt();
  std::vector<std::string> e = std::move(r.errors);
  if (r.errors_dropped > 0) e.push_back("cuda_sim: " + std::to_string(r.errors_dropped) + " more errors");
  r.errors.clear();
  r.errors_dropped = 0;
  r.last_error = cudaSuccess;
  return e;
}

// ---- guarded memory ----------------------------------------------------------------------
inline size_t page_size() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }
inline size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }
// `bytes` (at least 1) filled with 0xFF, aligned to `align`, followed within `align` bytes
// by a PROT_NONE page. `what` names it in fault messages; `device`: kernels, copies and
// cuBLAS may use it (device_range).
inline void* guarded_alloc(size_t bytes, size_t align, const char* what, bool device = false) {
  const size_t page = page_size(), used = round_up(std::max<size_t>(bytes, 1), align);
  const size_t body = round_up(used, page);
  char* mapping = static_cast<char*>(mmap(nullptr, body + 2 * page, PROT_READ | PROT_WRITE,
                                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (mapping == MAP_FAILED) {
    std::perror("cuda_sim: mmap");
    std::abort();
  }
  mprotect(mapping, page, PROT_NONE);
  mprotect(mapping + page + body, page, PROT_NONE);
  char* begin = mapping + page + body - used;
  std::memset(begin, 0xFF, used);
  rt().guarded.push_back(Guarded{begin, bytes, what, device, mapping, body + 2 * page});
  return begin;
}
inline void guarded_free(void* begin) {
  auto& list = rt().guarded;
  const auto it = std::find_if(list.begin(), list.end(), [begin](const Guarded& g) { return g.begin == begin; });
  if (it == list.end()) return;
  munmap(it->mapping, it->mapping_bytes);
  list.erase(it);
}
// Pieces of a device allocation that its owner hands out separately (relora's CudaMemory
// gives every tensor a range of one cudaMalloc'd arena and names each here, in the
// emulated build only): within an allocation that has pieces, device_range holds a pointer
// to the live piece it points into, and a piece given back is filled with 0xFF again.
// red_zone: bytes after the piece that its owner leaves unused (kRedZoneBytes in
// CudaMemory), filled with 0xFF: a kernel reading past the piece reads NaN, and one writing
// past it is reported when the piece is given back.
constexpr size_t kRedZoneBytes = 256;
inline void note_piece(void* p, size_t bytes, size_t red_zone = 0) {
  std::memset(static_cast<char*>(p) + bytes, 0xFF, red_zone);
  rt().pieces[static_cast<const char*>(p)] = Piece{bytes, red_zone};
}
inline void forget_piece(void* p) {
  const auto it = rt().pieces.find(static_cast<const char*>(p));
  if (it == rt().pieces.end()) return;
  const unsigned char* zone = static_cast<const unsigned char*>(p) + it->second.bytes;
  size_t written = 0;  // bytes of the red zone that are no longer 0xFF
  for (size_t i = 0; i < it->second.red_zone; ++i) written += zone[i] != 0xFF;
  if (written > 0)
    record("cuda_sim: " + std::to_string(written) + " of the " + std::to_string(it->second.red_zone) +
           " bytes after a tensor of " + std::to_string(it->second.bytes) +
           " bytes were written while it was live (a kernel or product wrote past its end; found "
           "when it was given back)");
  std::memset(p, 0xFF, it->second.bytes);
  rt().pieces.erase(it);
}

// Whether [p, p + bytes) lies inside one device allocation, and inside one live piece of
// it if it has pieces (bytes may be 0: p may then be the end, a pointer to an empty range).
inline bool device_range(const void* p, size_t bytes) {
  const char* a = static_cast<const char*>(p);
  const auto inside = [a, bytes](const char* begin, size_t size) {
    return a >= begin && a <= begin + size && bytes <= static_cast<size_t>(begin + size - a);
  };
  for (const Guarded& g : rt().guarded) {
    if (!g.device || !inside(g.begin, g.bytes)) continue;
    const std::map<const char*, Piece>& live = rt().pieces;
    const auto first = live.lower_bound(g.begin);
    if (first == live.end() || first->first >= g.begin + g.bytes) return true;  // no pieces
    auto it = live.upper_bound(a);
    if (it == live.begin()) return false;
    --it;
    return inside(it->first, it->second.bytes);
  }
  return false;
}
// Where [p, p + bytes) is, for messages: "host memory", "device memory" (device_range
// holds), or what is wrong with it in device memory.
inline std::string describe_range(const void* p, size_t bytes) {
  const char* a = static_cast<const char*>(p);
  const bool in_device = std::any_of(rt().guarded.begin(), rt().guarded.end(), [a](const Guarded& g) {
    return g.device && a >= g.begin && a <= g.begin + g.bytes;
  });
  if (!in_device) return "host memory";
  if (device_range(p, bytes)) return "device memory";
  if (device_range(p, 0)) return "device memory, running past the end of its allocation or tensor";
  return "device memory outside every live tensor of its allocation (one released?)";
}
// What a faulting address hit: "N bytes past the end of dynamic shared memory (S bytes)".
inline std::string describe_address(const void* address) {
  const char* a = static_cast<const char*>(address);
  const size_t page = page_size();
  for (const Guarded& g : rt().guarded) {
    const std::string of = std::string(g.what) + " (" + std::to_string(g.bytes) + " bytes)";
    if (a >= g.begin + g.bytes && a < g.mapping + g.mapping_bytes)
      return std::to_string(a - (g.begin + g.bytes)) + " bytes past the end of " + of;
    if (a >= g.mapping && a < g.begin)
      return std::to_string(g.begin - a) + " bytes before the start of " + of;
  }
  for (const Fiber& f : rt().fibers) {
    if (a >= f.stack && a < f.stack + page) return "a thread's stack overflowed (" + std::to_string(kStackBytes) + " bytes)";
  }
  return "not next to any emulated buffer";
}
template <typename T>
T* dynamic_smem() {
  return reinterpret_cast<T*>(rt().dynamic_smem);
}

// ---- threads, barriers, the scheduler ---------------------------------------------------
inline int linear_tid() {
  return static_cast<int>(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
}
inline int lane_id() { return linear_tid() % 32; }

// The current fiber gives control back to run_block (which resumes it later with run).
inline void yield_to_scheduler() {
  Runtime& r = rt();
  if (_setjmp(r.current->resume) == 0) _longjmp(r.scheduler, 1);
}

inline void wait_at(State state, const Site& site) {
  Runtime& r = rt();
  r.current->state = state;
  r.current->site = site;
  yield_to_scheduler();
}

// Releases warp w's barrier if every live lane waits there. Errors: lanes at different
// operations, or exited lanes (full-mask operations wait for all 32).
inline bool release_warp(int w) {
  Runtime& r = rt();
  const int first = 32 * w, last = std::min(r.threads, first + 32);
  int live = 0, waiting = 0, exited = 0;
  for (int i = first; i < last; ++i) {
    const State s = r.fibers[i].state;
    live += s != State::done;
    waiting += s == State::at_warp_barrier;
    exited += s == State::done;
  }
  if (live == 0 || waiting != live) return false;
  Fiber* lead = nullptr;
  for (int i = first; i < last; ++i) {
    Fiber& f = r.fibers[i];
    if (f.state != State::at_warp_barrier) continue;
    if (lead == nullptr) {
      lead = &f;
    } else if (std::strcmp(lead->site.op, f.site.op) != 0) {
      r.current = &f;
      threadIdx = f.tid;
      error("lanes of one warp at different warp operations: " + lead->site.str() + " and " + f.site.str());
    }
    f.state = State::runnable;
  }
  if (exited > 0) {
    r.current = lead;
    threadIdx = lead->tid;
    error(std::to_string(exited) + " lanes of the warp exited before this full-mask " + lead->site.op);
  }
  return true;
}
// Releases the block barrier if every live thread waits there (exited threads do not
// count, as on sm_70+); all of them must be at the same __syncthreads.
inline bool release_block() {
  Runtime& r = rt();
  const Fiber* lead = nullptr;
  for (int i = 0; i < r.threads; ++i) {
    const Fiber& f = r.fibers[i];
    if (f.state == State::done) continue;
    if (f.state != State::at_block_barrier) return false;
    if (lead == nullptr) lead = &f;
  }
  if (lead == nullptr) return false;
  for (int i = 0; i < r.threads; ++i) {
    Fiber& f = r.fibers[i];
    if (f.state != State::at_block_barrier) continue;
    if (f.site.line != lead->site.line || std::strcmp(f.site.file, lead->site.file) != 0) {
      r.current = &f;
      threadIdx = f.tid;
      error("__syncthreads reached at different program points: " + lead->site.str() + " and " + f.site.str());
      lead = &f;
    }
    f.state = State::runnable;
  }
  return true;
}

inline void report_deadlock() {
  Runtime& r = rt();
  std::string waits;
  for (int i = 0; i < r.threads;) {  // runs of consecutive threads waiting at one site
    const Fiber& f = r.fibers[i];
    int j = i + 1;
    while (j < r.threads && r.fibers[j].state == f.state && r.fibers[j].site.line == f.site.line &&
           r.fibers[j].site.file == f.site.file)
      ++j;
    if (f.state != State::done)
      waits += "; threads " + std::to_string(i) + ".." + std::to_string(j - 1) + " wait at " + f.site.str();
    i = j;
  }
  r.current = nullptr;
  error("deadlock: no barrier can be released" + waits);
}

// Runs fiber f until it waits or finishes.
inline void run(Fiber& f) {
  Runtime& r = rt();
  r.current = &f;
  threadIdx = f.tid;
  if (_setjmp(r.scheduler) == 0) {
    if (f.started) _longjmp(f.resume, 1);
    f.started = true;
    setcontext(&f.context);
  }
}

// A fiber's whole life: one thread of a block, then (resumed by a later block) the next.
inline void fiber_main() {
  for (;;) {
    rt().body();
    rt().current->state = State::done;
    yield_to_scheduler();
  }
}

// Runs the current block's threads to completion (or until the launch is abandoned).
inline void run_block() {
  Runtime& r = rt();
  const unsigned n = blockDim.x * blockDim.y * blockDim.z;
  r.threads = static_cast<int>(n);
  while (r.fibers.size() < n) {
    Fiber f;
    f.stack = static_cast<char*>(mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE,
                                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    mprotect(f.stack, page_size(), PROT_NONE);  // stack overflow guard
    r.fibers.push_back(f);
  }
  r.shuffle_slots.assign(2 * round_up(n, 32), Runtime::ShuffleSlot{0, 0});
  for (unsigned i = 0; i < n; ++i) {
    Fiber& f = r.fibers[i];
    f.tid = uint3{i % blockDim.x, (i / blockDim.x) % blockDim.y, i / (blockDim.x * blockDim.y)};
    f.state = State::runnable;
    f.site = Site{};
    f.shuffles = 0;
    if (!f.started) {
      getcontext(&f.context);
      f.context.uc_stack.ss_sp = f.stack;
      f.context.uc_stack.ss_size = kStackBytes;
      f.context.uc_link = nullptr;  // fiber_main never returns
      makecontext(&f.context, fiber_main, 0);
    }
  }
  std::vector<int> order;
  while (!r.abandon) {
    order.clear();
    for (int i = 0; i < r.threads; ++i)
      if (r.fibers[i].state == State::runnable) order.push_back(i);
    if (order.empty()) {
      bool released = release_block();
      for (int w = 0; w * 32 < r.threads; ++w) released |= release_warp(w);
      if (released) continue;
      if (std::any_of(r.fibers.begin(), r.fibers.begin() + r.threads,
                      [](const Fiber& f) { return f.state != State::done; })) {
        report_deadlock();
        r.abandon = true;
      }
      break;
    }
    std::shuffle(order.begin(), order.end(), r.rng);
    if (settings().schedule == 0) {  // round: every runnable thread once
      for (int i : order)
        if (!r.abandon && r.fibers[i].state == State::runnable) run(r.fibers[i]);
    } else {  // warp-serial: one warp as far as it goes
      const int w = order.front() / 32, first = 32 * w, last = std::min(r.threads, first + 32);
      std::vector<int> lanes;
      while (!r.abandon) {
        lanes.clear();
        for (int i = first; i < last; ++i)
          if (r.fibers[i].state == State::runnable) lanes.push_back(i);
        if (lanes.empty() && !release_warp(w)) break;
        std::shuffle(lanes.begin(), lanes.end(), r.rng);
        for (int i : lanes)
          if (!r.abandon) run(r.fibers[i]);
      }
    }
  }
  r.current = nullptr;
  if (r.abandon)  // their stacks hold the abandoned launch: each starts afresh
    for (Fiber& f : r.fibers) f.started = false;
}

// A fault inside a kernel ends its launch with an error; anywhere else it is fatal.
inline void on_fault(int sig, siginfo_t* info, void*) {
  Runtime& r = rt();
  if (r.current == nullptr || r.abandon) {
    signal(sig, SIG_DFL);
    return;  // the access faults again, without this handler
  }
  error(std::string(sig == SIGBUS ? "SIGBUS" : "SIGSEGV") + ": out-of-bounds access, " +
        describe_address(info->si_addr));
  r.abandon = true;
  r.last_error = cudaErrorIllegalAddress;
  sigset_t faults;  // unblocked again: the handler does not return
  sigemptyset(&faults);
  sigaddset(&faults, SIGSEGV);
  sigaddset(&faults, SIGBUS);
  sigprocmask(SIG_UNBLOCK, &faults, nullptr);
  _longjmp(r.scheduler, 1);  // back into run_block, as if this thread had yielded
}
inline void install_fault_handler() {
  static bool installed = false;
  if (installed) return;
  installed = true;
  static char alternate_stack[64 * 1024];
  stack_t ss{};
  ss.ss_sp = alternate_stack;
  ss.ss_size = sizeof alternate_stack;
  sigaltstack(&ss, nullptr);
  struct sigaction sa {};
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigaction(SIGSEGV, &sa, nullptr);
  sigaction(SIGBUS, &sa, nullptr);
}

// kernel<<<grid, block, smem, stream>>>(args) is rewritten to
// ::sim::Launcher(kernel, "kernel", grid, block, smem, stream)(args).
template <typename Kernel>
class Launcher {
 public:
  Launcher(Kernel kernel, const char* name, dim3 grid, dim3 block, size_t smem_bytes = 0,
           cudaStream_t = nullptr, Site site = Site::current("<<<>>>"))
      : kernel_(kernel), name_(name), grid_(grid), block_(block), smem_(smem_bytes), site_(site) {}

  template <typename... Args>
  void operator()(const Args&... args) const {
    Runtime& r = rt();
    install_fault_handler();
    r.kernel = name_;
    r.launch_site = site_;
    r.reported.clear();
    r.current = nullptr;
    blockIdx = uint3{0, 0, 0};
    threadIdx = uint3{0, 0, 0};
    if (!valid_config()) return;
    int index = 0;
    bool pointers_valid = true;
    (check_pointer_argument(args, index++, pointers_valid), ...);
    if (!pointers_valid) return;
    const std::tuple<Args...> params(args...);  // copied once, as the device does
    const Kernel kernel = kernel_;
    r.body = [&params, kernel] { std::apply(kernel, params); };
    gridDim = grid_;
    blockDim = block_;
    r.abandon = false;
    r.running = true;
    // one guarded allocation per launch, filled with 0xFF again for every block
    r.dynamic_smem = smem_ > 0 ? static_cast<unsigned char*>(
                                     guarded_alloc(smem_, 128, "dynamic shared memory"))
                               : nullptr;
    for (unsigned z = 0; z < grid_.z && !r.abandon; ++z)
      for (unsigned y = 0; y < grid_.y && !r.abandon; ++y)
        for (unsigned x = 0; x < grid_.x && !r.abandon; ++x) {
          blockIdx = uint3{x, y, z};
          if (r.dynamic_smem != nullptr) std::memset(r.dynamic_smem, 0xFF, round_up(smem_, 128));
          run_block();
        }
    if (r.dynamic_smem != nullptr) guarded_free(r.dynamic_smem);
    r.dynamic_smem = nullptr;
    r.abandon = false;
    r.running = false;
    r.body = nullptr;
  }

 private:
  bool valid_config() const {
    Runtime& r = rt();
    const unsigned long long threads = 1ull * block_.x * block_.y * block_.z;
    std::string problem;
    cudaError_t code = cudaErrorInvalidConfiguration;
    if (threads == 0 || threads > 1024 || block_.z > 64 || grid_.x == 0 || grid_.y == 0 ||
        grid_.z == 0 || grid_.x > 2147483647u || grid_.y > 65535 || grid_.z > 65535) {
      problem = "invalid launch configuration: grid (" + std::to_string(grid_.x) + "," +
                std::to_string(grid_.y) + "," + std::to_string(grid_.z) + ") block (" +
                std::to_string(block_.x) + "," + std::to_string(block_.y) + "," +
                std::to_string(block_.z) + ")";
    } else if (smem_ > kMaxDynamicSmem) {
      problem = std::to_string(smem_) + " bytes of dynamic shared memory: more than sm_90's " +
                std::to_string(kMaxDynamicSmem);
      code = cudaErrorInvalidValue;
    } else if (smem_ > kDefaultDynamicSmem) {
      const auto it = r.max_dynamic_smem.find(reinterpret_cast<const void*>(kernel_));
      if (it == r.max_dynamic_smem.end() || it->second < smem_) {
        problem = std::to_string(smem_) +
                  " bytes of dynamic shared memory: more than 48 KiB without "
                  "cudaFuncSetAttribute(MaxDynamicSharedMemorySize) covering it";
        code = cudaErrorInvalidValue;
      }
    }
    if (problem.empty()) return true;
    error(problem);
    r.last_error = code;
    return false;
  }

  // A pointer argument must be null or point into (live) device memory: host memory would
  // fault on the device (the launch is not run and fails with an illegal address).
  template <typename Arg>
  static void check_pointer_argument(const Arg& arg, int index, bool& valid) {
    if constexpr (std::is_pointer_v<Arg> && !std::is_function_v<std::remove_pointer_t<Arg>>) {
      if (arg != nullptr && !device_range(arg, 0)) {
        error("argument " + std::to_string(index) + " points to " + describe_range(arg, 0) +
              ", not to live device memory");
        rt().last_error = cudaErrorIllegalAddress;
        valid = false;
      }
    }
  }

  Kernel kernel_;
  const char* name_;
  dim3 grid_, block_;
  size_t smem_;
  Site site_;
};

// ---- warp operations ---------------------------------------------------------------------
inline void check_full_mask(unsigned mask, const Site& site) {
  if (mask != 0xffffffffu) error(std::string("partial mask (not modelled) at ") + site.str());
}
// Every lane publishes `var`, the warp meets, each lane reads lane src_of(lane)'s value
// (its own when src_of returns its lane). Successive shuffles use the two sets of slots in
// turn: a lane can only be one shuffle ahead of the slowest (the next one waits for all),
// so no slot is overwritten before it is read.
template <typename T, typename SourceLane>
T shuffle(unsigned mask, T var, SourceLane src_of, const Site& site) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable_v<T>);
  Runtime& r = rt();
  check_full_mask(mask, site);
  const int me = linear_tid(), warp_base = me - me % 32, lane = me % 32;
  const unsigned number = ++r.current->shuffles;
  Runtime::ShuffleSlot* slots = r.shuffle_slots.data() + number % 2 * (r.shuffle_slots.size() / 2);
  slots[me].shuffle = number;
  std::memcpy(&slots[me].bits, &var, sizeof(T));
  wait_at(State::at_warp_barrier, site);
  const int source = warp_base + src_of(lane);
  T out = var;
  if (source >= r.threads || slots[source].shuffle != number)
    error("shuffle from a lane that has exited or does not exist, at " + site.str());
  else
    std::memcpy(&out, &slots[source].bits, sizeof(T));
  return out;
}

}  // namespace sim

inline void __syncthreads(sim::Site site = sim::Site::current("__syncthreads")) {
  sim::wait_at(sim::State::at_block_barrier, site);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, sim::Site site = sim::Site::current("__syncwarp")) {
  sim::check_full_mask(mask, site);
  sim::wait_at(sim::State::at_warp_barrier, site);
}
template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32,
              sim::Site site = sim::Site::current("__shfl_sync")) {
  return sim::shuffle(mask, var, [&](int lane) { return lane / width * width + src_lane % width; }, site);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32,
                  sim::Site site = sim::Site::current("__shfl_xor_sync")) {
  return sim::shuffle(mask, var, [&](int lane) {
    const int source = lane ^ lane_mask;
    return source / width == lane / width ? source : lane;
  }, site);
}

// Atomics: a thread is never interrupted between sync points, so plain code is atomic.
template <typename T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}

inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
