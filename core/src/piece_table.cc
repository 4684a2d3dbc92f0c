#include "detail/piece_table.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <utility>

#include "detail/environment.h"
#include "hybridshard/core/error.h"

namespace hybridshard::core::detail {
namespace {

// The widest of 16, 8, 4, 2, 1 that divides every value.
std::int32_t common_alignment(std::initializer_list<std::uint64_t> values) {
  for (std::int32_t width : {16, 8, 4, 2}) {
    bool all = true;
    for (std::uint64_t value : values) all = all && value % static_cast<std::uint64_t>(width) == 0;
    if (all) return width;
  }
  return 1;
}

// `remote` and `local` merged so that the remote chunks are spread evenly (blocks start in grid order).
std::vector<DeviceChunk> spread(std::vector<DeviceChunk> remote, std::vector<DeviceChunk> local) {
  std::vector<DeviceChunk> merged;
  merged.reserve(remote.size() + local.size());
  std::size_t r = 0;
  std::size_t l = 0;
  while (r < remote.size() || l < local.size()) {
    // Remote next while its share so far is not above its share of the whole (remote first on ties).
    if (l >= local.size() || (r < remote.size() && r * local.size() <= l * remote.size())) {
      merged.push_back(remote[r++]);
    } else {
      merged.push_back(local[l++]);
    }
  }
  return merged;
}

}  // namespace

PieceRouting PieceRouting::from_environment() {
  PieceRouting routing;
  if (const char* value = std::getenv("HYBRIDSHARD_PEER_COPY"); value != nullptr && *value != '\0') {
    const std::string mode = value;
    if (mode == "engine") {
      routing.peer_copy = PeerCopy::kEngine;
    } else if (mode == "contiguous") {
      routing.peer_copy = PeerCopy::kContiguous;
    } else if (mode == "kernel") {
      routing.peer_copy = PeerCopy::kKernel;
    } else {
      HS_THROW(ConfigError, "HYBRIDSHARD_PEER_COPY: '" + mode + "' is not engine, contiguous or kernel");
    }
  }
  routing.engine_streams = count_from_environment("HYBRIDSHARD_PEER_COPY_STREAMS", routing.engine_streams, 1, 64);
  routing.engine_min_row_bytes =
      count_from_environment("HYBRIDSHARD_PEER_COPY_MIN_ROW", routing.engine_min_row_bytes, 0);
  routing.kernel_blocks_beside_engines =
      count_from_environment("HYBRIDSHARD_PEER_KERNEL_BLOCKS", routing.kernel_blocks_beside_engines, 0);
  return routing;
}

bool PieceRouting::to_copy_engines(const Piece& piece, bool from_peer) const {
  if (!from_peer) return false;
  const bool contiguous =
      piece.rows == 1 || (piece.row_bytes == piece.src_stride && piece.row_bytes == piece.dst_stride);
  // Strided pieces with narrow rows go to the kernel: a 2-D copy moves row by row.
  if (!contiguous && piece.row_bytes < engine_min_row_bytes) return false;
  switch (peer_copy) {
    case PeerCopy::kEngine:
      return piece.bytes() >= (256 << 10);
    case PeerCopy::kContiguous:
      return contiguous && piece.bytes() >= (1 << 20);
    case PeerCopy::kKernel:
      return false;
  }
  return false;
}

std::int64_t PieceTable::device_bytes() const {
  static_assert(sizeof(DevicePiece) % alignof(DeviceChunk) == 0);
  return static_cast<std::int64_t>(entries.size() * sizeof(DevicePiece) + chunks.size() * sizeof(DeviceChunk));
}

PieceTable make_piece_table(std::span<const Piece> pieces, std::span<void* const> src_bases, const void* message_base,
                            void* dst_base, const std::vector<bool>& remote, const PieceRouting& routing) {
  PieceTable table;
  table.entries.reserve(pieces.size());
  std::vector<DeviceChunk> remote_chunks;  // kernel chunks reading a peer, spread through the grid below
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    const Piece& piece = pieces[i];
    const void* base = nullptr;
    if (piece.src_buffer == -1) {
      base = message_base;
    } else if (piece.src_buffer >= 0 && static_cast<std::size_t>(piece.src_buffer) < src_bases.size()) {
      base = src_bases[static_cast<std::size_t>(piece.src_buffer)];
    } else {
      HS_THROW(Error, "copy_pieces: piece " + std::to_string(i) + " reads source buffer " +
                          std::to_string(piece.src_buffer) + " of " + std::to_string(src_bases.size()));
    }
    if (piece.rows <= 0 || piece.row_bytes <= 0) continue;
    if (base == nullptr || dst_base == nullptr) {
      HS_THROW(Error, "copy_pieces: piece " + std::to_string(i) + " has a null base");
    }
    const bool from_peer = piece.src_buffer >= 0 && static_cast<std::size_t>(piece.src_buffer) < remote.size() &&
                           remote[static_cast<std::size_t>(piece.src_buffer)];
    const bool contiguous =
        piece.rows == 1 || (piece.row_bytes == piece.src_stride && piece.row_bytes == piece.dst_stride);
    DevicePiece entry;
    entry.src = static_cast<const unsigned char*>(base) + piece.src_offset;
    entry.dst = static_cast<unsigned char*>(dst_base) + piece.dst_offset;
    entry.rows = contiguous ? 1 : piece.rows;
    entry.row_bytes = contiguous ? piece.bytes() : piece.row_bytes;
    entry.src_stride = contiguous ? entry.row_bytes : piece.src_stride;
    entry.dst_stride = contiguous ? entry.row_bytes : piece.dst_stride;
    if (routing.to_copy_engines(piece, from_peer)) {
      table.engine_copies.push_back(entry);
      table.engine_sources.push_back(piece.src_buffer);
      continue;
    }
    const std::uint64_t src_stride = entry.rows > 1 ? static_cast<std::uint64_t>(entry.src_stride) : 0;
    const std::uint64_t dst_stride = entry.rows > 1 ? static_cast<std::uint64_t>(entry.dst_stride) : 0;
    entry.vector_bytes =
        common_alignment({reinterpret_cast<std::uintptr_t>(entry.src), reinterpret_cast<std::uintptr_t>(entry.dst),
                          static_cast<std::uint64_t>(entry.row_bytes), src_stride, dst_stride});
    // Chunks hold a whole number of vectors: kCopyChunkBytes is a multiple of every vector width.
    const std::int64_t num_piece_chunks = (piece.bytes() + kCopyChunkBytes - 1) / kCopyChunkBytes;
    if (num_piece_chunks > std::numeric_limits<std::int32_t>::max() ||
        table.entries.size() >= static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max())) {
      HS_THROW(Error, "copy_pieces: piece " + std::to_string(i) + " of " + std::to_string(piece.bytes()) +
                          " bytes is beyond the kernel's chunk table");
    }
    const auto piece_index = static_cast<std::int32_t>(table.entries.size());
    for (std::int64_t chunk = 0; chunk < num_piece_chunks; ++chunk) {
      (from_peer ? remote_chunks : table.chunks).push_back({piece_index, static_cast<std::int32_t>(chunk)});
    }
    table.entries.push_back(entry);
    table.entry_sources.push_back(piece.src_buffer);
  }
  if (!remote_chunks.empty()) table.chunks = spread(std::move(remote_chunks), std::move(table.chunks));
  if (!table.engine_copies.empty()) table.max_blocks = routing.kernel_blocks_beside_engines;
  return table;
}

