// The CUDA device: device memory and pinned host memory through a caching allocator, one non-blocking compute stream
// for every copy and kernel, and exact accounting of what this device allocated. Piece tables and generate tables are
// uploaded through a pinned staging area into a device scratch area; neither is counted in bytes_in_use (they are
// this device's working memory, not buffers), but both show in used_memory().
//
// copy_pieces on the peer path (pieces read from another device's memory): how those pieces are copied is
// HYBRIDSHARD_PEER_COPY, read once when the device is made, for measuring: `engine` (the default) gives every piece
// of at least 256 KiB to the copy engines (cudaMemcpyAsync, or cudaMemcpy2DAsync for strided pieces) while the kernel
// copies the rest; `contiguous` only contiguous pieces of at least 1 MiB; `kernel` none. The copies go round-robin to
// HYBRIDSHARD_PEER_COPY_STREAMS streams (default 4) forked from and joined back into the compute stream, so that a
// copy's start does not wait for the previous copy's end. Over NVLink the copy engines move a peer's bytes faster
// than SM loads (2 x H200: 390 against 338 GB/s, GPU.md; enter measured in docs/performance.md). A strided piece goes
// to the copy engines only when its rows are at least HYBRIDSHARD_PEER_COPY_MIN_ROW bytes wide (default 256): 2-D
// copies between two H200s ran at the contiguous copy's rate down to 256-byte rows, while the kernel reading a peer's
// 768-byte rows (Qwen3-30B-A3B's expert w2 halves) slowed the link beside the copy engines (docs/performance.md,
// session 7). The kernel runs beside the copy engines on at most HYBRIDSHARD_PEER_KERNEL_BLOCKS blocks (default half
// the multiprocessors) and is launched before them: its local copies then last about as long as the link's instead
// of crowding the memory at the start (Llama-3-8B tp2 -> 1: 23.9 -> 23.0 ms). The routing and the kernel's table are
// built by detail::make_piece_table (core/src/piece_table.cc), which `enter_work` also uses to count what an enter
// issues; a 2-D copy whose rows lie further apart than the device's largest pitch (coalesced pieces of tensors far
// apart in a buffer) goes row by row. Inside the kernel the chunks that read another device are spread evenly through
// the grid, so that its NVLink reads start at once and the local chunks fill the gaps. copy_pieces keeps its tables
// on the device: the same call again (an enter after an exit: same pieces, same buffers) launches it without building
// or uploading it, and a call of the same shape whose buffers moved (the shard and the buckets after a release to the
// driver) moves the kept table instead of building another. The tables stay through empty_cache (they are a few MB:
// the landing pass's, each round's pack and landing); copy_pieces_aside runs the same on a second stream (the
// send/recv path lands one round's bucket there while the next round moves); both lanes share the table cache (the
// last 1024 tables: a round's pack, landing and local slice each have one).
//
// The cache (like PyTorch's caching allocator, without splitting blocks): sizes are rounded (512 B below 1 MiB, 2 MiB
// above), deallocate records an event on the stream and keeps the block in a size-ordered free list of its residency,
// and allocate takes the smallest cached block of at least the rounded size and at most a quarter above it, after
// that block's event (the work queued before the free) has completed. So exit(free) costs no cudaFree, an enter after
// it no cudaMalloc, and an offload no cudaHostAlloc after the first. An allocation that does not fit releases every
// cached block of its residency and tries once more; empty_cache() releases them all.
#include <algorithm>
#include <cstring>
#include <iterator>
#include <limits>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "detail/caching_device.h"
#include "detail/cuda_check.h"
#include "detail/generate_table.h"
#include "detail/kernels.h"
#include "detail/piece_table.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/error.h"

