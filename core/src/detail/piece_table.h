// The piece kernel's table and the routing of pieces between the copy engines and the kernel, without CUDA: the CUDA
// device builds its copy_pieces tables with make_piece_table (core/src/cuda_device.cc), and enter_work counts what a
// plan's enter would issue on a GPU with the same function (core/src/enter_work.cc), so the counts are the device's.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "detail/piece_entries.h"
#include "hybridshard/core/reshard_plan.h"

namespace hybridshard::core::detail {

// How copy_pieces copies pieces read from another device's memory (HYBRIDSHARD_PEER_COPY,
// HYBRIDSHARD_PEER_COPY_STREAMS, HYBRIDSHARD_PEER_COPY_MIN_ROW and HYBRIDSHARD_PEER_KERNEL_BLOCKS, read by
// from_environment(); the defaults are what docs/performance.md measured best):
// kEngine gives every piece of at least 256 KiB to the copy engines (cudaMemcpyAsync, or cudaMemcpy2DAsync for
// strided pieces) and the kernel the rest; kContiguous only contiguous pieces of at least 1 MiB; kKernel none. A
// strided piece goes to the copy engines only when its rows are at least `engine_min_row_bytes` wide: on 2 x H200 a
// 2-D copy between the GPUs ran at the contiguous copy's 391 GB/s with rows of 256 bytes and wider and at 367 GB/s
// with 128-byte rows, while the kernel reading a peer's 768-byte rows took 342 GB/s out of the link beside a copy
// (docs/performance.md, session 7). Pieces read from the device's own memory always go to the kernel.
struct PieceRouting {
  enum class PeerCopy : std::uint8_t { kEngine, kContiguous, kKernel };
  PeerCopy peer_copy = PeerCopy::kEngine;
  std::int64_t engine_streams = 4;  // streams the copy-engine copies go round-robin to (1 to 64)
  std::int64_t engine_min_row_bytes = 256;
  // The kernel's grid when copy-engine copies run beside it (HYBRIDSHARD_PEER_KERNEL_BLOCKS): 0 leaves it to the
  // device (the CUDA device: half its multiprocessors), so that the kernel's own copies run beside the link's for
  // its whole length instead of crowding the memory at its start.
  std::int64_t kernel_blocks_beside_engines = 0;

  // The defaults overridden by the environment; throws ConfigError naming the variable when a value is unusable.
  static PieceRouting from_environment();
  bool to_copy_engines(const Piece& piece, bool from_peer) const;
};

// What copy_pieces issues for one table: copy-engine copies (one cudaMemcpyAsync or cudaMemcpy2DAsync each) and the
// kernel's pieces and per-block chunks (one launch over all of them, none when there are no chunks). Chunks reading
// another device are spread evenly through the grid, so that the kernel's reads of a peer start at once and the local
// chunks fill the gaps.
struct PieceTable {
  std::vector<DevicePiece> engine_copies;
  std::vector<DevicePiece> entries;
  std::vector<DeviceChunk> chunks;
  // The source each engine copy and each entry reads (Piece::src_buffer: an index of the source bases, -1 the
  // message), so that the table can follow its bases (rebase_piece_table).
  std::vector<std::int32_t> engine_sources;
  std::vector<std::int32_t> entry_sources;
  std::int64_t max_blocks = 0;        // the kernel's grid at most (0: one block per chunk)
  std::int64_t device_bytes() const;  // what the kernel's table takes on the device: entries, then chunks
};

// Resolves `pieces` against their bases (Piece::src_buffer indexes `src_bases`, -1 reads `message_base`; `remote[b]`:
// src_bases[b] lives on another device) and routes them. Throws Error naming the piece for a source buffer out of
// range, a null base, or a piece beyond the kernel's 32-bit chunk table. Pieces with no bytes are left out.
PieceTable make_piece_table(std::span<const Piece> pieces, std::span<void* const> src_bases, const void* message_base,
                            void* dst_base, const std::vector<bool>& remote, const PieceRouting& routing);

// What a copy_pieces table depends on besides where its bases are: the pieces, which sources live on another device,
// and each base's alignment up to 16 bytes (all the kernel's vector widths see of an address). Two calls with the same
// shape key build tables that differ only by each base's address, so the device keeps one table per shape and moves
// it when a buffer moves (an enter after a release to the driver: the shard and the buckets come back elsewhere).
std::vector<std::int64_t> piece_table_shape_key(std::span<const Piece> pieces, std::span<void* const> src_bases,
                                                const void* message_base, const void* dst_base,
                                                const std::vector<bool>& remote);

// Moves `table`, built against the bases `from_*`, to the bases `to_*` of a call with the same shape key: every
// address shifts by its base's move. The result is what make_piece_table builds against `to_*`.
void rebase_piece_table(PieceTable& table, std::span<void* const> from_src, const void* from_message,
                        const void* from_dst, std::span<void* const> to_src, const void* to_message, void* to_dst);

}  // namespace hybridshard::core::detail
