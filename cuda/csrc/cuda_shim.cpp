// weft's C ABI over the parts of libtorch's CUDA API that tch does not bind: CUDA-graph
// capture and replay (at::cuda::CUDAGraph) and the caching allocator's statistics.
// Every entry point catches C++ exceptions and returns non-zero with a message kept per
// thread (weft_cuda_last_error), so no exception crosses into Rust.
//
// Built as a shared library that weft-cuda loads after libtorch_cuda. Only out-of-line libtorch
// functions and the device-generic guards (c10::DeviceGuard, c10::StreamGuard) are used: c10's
// inline CUDA guards call the CUDA runtime directly, which would make the runtime (a versioned
// library in another wheel's folder) one more thing to link and find.
#include <ATen/cuda/CUDAGraph.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/StreamGuard.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <cstdint>
#include <exception>
#include <optional>
#include <string>

namespace {

thread_local std::string last_error;

c10::Device cuda_device(c10::DeviceIndex index) { return c10::Device(c10::DeviceType::CUDA, index); }

template <typename F>
int guarded(F&& body) {
  try {
    body();
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown C++ exception";
  }
  return 1;
}

// A graph with the side stream it is captured on: capture is not allowed on the default
// stream, and warm-up runs there too so that lazily created handles (cuBLAS workspaces,
// cuDNN plans) exist before capture begins.
struct Graph {
  c10::DeviceIndex device;
  at::cuda::CUDAGraph graph;
  c10::cuda::CUDAStream stream;
  std::optional<c10::StreamGuard> on_side_stream;

  explicit Graph(c10::DeviceIndex index)
      : device(index), stream(c10::cuda::getStreamFromPool(false, index)) {}
};

// cudaMemGetInfo from the CUDA runtime libtorch_cuda already loaded; looked up at run time so
// that this library does not need the runtime on its own link line.
using MemGetInfo = cudaError_t (*)(size_t*, size_t*);

MemGetInfo mem_get_info() {
  static MemGetInfo found = reinterpret_cast<MemGetInfo>(dlsym(RTLD_DEFAULT, "cudaMemGetInfo"));
  return found;
}

}  // namespace

extern "C" {

const char* weft_cuda_last_error() { return last_error.c_str(); }

int weft_cuda_graph_new(int32_t device, void** out) {
  return guarded([&] {
    c10::DeviceGuard guard(cuda_device(static_cast<c10::DeviceIndex>(device)));
    *out = new Graph(static_cast<c10::DeviceIndex>(device));
  });
}

void weft_cuda_graph_free(void* graph) { delete static_cast<Graph*>(graph); }

// Makes the graph's side stream current on this thread, after all work queued so far on the
// device has finished (so the side stream sees finished inputs).
int weft_cuda_graph_enter_stream(void* raw) {
  return guarded([&] {
    auto* g = static_cast<Graph*>(raw);
    c10::cuda::device_synchronize();
    g->on_side_stream.emplace(c10::Stream(g->stream));
  });
}

// Waits for the side stream and makes the previous stream current again.
int weft_cuda_graph_leave_stream(void* raw) {
  return guarded([&] {
    auto* g = static_cast<Graph*>(raw);
    c10::Stream(g->stream).synchronize();
    g->on_side_stream.reset();
  });
}

// Thread-local capture mode: other threads' CUDA calls neither break nor join this capture.
int weft_cuda_graph_capture_begin(void* raw) {
  return guarded([&] {
    static_cast<Graph*>(raw)->graph.capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
  });
}

int weft_cuda_graph_capture_end(void* raw) {
  return guarded([&] { static_cast<Graph*>(raw)->graph.capture_end(); });
}

// Replays on the thread's current stream, so work queued after it on that stream sees its
// results.
int weft_cuda_graph_replay(void* raw) {
  return guarded([&] {
    auto* g = static_cast<Graph*>(raw);
    c10::DeviceGuard guard(cuda_device(g->device));
    g->graph.replay();
  });
}

// out: allocated now, allocated peak, reserved now, reserved peak (the caching allocator's
// aggregate statistics), device total, device free (0 when the runtime's query is missing).
int weft_cuda_memory_stats(int32_t device, uint64_t* out) {
  return guarded([&] {
    auto index = static_cast<c10::DeviceIndex>(device);
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
    auto aggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    out[0] = static_cast<uint64_t>(stats.allocated_bytes[aggregate].current);
    out[1] = static_cast<uint64_t>(stats.allocated_bytes[aggregate].peak);
    out[2] = static_cast<uint64_t>(stats.reserved_bytes[aggregate].current);
    out[3] = static_cast<uint64_t>(stats.reserved_bytes[aggregate].peak);
    out[4] = 0;
    out[5] = 0;
    if (auto query = mem_get_info()) {
      c10::DeviceGuard guard(cuda_device(index));
      size_t free_bytes = 0, total_bytes = 0;
      if (query(&free_bytes, &total_bytes) == cudaSuccess) {
        out[4] = total_bytes;
        out[5] = free_bytes;
      }
    }
  });
}

int weft_cuda_reset_peak_memory(int32_t device) {
  return guarded([&] {
    c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(device));
  });
}

// Returns the allocator's unused cached blocks to the driver.
int weft_cuda_empty_cache() {
  return guarded([&] { c10::cuda::CUDACachingAllocator::emptyCache(); });
}

}  // extern "C"