namespace hybridshard::core {
namespace {

std::string where_name(Residency where) { return std::string(residency_name(where)); }

// A copy_pieces table as the device keeps it: its shape (detail::piece_table_shape_key), the bases its addresses hold
// now, the copy-engine copies and the kernel's entries on the host (to move them when a base moves), and the kernel's
// table on the device (entries, then chunks).
struct CachedTable {
  std::vector<std::int64_t> key;
  std::vector<void*> src_bases;
  const void* message_base = nullptr;
  void* dst_base = nullptr;
  detail::PieceTable host;  // without its chunks once they are uploaded
  void* device = nullptr;
  std::size_t capacity = 0;
  std::size_t chunks_offset = 0;
  std::int64_t num_chunks = 0;
  std::int64_t max_blocks = 0;
};

// A cached block: its pointer and the event its last use was recorded with (on the stream at deallocate).
struct CachedBlock {
  void* pointer = nullptr;
  cudaEvent_t freed = nullptr;
};

class CudaDevice final : public detail::CachingDevice<CachedBlock> {
 public:
  explicit CudaDevice(int index) : index_(index) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
      cudaGetLastError();
      count = 0;
    }
    if (index < 0 || index >= count) {
      HS_THROW(Error, "cuda device " + std::to_string(index) + " requested but " + std::to_string(count) +
                          " CUDA device(s) are present");
    }
    HS_CUDA_CHECK(cudaSetDevice(index_));
    cudaDeviceProp properties{};
    HS_CUDA_CHECK(cudaGetDeviceProperties(&properties, index_));
    name_ = properties.name;
    max_pitch_ = properties.memPitch;
    HS_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    HS_CUDA_CHECK(cudaEventCreateWithFlags(&staging_free_, cudaEventDisableTiming));
    HS_CUDA_CHECK(cudaEventCreateWithFlags(&fork_, cudaEventDisableTiming));
    routing_ = detail::PieceRouting::from_environment();
    if (routing_.kernel_blocks_beside_engines == 0) {
      routing_.kernel_blocks_beside_engines = std::max(1, properties.multiProcessorCount / 2);
    }
    engines_.resize(static_cast<std::size_t>(routing_.engine_streams));
  }

  ~CudaDevice() override {
    cudaSetDevice(index_);
    cudaStreamSynchronize(stream_);
    // Buffers still allocated belong to owners that outlived their device: free them rather than leak.
    blocks_.for_each_held([](Residency where, void* pointer) { free_block(where, pointer); },
                          [](Residency where, const CachedBlock& block) {
                            free_block(where, block.pointer);
                            cudaEventDestroy(block.freed);
                          });
    for (cudaEvent_t event : spare_events_) cudaEventDestroy(event);
    if (scratch_ != nullptr) cudaFree(scratch_);
    for (CachedTable& table : tables_) {
      if (table.device != nullptr) cudaFree(table.device);
    }
    if (aside_ != nullptr) {
      cudaStreamSynchronize(aside_);
      cudaStreamDestroy(aside_);
      cudaEventDestroy(aside_start_);
      cudaEventDestroy(aside_done_);
      for (cudaEvent_t mark : aside_marks_) cudaEventDestroy(mark);
    }
    if (staging_ != nullptr) cudaFreeHost(staging_);
    cudaEventDestroy(staging_free_);
    cudaEventDestroy(fork_);
    for (EngineStream& engine : engines_) {
      if (engine.stream == nullptr) continue;  // never made (destroying stream 0 would leave an error behind)
      cudaStreamSynchronize(engine.stream);
      cudaStreamDestroy(engine.stream);
      cudaEventDestroy(engine.join);
    }
    cudaStreamDestroy(stream_);
  }

  DeviceType type() const override { return DeviceType::kCuda; }
  std::string description() const override { return "cuda:" + std::to_string(index_) + " " + name_; }

