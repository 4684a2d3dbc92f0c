// See detail/peer_links.h.
#include <cuda.h>
#include <cudaTypedefs.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <string>

#include "detail/cuda_check.h"
#include "detail/peer_links.h"

namespace hybridshard::core::detail {
namespace {

// Read once per process (a file read cost tens of microseconds in every enter).
std::uint64_t this_host() {
  static const std::uint64_t host = [] {
    char name[256] = {};
    gethostname(name, sizeof name - 1);
    std::string identity = name;
    std::ifstream boot_id("/proc/sys/kernel/random/boot_id");
    std::string boot;
    if (boot_id >> boot) identity += "/" + boot;
    return std::hash<std::string>{}(identity);
  }();
  return host;
}

void set_why(PeerRecord& record, const std::string& why) {
  std::strncpy(record.why, why.c_str(), sizeof record.why - 1);
  record.why[sizeof record.why - 1] = '\0';
}

std::string device_name(int index) { return "cuda:" + std::to_string(index); }

// A driver function by name, reached through the runtime so that nothing links libcuda; null when the driver does
// not have it.
template <typename Function>
Function driver_function(const char* name) {
  void* function = nullptr;
  cudaDriverEntryPointQueryResult status{};
  if (cudaGetDriverEntryPointByVersion(name, &function, 12000, cudaEnableDefault, &status) != cudaSuccess ||
      status != cudaDriverEntryPointSuccess) {
    cudaGetLastError();
    return nullptr;
  }
  return reinterpret_cast<Function>(function);
}

// Where `pointer` sits in its allocation (cuMemGetAddressRange); -1 when the driver does not say.
std::int64_t offset_in_allocation(const void* pointer) {
  static const auto get_range = driver_function<PFN_cuMemGetAddressRange_v3020>("cuMemGetAddressRange");
  if (get_range == nullptr) return -1;
  CUdeviceptr base = 0;
  std::size_t size = 0;
  const auto address = static_cast<CUdeviceptr>(reinterpret_cast<std::uintptr_t>(pointer));
  if (get_range(&base, &size, address) != CUDA_SUCCESS) return -1;
  return static_cast<std::int64_t>(address - base);
}

// The driver's process-wide unique id of the allocation `pointer` lies in (CU_POINTER_ATTRIBUTE_BUFFER_ID), 0 when
// the driver does not say.
std::uint64_t allocation_id(const void* pointer) {
  static const auto get_attribute = driver_function<PFN_cuPointerGetAttribute_v4000>("cuPointerGetAttribute");
  if (get_attribute == nullptr) return 0;
  unsigned long long id = 0;
  const auto address = static_cast<CUdeviceptr>(reinterpret_cast<std::uintptr_t>(pointer));
  if (get_attribute(&id, CU_POINTER_ATTRIBUTE_BUFFER_ID, address) != CUDA_SUCCESS) return 0;
  return id;
}

}  // namespace

PeerLinks::PeerLinks(int device_index) : device_index_(device_index) {}

PeerLinks::~PeerLinks() {
  cudaSetDevice(device_index_);
  for (auto& [handle, base] : opened_) cudaIpcCloseMemHandle(base);
}

PeerRecord PeerLinks::describe(std::span<void* const> buffers, std::span<const std::int64_t> bytes) {
  PeerRecord record;
  std::memset(static_cast<void*>(&record), 0, sizeof record);
  record.host = this_host();
  record.pid = static_cast<std::int32_t>(getpid());
  record.device = device_index_;
  if (buffers.size() > static_cast<std::size_t>(kMaxSharedBuffers) || buffers.size() != bytes.size()) {
    record.count = -1;
    set_why(record,
            "shares " + std::to_string(buffers.size()) + " buffers, more than " + std::to_string(kMaxSharedBuffers));
    return record;
  }
  record.count = static_cast<std::int32_t>(buffers.size());
  record.shareable = 1;
  HS_CUDA_CHECK(cudaSetDevice(device_index_));
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    record.pointers[i] = reinterpret_cast<std::uintptr_t>(buffers[i]);
    record.bytes[i] = bytes[i];
    if (buffers[i] == nullptr || bytes[i] <= 0) continue;
    record.offsets[i] = offset_in_allocation(buffers[i]);
    if (record.offsets[i] < 0) {
      record.shareable = 0;
      set_why(record, "cuMemGetAddressRange on " + device_name(device_index_) + " did not place buffer " +
                          std::to_string(i) + " in its allocation");
      continue;
    }
    // An allocation described before (an enter after an exit: the same train buffers) keeps its handle; asking the
    // driver for it again took 50-80 us per enter on an H200.
    const std::uint64_t id = allocation_id(buffers[i]);
    if (const auto found = described_.find(id); id != 0 && found != described_.end()) {
      record.handles[i] = found->second;
      continue;
    }
    const cudaError_t error = cudaIpcGetMemHandle(&record.handles[i], buffers[i]);
    if (error != cudaSuccess) {
      cudaGetLastError();
      record.shareable = 0;
      set_why(record, "cudaIpcGetMemHandle on " + device_name(device_index_) + " failed: " + cudaGetErrorString(error));
    } else if (id != 0) {
      described_[id] = record.handles[i];
    }
  }
  return record;
}