std::vector<std::int64_t> piece_table_shape_key(std::span<const Piece> pieces, std::span<void* const> src_bases,
                                                const void* message_base, const void* dst_base,
                                                const std::vector<bool>& remote) {
  // A base's alignment up to the widest vector: all the kernel's vector widths see of where the base is.
  const auto alignment = [](const void* base) {
    return static_cast<std::int64_t>(common_alignment({reinterpret_cast<std::uintptr_t>(base)}));
  };
  std::vector<std::int64_t> key;
  key.reserve(pieces.size() * 7 + src_bases.size() * 3 + 5);
  for (const Piece& piece : pieces) {
    key.insert(key.end(), {piece.src_buffer, piece.src_offset, piece.dst_offset, piece.rows, piece.row_bytes,
                           piece.src_stride, piece.dst_stride});
  }
  for (std::size_t b = 0; b < src_bases.size(); ++b) {
    // Null or not (a null base is refused by make_piece_table), aligned how, on which side of the link.
    key.insert(key.end(),
               {src_bases[b] == nullptr ? 0 : 1, alignment(src_bases[b]), b < remote.size() && remote[b] ? 1 : 0});
  }
  key.insert(key.end(), {message_base == nullptr ? 0 : 1, alignment(message_base), dst_base == nullptr ? 0 : 1,
                         alignment(dst_base), static_cast<std::int64_t>(src_bases.size())});
  return key;
}

void rebase_piece_table(PieceTable& table, std::span<void* const> from_src, const void* from_message,
                        const void* from_dst, std::span<void* const> to_src, const void* to_message, void* to_dst) {
  if (from_src.size() != to_src.size()) {
    HS_THROW(Error, "rebase_piece_table: " + std::to_string(from_src.size()) + " source bases moved to " +
                        std::to_string(to_src.size()));
  }
  const auto moved = [](const void* from, const void* to) {
    return static_cast<std::ptrdiff_t>(reinterpret_cast<std::uintptr_t>(to) - reinterpret_cast<std::uintptr_t>(from));
  };
  const std::ptrdiff_t dst_move = moved(from_dst, to_dst);
  const auto source_move = [&](std::int32_t source) {
    if (source == -1) return moved(from_message, to_message);
    const auto b = static_cast<std::size_t>(source);
    return moved(from_src[b], to_src[b]);
  };
  // Addresses move as integers: the bases are separate allocations.
  const auto shift = [](auto* pointer, std::ptrdiff_t move) {
    return reinterpret_cast<decltype(pointer)>(reinterpret_cast<std::uintptr_t>(pointer) +
                                               static_cast<std::uintptr_t>(move));
  };
  const auto rebase = [&](std::vector<DevicePiece>& pieces, const std::vector<std::int32_t>& sources) {
    for (std::size_t i = 0; i < pieces.size(); ++i) {
      pieces[i].src = shift(pieces[i].src, source_move(sources[i]));
      pieces[i].dst = shift(pieces[i].dst, dst_move);
    }
  };
  rebase(table.engine_copies, table.engine_sources);
  rebase(table.entries, table.entry_sources);
}

}  // namespace hybridshard::core::detail