  void* allocate(Residency where, std::int64_t bytes) override {
    if (where == Residency::kNone) HS_THROW(Error, "cuda device: cannot allocate with residency none");
    if (bytes < 0) HS_THROW(Error, "cuda device: negative allocation of " + std::to_string(bytes) + " bytes");
    HS_CUDA_CHECK(cudaSetDevice(index_));
    // A zero-byte buffer still gets a unique address (a small block, not counted in bytes_in_use).
    const std::size_t size = rounded_size(std::max<std::int64_t>(bytes, 1));
    std::lock_guard<std::mutex> lock(mutex_);

    void* pointer = nullptr;
    std::size_t held = size;
    if (auto taken = blocks_.take(where, size)) {
      // Work queued before the free may still use the block; normally long done.
      HS_CUDA_CHECK(cudaEventSynchronize(taken->block.freed));
      pointer = taken->block.pointer;
      held = taken->size;
      spare_events_.push_back(taken->block.freed);
    } else {
      cudaError_t error = driver_allocate(where, size, &pointer);
      if (error == cudaErrorMemoryAllocation && blocks_.has_free(where)) {
        cudaGetLastError();
        release_cached(where);
        error = driver_allocate(where, size, &pointer);
      }
      if (error != cudaSuccess) {
        cudaGetLastError();
        std::size_t free_bytes = 0, total_bytes = 0;
        cudaMemGetInfo(&free_bytes, &total_bytes);
        const std::string message = "cuda device " + std::to_string(index_) + ": cannot allocate " +
                                    std::to_string(bytes) + " bytes (" + where_name(where) +
                                    "): " + std::to_string(blocks_.in_use(where)) + " bytes in use by hybridshard, " +
                                    std::to_string(blocks_.cached(where)) + " cached, " + std::to_string(free_bytes) +
                                    " of " + std::to_string(total_bytes) + " device bytes free";
        const char* call = where == Residency::kGpu ? "cudaMalloc" : "cudaHostAlloc";
        if (error == cudaErrorMemoryAllocation) {
          throw OutOfMemoryError(message, __FILE__, __LINE__, call, cudaGetErrorString(error));
        }
        throw Error(message, __FILE__, __LINE__, call, cudaGetErrorString(error));
      }
      blocks_.obtained(where, size);
    }
    blocks_.lend(where, pointer, bytes, held);
    return pointer;
  }

  void deallocate(Residency where, void* pointer, std::int64_t bytes) override {
    if (pointer == nullptr) return;
    HS_CUDA_CHECK(cudaSetDevice(index_));
    std::lock_guard<std::mutex> lock(mutex_);
    blocks_.give_back("cuda device", where, pointer, bytes, [&] {
      // Work queued on the stream may still read or write the block: its next owner waits for this event.
      cudaEvent_t freed = nullptr;
      if (spare_events_.empty()) {
        HS_CUDA_CHECK(cudaEventCreateWithFlags(&freed, cudaEventDisableTiming));
      } else {
        freed = spare_events_.back();
        spare_events_.pop_back();
      }
      HS_CUDA_CHECK(cudaEventRecord(freed, stream_));
      return CachedBlock{pointer, freed};
    });
  }

  using Device::empty_cache;
  void empty_cache(Residency where) override {
    if (where == Residency::kNone) return;
    HS_CUDA_CHECK(cudaSetDevice(index_));
    std::lock_guard<std::mutex> lock(mutex_);
    release_cached(where);
  }

  DeviceMemory memory() const override {
    HS_CUDA_CHECK(cudaSetDevice(index_));
    // Under the lock: no allocation of this device falls between the driver's figure and the counters.
    std::lock_guard<std::mutex> lock(mutex_);
    std::size_t free_bytes = 0, total_bytes = 0;
    HS_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    DeviceMemory memory;
    memory.total = static_cast<std::int64_t>(total_bytes);
    memory.used = static_cast<std::int64_t>(total_bytes - free_bytes);
    read_cache(memory);
    return memory;
  }

  std::int64_t total_memory() const override {
    std::size_t free_bytes = 0, total_bytes = 0;
    HS_CUDA_CHECK(cudaSetDevice(index_));
    HS_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    return static_cast<std::int64_t>(total_bytes);
  }