std::vector<const void*> PeerLinks::open(const PeerRecord& self, const PeerRecord& peer, std::string& why) {
  if (peer.count < 0) {
    why = std::string("the peer ") + peer.why;
    return {};
  }
  if (peer.host != self.host) {
    why = "the peer is on another host";
    return {};
  }
  HS_CUDA_CHECK(cudaSetDevice(device_index_));
  std::vector<const void*> pointers;
  if (peer.pid == self.pid) {
    if (peer.device != device_index_) {
      int can = 0;
      HS_CUDA_CHECK(cudaDeviceCanAccessPeer(&can, device_index_, peer.device));
      if (can == 0) {
        why = "no peer access from " + device_name(device_index_) + " to " + device_name(peer.device);
        return {};
      }
      const cudaError_t error = cudaDeviceEnablePeerAccess(peer.device, 0);
      if (error != cudaSuccess && error != cudaErrorPeerAccessAlreadyEnabled) {
        cudaGetLastError();
        why = "cudaDeviceEnablePeerAccess from " + device_name(device_index_) + " to " + device_name(peer.device) +
              " failed: " + cudaGetErrorString(error);
        return {};
      }
      cudaGetLastError();  // clears cudaErrorPeerAccessAlreadyEnabled
    }
    for (int i = 0; i < peer.count; ++i) pointers.push_back(reinterpret_cast<const void*>(peer.pointers[i]));
    return pointers;
  }
  if (peer.shareable == 0) {
    why = std::string("the peer's memory cannot be shared with other processes: ") + peer.why;
    return {};
  }
  for (int i = 0; i < peer.count; ++i) {
    if (peer.pointers[i] == 0 || peer.bytes[i] <= 0) {
      pointers.push_back(nullptr);
      continue;
    }
    const std::string key(reinterpret_cast<const char*>(&peer.handles[i]), sizeof peer.handles[i]);
    auto found = opened_.find(key);
    if (found == opened_.end()) {
      void* base = nullptr;
      const cudaError_t error = cudaIpcOpenMemHandle(&base, peer.handles[i], cudaIpcMemLazyEnablePeerAccess);
      if (error != cudaSuccess) {
        cudaGetLastError();
        why = "cudaIpcOpenMemHandle of " + device_name(peer.device) + "'s buffer " + std::to_string(i) + " on " +
              device_name(device_index_) + " failed: " + cudaGetErrorString(error);
        return {};
      }
      found = opened_.emplace(key, base).first;
    }
    pointers.push_back(static_cast<const char*>(found->second) + peer.offsets[i]);
  }
  return pointers;
}

}  // namespace hybridshard::core::detail
