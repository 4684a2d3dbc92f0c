// The CUDA half of the peer path (Communicator::share_memory on NCCL): what a rank tells the others about its shared
// buffers (a fixed-size record, all-gathered), and opening a peer's buffers for this device to read. Ranks of one
// process (threads) read each other's pointers after cudaDeviceEnablePeerAccess; ranks in other processes of the
// same host through CUDA IPC handles, opened once per allocation and kept until the links are destroyed; ranks on
// other hosts are not read directly.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace hybridshard::core::detail {

inline constexpr int kMaxSharedBuffers = 32;

struct PeerRecord {
  std::uint64_t host = 0;  // the machine: hostname and boot id, hashed
  std::int32_t pid = 0;
  std::int32_t device = -1;
  std::int32_t count = 0;      // buffers described (at most kMaxSharedBuffers)
  std::int32_t shareable = 0;  // 1 when every handle is valid (readable from other processes)
  std::uint64_t pointers[kMaxSharedBuffers] = {};
  std::int64_t bytes[kMaxSharedBuffers] = {};
  std::int64_t offsets[kMaxSharedBuffers] = {};  // from the start of the allocation the IPC handle maps
  cudaIpcMemHandle_t handles[kMaxSharedBuffers] = {};
  char why[160] = {};        // when count < 0 or shareable == 0: why
  std::uint64_t wanted = 0;  // the peers this rank reads (wanted_key)
  char meeting[48] = {};     // rank 0: the name of its HostMeeting (detail/host_meeting.h), when it made one
};

// The peers a rank wants to read, as one number for its record (FNV-1a over the list).
inline std::uint64_t wanted_key(std::span<const int> wanted) {
  std::uint64_t key = 0xcbf29ce484222325ull;
  for (int peer : wanted) key = (key ^ static_cast<std::uint32_t>(peer)) * 0x100000001b3ull;
  return key ^ wanted.size();
}

class PeerLinks {
 public:
  explicit PeerLinks(int device_index);
  ~PeerLinks();
  PeerLinks(const PeerLinks&) = delete;
  PeerLinks& operator=(const PeerLinks&) = delete;

  // This rank's record for `buffers` (every byte set, padding included: records are compared byte for byte) (device
  // memory of this device, anywhere inside a cudaMalloc allocation: the offset from the allocation's start travels with
  // the handle). More than kMaxSharedBuffers: count -1.
  PeerRecord describe(std::span<void* const> buffers, std::span<const std::int64_t> bytes);

  // Peer's buffers as this device reads them, or empty with `why` set.
  std::vector<const void*> open(const PeerRecord& self, const PeerRecord& peer, std::string& why);

 private:
  int device_index_;
  std::map<std::string, void*> opened_;                    // IPC handle bytes -> mapped base
  std::map<std::uint64_t, cudaIpcMemHandle_t> described_;  // allocation id (the driver's buffer id) -> IPC handle
};

}  // namespace hybridshard::core::detail