  std::int64_t used_memory() const override {
    std::size_t free_bytes = 0, total_bytes = 0;
    HS_CUDA_CHECK(cudaSetDevice(index_));
    HS_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    return static_cast<std::int64_t>(total_bytes - free_bytes);
  }

  void copy(void* dst, Residency dst_where, const void* src, Residency src_where, std::int64_t bytes) override {
    if (bytes < 0) HS_THROW(Error, "cuda device: copy of negative size " + std::to_string(bytes));
    if (bytes == 0) return;
    HS_CUDA_CHECK(cudaSetDevice(index_));
    HS_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<std::size_t>(bytes), cudaMemcpyDefault, stream_));
  }

  void fill_zero(void* dst, std::int64_t bytes) override {
    if (bytes <= 0) return;
    HS_CUDA_CHECK(cudaSetDevice(index_));
    HS_CUDA_CHECK(cudaMemsetAsync(dst, 0, static_cast<std::size_t>(bytes), stream_));
  }

  void copy_pieces(std::span<const Piece> pieces, std::span<void* const> src_bases, const void* message_base,
                   void* dst_base) override {
    HS_CUDA_CHECK(cudaSetDevice(index_));
    launch(table_for(pieces, src_bases, message_base, dst_base), stream_);
  }

  // The aside lane: its own stream, started after everything queued on the compute stream so far (the table upload
  // included); the compute stream waits for it only through await_aside.
  void copy_pieces_aside(std::span<const Piece> pieces, std::span<void* const> src_bases, const void* message_base,
                         void* dst_base) override {
    HS_CUDA_CHECK(cudaSetDevice(index_));
    make_aside();
    const CachedTable& table = table_for(pieces, src_bases, message_base, dst_base);
    HS_CUDA_CHECK(cudaEventRecord(aside_start_, stream_));
    HS_CUDA_CHECK(cudaStreamWaitEvent(aside_, aside_start_, 0));
    launch(table, aside_);
  }

  void* aside_stream() override {
    HS_CUDA_CHECK(cudaSetDevice(index_));
    make_aside();
    return aside_;
  }

  void make_aside() {
    if (aside_ != nullptr) return;
    HS_CUDA_CHECK(cudaStreamCreateWithFlags(&aside_, cudaStreamNonBlocking));
    HS_CUDA_CHECK(cudaEventCreateWithFlags(&aside_start_, cudaEventDisableTiming));
    for (cudaEvent_t& mark : aside_marks_) HS_CUDA_CHECK(cudaEventCreateWithFlags(&mark, cudaEventDisableTiming));
    HS_CUDA_CHECK(cudaEventCreateWithFlags(&aside_done_, cudaEventDisableTiming));
  }

  void mark_aside(int slot) override {
    if (aside_ == nullptr) return;  // nothing ever ran aside
    HS_CUDA_CHECK(cudaSetDevice(index_));
    HS_CUDA_CHECK(cudaEventRecord(aside_marks_[aside_slot(slot)], aside_));
  }

  void await_aside(int slot) override {
    if (aside_ == nullptr) return;
    HS_CUDA_CHECK(cudaSetDevice(index_));
    HS_CUDA_CHECK(cudaStreamWaitEvent(stream_, aside_marks_[aside_slot(slot)], 0));
  }

  static std::size_t aside_slot(int slot) {
    if (slot < 0 || slot >= 2) HS_THROW(Error, "cuda device: aside slot " + std::to_string(slot) + " is not 0 or 1");
    return static_cast<std::size_t>(slot);
  }

  // The table of this call, from the cache when a call of the same shape ran before: an enter after an exit, or the
  // same round of the next enter. When its buffers have moved since (an enter after a release to the driver gets its
  // shard and buckets elsewhere), the table follows them: the copy-engine copies move on the host and the kernel's
  // entries are uploaded again (its per-block chunks, nearly all of the table, stay). Session 8, one H200: building
  // and uploading Llama-3-8B's landing table again after each `driver` release cost 2.3 ms of an 11.8 ms enter. Built
  // and uploaded on the compute stream otherwise; the least recently used table makes room (after both lanes are idle:
  // a kernel may still read it).
  const CachedTable& table_for(std::span<const Piece> pieces, std::span<void* const> src_bases,
                               const void* message_base, void* dst_base) {
    const std::vector<bool> remote = remote_sources(src_bases);
    std::vector<std::int64_t> key = detail::piece_table_shape_key(pieces, src_bases, message_base, dst_base, remote);
    for (auto it = tables_.begin(); it != tables_.end(); ++it) {
      if (it->key == key) {
        tables_.splice(tables_.begin(), tables_, it);
        follow(tables_.front(), src_bases, message_base, dst_base);
        return tables_.front();
      }
    }
    if (tables_.size() >= kCachedTables) {
      HS_CUDA_CHECK(cudaStreamSynchronize(stream_));
      if (aside_ != nullptr) HS_CUDA_CHECK(cudaStreamSynchronize(aside_));
      tables_.splice(tables_.begin(), tables_, std::prev(tables_.end()));  // reuse its device memory
    } else {
      tables_.emplace_front();
    }
    CachedTable& table = tables_.front();
    table.key.clear();  // invalid until rebuilt
    build_table(table, pieces, src_bases, message_base, dst_base, remote);
    table.key = std::move(key);
    return table;
  }

  // Which sources live on another device (a peer's memory).
  std::vector<bool> remote_sources(std::span<void* const> src_bases) const {
    std::vector<bool> remote(src_bases.size(), false);
    for (std::size_t b = 0; b < src_bases.size(); ++b) {
      cudaPointerAttributes attributes{};
      if (src_bases[b] != nullptr && cudaPointerGetAttributes(&attributes, src_bases[b]) == cudaSuccess) {
        remote[b] = attributes.type == cudaMemoryTypeDevice && attributes.device != index_;
      } else {
        cudaGetLastError();
      }
    }
    return remote;
  }

  // Moves `table` to this call's bases when they differ from the ones its addresses hold.
  void follow(CachedTable& table, std::span<void* const> src_bases, const void* message_base, void* dst_base) {
    if (table.dst_base == dst_base && table.message_base == message_base &&
        std::equal(src_bases.begin(), src_bases.end(), table.src_bases.begin(), table.src_bases.end())) {
      return;
    }
    detail::rebase_piece_table(table.host, table.src_bases, table.message_base, table.dst_base, src_bases, message_base,
                               dst_base);
    table.src_bases.assign(src_bases.begin(), src_bases.end());
    table.message_base = message_base;
    table.dst_base = dst_base;
    if (table.host.entries.empty()) return;
    // The entries are rewritten on the compute stream: after whatever the aside lane still runs (it may read them).
    if (aside_ != nullptr) {
      HS_CUDA_CHECK(cudaEventRecord(aside_done_, aside_));
      HS_CUDA_CHECK(cudaStreamWaitEvent(stream_, aside_done_, 0));
    }
    const std::size_t entry_bytes = table.host.entries.size() * sizeof(table.host.entries[0]);
    const void* uploaded = upload(table.host.entries.data(), entry_bytes);
    HS_CUDA_CHECK(cudaMemcpyAsync(table.device, uploaded, entry_bytes, cudaMemcpyDeviceToDevice, stream_));
  }

  // Queues `table`'s copies on `stream`: the copy-engine copies forked from it and joined back into it, so that
  // everything after them on that stream waits for them (several streams, so that one copy's start does not wait for
  // the previous one's end), and the kernel over the rest.
  void launch(const CachedTable& table, cudaStream_t stream) {
    const auto launch_kernel = [&] {
      if (table.num_chunks <= 0) return;
      detail::launch_copy_pieces(reinterpret_cast<const detail::DevicePiece*>(table.device),
                                 reinterpret_cast<const detail::DeviceChunk*>(
                                     static_cast<const unsigned char*>(table.device) + table.chunks_offset),
                                 table.num_chunks, table.max_blocks, stream);
    };
    const std::vector<detail::DevicePiece>& copies = table.host.engine_copies;
    if (!copies.empty()) HS_CUDA_CHECK(cudaEventRecord(fork_, stream));
    launch_kernel();
    if (!copies.empty()) {
      for (std::size_t e = 0; e < copies.size(); ++e) {
        if (e < engines_.size()) HS_CUDA_CHECK(cudaStreamWaitEvent(engine(e).stream, fork_, 0));
        const detail::DevicePiece& copy = copies[e];
        const cudaStream_t on = engine(e % engines_.size()).stream;
        if (copy.rows == 1) {
          HS_CUDA_CHECK(
              cudaMemcpyAsync(copy.dst, copy.src, static_cast<std::size_t>(copy.row_bytes), cudaMemcpyDefault, on));
        } else if (static_cast<std::size_t>(std::max(copy.src_stride, copy.dst_stride)) > max_pitch_) {
          // Rows further apart than a 2-D copy's pitch may be (coalesced pieces of different tensors): row by row.
          for (std::int64_t row = 0; row < copy.rows; ++row) {
            HS_CUDA_CHECK(cudaMemcpyAsync(copy.dst + row * copy.dst_stride, copy.src + row * copy.src_stride,
                                          static_cast<std::size_t>(copy.row_bytes), cudaMemcpyDefault, on));
          }
        } else {
          HS_CUDA_CHECK(cudaMemcpy2DAsync(
              copy.dst, static_cast<std::size_t>(copy.dst_stride), copy.src, static_cast<std::size_t>(copy.src_stride),
              static_cast<std::size_t>(copy.row_bytes), static_cast<std::size_t>(copy.rows), cudaMemcpyDefault, on));
        }
      }
      for (std::size_t e = 0; e < std::min(engines_.size(), copies.size()); ++e) {
        HS_CUDA_CHECK(cudaEventRecord(engines_[e].join, engines_[e].stream));
      }
    }
    for (std::size_t e = 0; e < std::min(engines_.size(), copies.size()); ++e) {
      HS_CUDA_CHECK(cudaStreamWaitEvent(stream, engines_[e].join, 0));
    }
  }

  // The copy-engine stream `e`, made on first use.
  struct EngineStream {
    cudaStream_t stream = nullptr;
    cudaEvent_t join = nullptr;
  };
  EngineStream& engine(std::size_t e) {
    EngineStream& engine = engines_[e];
    if (engine.stream == nullptr) {
      HS_CUDA_CHECK(cudaStreamCreateWithFlags(&engine.stream, cudaStreamNonBlocking));
      HS_CUDA_CHECK(cudaEventCreateWithFlags(&engine.join, cudaEventDisableTiming));
    }
    return engine;
  }

  // Builds `table` (but not its key) for copy_pieces (detail::make_piece_table) and uploads the kernel's part into
  // table.device.
  void build_table(CachedTable& table, std::span<const Piece> pieces, std::span<void* const> src_bases,
                   const void* message_base, void* dst_base, const std::vector<bool>& remote) {
    detail::PieceTable built = detail::make_piece_table(pieces, src_bases, message_base, dst_base, remote, routing_);
    table.src_bases.assign(src_bases.begin(), src_bases.end());
    table.message_base = message_base;
    table.dst_base = dst_base;
    table.num_chunks = static_cast<std::int64_t>(built.chunks.size());
    table.max_blocks = built.max_blocks;
    const auto keep_host_part = [&] {
      table.host = std::move(built);
      table.host.chunks = {};  // on the device; never moved
    };
    if (built.entries.empty()) {
      keep_host_part();
      return;
    }
    // One upload: the piece entries, then the per-block chunk table (8-byte aligned: DevicePiece holds 8-byte
    // fields), kept in table.device for the next call with the same key.
    const std::size_t entry_bytes = built.entries.size() * sizeof(built.entries[0]);
    const std::size_t chunk_bytes = built.chunks.size() * sizeof(built.chunks[0]);
    upload_buffer_.resize(entry_bytes + chunk_bytes);
    std::memcpy(upload_buffer_.data(), built.entries.data(), entry_bytes);
    std::memcpy(upload_buffer_.data() + entry_bytes, built.chunks.data(), chunk_bytes);
    const void* uploaded = upload(upload_buffer_.data(), upload_buffer_.size());
    if (upload_buffer_.size() > table.capacity) {
      HS_CUDA_CHECK(cudaStreamSynchronize(stream_));  // a kernel may still read the old table
      if (aside_ != nullptr) HS_CUDA_CHECK(cudaStreamSynchronize(aside_));
      if (table.device != nullptr) HS_CUDA_CHECK(cudaFree(table.device));
      table.device = nullptr;
      table.capacity = 0;
      HS_CUDA_CHECK(cudaMalloc(&table.device, upload_buffer_.size()));
      table.capacity = upload_buffer_.size();
    }
    HS_CUDA_CHECK(cudaMemcpyAsync(table.device, uploaded, upload_buffer_.size(), cudaMemcpyDeviceToDevice, stream_));
    table.chunks_offset = entry_bytes;
    keep_host_part();
  }

  void generate(const BufferLayout& layout, std::uint32_t version, void* base) override {
    const std::vector<detail::GenerateEntry> entries = detail::make_generate_table(layout);
    fill_zero(base, layout.bytes);
    std::vector<detail::DeviceGenerateEntry> table;
    table.reserve(entries.size());
    std::int64_t num_chunks = 0;
    for (const detail::GenerateEntry& entry : entries) {
      detail::DeviceGenerateEntry device_entry;
      device_entry.hf_tensor = entry.hf_tensor;
      device_entry.hf_row = entry.hf_row;
      device_entry.hf_col = entry.hf_col;
      device_entry.first_element = entry.first_element;
      device_entry.row_elements = entry.row_elements;
      device_entry.rows = entry.rows;
      device_entry.cols = entry.cols;
      device_entry.first_chunk = num_chunks;
      num_chunks += (entry.rows * entry.cols + detail::kGenerateChunkElements - 1) / detail::kGenerateChunkElements;
      table.push_back(device_entry);
    }
    if (table.empty()) return;
    const auto* device_table =
        static_cast<const detail::DeviceGenerateEntry*>(upload(table.data(), table.size() * sizeof(table[0])));
    detail::launch_generate(device_table, static_cast<std::int32_t>(table.size()), num_chunks, base,
                            detail::dtype_code(layout.dtype), version, stream_);
  }

  std::int64_t count_mismatching_elements(const void* actual, const void* expected, std::int64_t bytes,
                                          int element_bytes) override {
    const std::uint64_t address_bits =
        reinterpret_cast<std::uintptr_t>(actual) | reinterpret_cast<std::uintptr_t>(expected);
    if (address_bits % static_cast<std::uint64_t>(element_bytes) != 0) {
      HS_THROW(Error, "count_mismatches: pointers are not aligned to " + std::to_string(element_bytes) + " bytes");
    }
    const unsigned long long zero = 0;
    auto* counter = static_cast<unsigned long long*>(upload(&zero, sizeof zero));
    detail::launch_count_mismatches(actual, expected, bytes / element_bytes, element_bytes, counter, stream_);
    unsigned long long result = 0;
    HS_CUDA_CHECK(cudaMemcpyAsync(&result, counter, sizeof result, cudaMemcpyDeviceToHost, stream_));
    HS_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return static_cast<std::int64_t>(result);
  }

  void synchronize() override {
    HS_CUDA_CHECK(cudaSetDevice(index_));
    HS_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  void* stream() override { return stream_; }

 private:
  // 512 B granules below 1 MiB, 2 MiB (the driver's own granule for large allocations) above.
  static std::size_t rounded_size(std::int64_t bytes) {
    const auto size = static_cast<std::size_t>(bytes);
    const std::size_t granule = size < (std::size_t{1} << 20) ? 512 : std::size_t{2} << 20;
    return (size + granule - 1) / granule * granule;
  }

  static cudaError_t driver_allocate(Residency where, std::size_t size, void** pointer) {
    return where == Residency::kGpu ? cudaMalloc(pointer, size) : cudaHostAlloc(pointer, size, cudaHostAllocPortable);
  }

  static void free_block(Residency where, void* pointer) {
    if (where == Residency::kGpu) {
      cudaFree(pointer);
    } else {
      cudaFreeHost(pointer);
    }
  }

  // Hands every cached block of `where` back to the driver. Caller holds mutex_.
  void release_cached(Residency where) {
    blocks_.release_free(where, [this, where](const CachedBlock& block) {
      HS_CUDA_CHECK(cudaEventSynchronize(block.freed));
      HS_CUDA_CHECK(where == Residency::kGpu ? cudaFree(block.pointer) : cudaFreeHost(block.pointer));
      spare_events_.push_back(block.freed);
    });
  }

  // Copies `bytes` from host memory into the device scratch area, ordered on the stream; returns the device address.
  // The pinned staging area is reused only after the previous upload left it (staging_free_).
  void* upload(const void* host, std::size_t bytes) {
    HS_CUDA_CHECK(cudaSetDevice(index_));
    HS_CUDA_CHECK(cudaEventSynchronize(staging_free_));
    if (bytes > capacity_) {
      HS_CUDA_CHECK(cudaStreamSynchronize(stream_));
      if (scratch_ != nullptr) HS_CUDA_CHECK(cudaFree(scratch_));
      if (staging_ != nullptr) HS_CUDA_CHECK(cudaFreeHost(staging_));
      scratch_ = nullptr;
      staging_ = nullptr;
      capacity_ = 0;
      const std::size_t size = std::max<std::size_t>(bytes, std::size_t{64} << 10);
      HS_CUDA_CHECK(cudaMalloc(&scratch_, size));
      HS_CUDA_CHECK(cudaHostAlloc(&staging_, size, cudaHostAllocDefault));
      capacity_ = size;
    }
    std::memcpy(staging_, host, bytes);
    HS_CUDA_CHECK(cudaMemcpyAsync(scratch_, staging_, bytes, cudaMemcpyHostToDevice, stream_));
    HS_CUDA_CHECK(cudaEventRecord(staging_free_, stream_));
    return scratch_;
  }

  const int index_;
  std::string name_;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t fork_ = nullptr;
  std::vector<EngineStream> engines_;  // copy_pieces' copy-engine copies, forked from and joined into stream_
  detail::PieceRouting routing_;       // see the top of this file
  std::size_t max_pitch_ = 0;          // the widest pitch a 2-D copy may have (cudaDeviceProp::memPitch)
  // The last kCachedTables tables, most recently used first: the landing pass, or every round's pack and landing
  // tables of the send/recv path (one enter after another with the same buffers builds none).
  static constexpr std::size_t kCachedTables = 1024;
  std::list<CachedTable> tables_;
  cudaStream_t aside_ = nullptr;  // the aside lane (copy_pieces_aside), made on first use
  cudaEvent_t aside_start_ = nullptr;
  cudaEvent_t aside_done_ = nullptr;  // the aside lane's work so far, for a table rewritten on the compute stream
  cudaEvent_t aside_marks_[2] = {nullptr, nullptr};
  cudaEvent_t staging_free_ = nullptr;
  void* scratch_ = nullptr;
  void* staging_ = nullptr;
  std::size_t capacity_ = 0;
  std::vector<cudaEvent_t> spare_events_;  // events of blocks taken again, free for the next deallocate (under mutex_)
  std::vector<unsigned char> upload_buffer_;
};

}  // namespace

std::unique_ptr<Device> make_cuda_device(int index) { return std::make_unique<CudaDevice>(index); }

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: not an error here
    return 0;
  }
  return count;
}

bool cuda_available() { return cuda_device_count() > 0; }

}  // namespace hybridshard::core
