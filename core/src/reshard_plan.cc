#include "hybridshard/core/reshard_plan.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <utility>

#include "hybridshard/core/error.h"
#include "hybridshard/core/plan_classes.h"

namespace hybridshard::core {
namespace {

std::string num(std::int64_t value) { return std::to_string(value); }

// The sum and the largest of `of(item)` over `items` (0 when empty).
template <typename Items, typename Of>
std::int64_t sum_of(const Items& items, Of of) {
  std::int64_t total = 0;
  for (const auto& item : items) total += of(item);
  return total;
}

template <typename Items, typename Of>
std::int64_t most_of(const Items& items, Of of) {
  std::int64_t most = 0;
  for (const auto& item : items) most = std::max<std::int64_t>(most, of(item));
  return most;
}

// The tensors one train rank holds: its tensor-parallel and pipeline position and, for models with experts, its expert
// coordinates. Ranks with the same key hold identical buffers.
struct ShardKey {
  int tp_rank = 0;
  int pp_rank = 0;
  int etp_rank = 0;
  int ep_rank = 0;
  friend auto operator<=>(const ShardKey& a, const ShardKey& b) = default;
};

ShardKey key_of(const TrainLayout::Coord& coord) {
  return ShardKey{coord.tp_rank, coord.pp_rank, coord.etp_rank, coord.ep_rank};
}

// Where a receiver takes a rectangle from, relative to itself: the rank at (tp_rank, pp_rank) `dp_offset` data-
// parallel ranks after its own (cyclically). Offset 0 is the receiver's own replica; larger offsets reach the experts
// that other data-parallel ranks hold (expert parallelism).
struct Source {
  int tp_rank = 0;
  int pp_rank = 0;
  int dp_offset = 0;
  friend auto operator<=>(const Source& a, const Source& b) = default;
};

// One copy of a region in some train shard's buffers.
struct Holder {
  ShardKey at;
  int chunk = 0;   // vpp chunk = index of the train buffer
  int tensor = 0;  // index in that buffer's tensors
  std::int64_t local_row = 0;
  std::int64_t local_col = 0;
};

// A rectangle of a full tensor and every train copy of it. Train blocks of one full tensor are, across all ranks,
// either identical (replicated: norms, routers, tied embedding/output copies) or disjoint, so regions never overlap.
struct Region {
  std::int64_t hf_row = 0;
  std::int64_t hf_col = 0;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::vector<Holder> holders;
};

// A rectangle copied from a train buffer of `source` into the inference buffer, in byte terms.
struct Transfer {
  Source source;
  int src_chunk = 0;
  std::int64_t src_offset = 0;
  std::int64_t src_stride = 0;
  std::int64_t dst_offset = 0;
  std::int64_t dst_stride = 0;
  std::int64_t rows = 0;
  std::int64_t row_bytes = 0;
};

// Every distinct train shard (those of data-parallel ranks [0, expert_period) hold them all) and where each full
// tensor lives.
class TrainIndex {
 public:
  TrainIndex(const ModelSpec& spec, const TrainLayout& train) : train_(train) {
    const auto num_hf = spec.hf_tensors().size();
    regions_.resize(num_hf);
    const int period = train.expert_period();
    for (int p = 0; p < train.pp; ++p) {
      for (int d = 0; d < period; ++d) {
        for (int t = 0; t < train.tp; ++t) {
          const TrainLayout::Coord coord = train.coord(train.rank_of({t, d, p}));
          const ShardKey key = key_of(coord);
          if (buffers_.count(key) > 0) continue;
          const auto& buffers = buffers_.emplace(key, train_param_buffers(spec, train, coord)).first->second;
          for (std::size_t c = 0; c < buffers.size(); ++c) {
            for (std::size_t i = 0; i < buffers[c].tensors.size(); ++i) {
              for (const Block& block : buffers[c].tensors[i].blocks) {
                add(block, Holder{key, static_cast<int>(c), static_cast<int>(i), block.local_row, block.local_col});
              }
            }
          }
        }
      }
    }
    for (auto& regions : regions_) {
      std::sort(regions.begin(), regions.end(), [](const Region& a, const Region& b) {
        return std::tie(a.hf_row, a.hf_col) < std::tie(b.hf_row, b.hf_col);
      });
    }
  }

  const std::vector<BufferLayout>& buffers(const ShardKey& at) const { return buffers_.at(at); }
  const std::vector<Region>& regions(int hf_tensor) const { return regions_.at(static_cast<std::size_t>(hf_tensor)); }

 private:
  void add(const Block& block, const Holder& holder) {
    auto& regions = regions_.at(static_cast<std::size_t>(block.hf_tensor));
    for (Region& region : regions) {
      if (region.hf_row == block.hf_row && region.hf_col == block.hf_col && region.rows == block.rows &&
          region.cols == block.cols) {
        region.holders.push_back(holder);
        return;
      }
      const bool disjoint = block.hf_row + block.rows <= region.hf_row || region.hf_row + region.rows <= block.hf_row ||
                            block.hf_col + block.cols <= region.hf_col || region.hf_col + region.cols <= block.hf_col;
      HS_CHECK(disjoint, "train blocks of full tensor " + num(block.hf_tensor) + " overlap without being identical");
    }
    regions.push_back(Region{block.hf_row, block.hf_col, block.rows, block.cols, {holder}});
  }

  TrainLayout train_;
  std::map<ShardKey, std::vector<BufferLayout>> buffers_;
  std::vector<std::vector<Region>> regions_;
};

// The nearest data-parallel offset (cyclically after `self`) at which a rank holds the shard `at`.
int dp_offset_of(const TrainLayout& train, const TrainLayout::Coord& self, const ShardKey& at) {
  const int period = train.expert_period();
  for (int offset = 0; offset < period; ++offset) {
    const int dp_rank = (self.dp_rank + offset) % train.dp;
    if (key_of(train.coord(train.rank_of({at.tp_rank, dp_rank, at.pp_rank}))) == at) return offset;
  }
  HS_THROW(Error, "no train rank holds shard (tp " + num(at.tp_rank) + ", pp " + num(at.pp_rank) + ", etp " +
                      num(at.etp_rank) + ", ep " + num(at.ep_rank) + ")");
}

// The source of a region for the receiver at `self`: itself if it holds a copy; else a copy in its own data-parallel
// replica (offset 0), in its own tensor-parallel column, on the nearest stage (tied embeddings: first-stage embedding
// or last-stage output layer); experts other data-parallel ranks hold come from the nearest of them.
std::pair<const Holder*, Source> choose_holder(const TrainLayout& train, const Region& region,
                                               const TrainLayout::Coord& self) {
  const ShardKey own = key_of(self);
  const Holder* best = nullptr;
  Source best_source;
  auto key = [&](const Holder& h, int offset) {
    return std::make_tuple(!(h.at == own), offset, h.at.tp_rank != own.tp_rank, std::abs(h.at.pp_rank - own.pp_rank),
                           h.at.pp_rank, h.at.tp_rank, h.chunk);
  };
  for (const Holder& holder : region.holders) {
    const int offset = dp_offset_of(train, self, holder.at);
    if (best == nullptr || key(holder, offset) < key(*best, best_source.dp_offset)) {
      best = &holder;
      best_source = Source{holder.at.tp_rank, holder.at.pp_rank, offset};
    }
  }
  return {best, best_source};
}

// Everything the receiver at `self` with inference buffer `inference` needs, in destination order (tensor, block,
// region), with the chosen source of each rectangle.
std::vector<Transfer> plan_transfers(const TrainLayout& train, const TrainIndex& index, const BufferLayout& inference,
                                     const TrainLayout::Coord& self, std::int64_t element_bytes) {
  std::vector<Transfer> transfers;
  for (const LocalTensor& dst : inference.tensors) {
    for (const Block& block : dst.blocks) {
      for (const Region& region : index.regions(block.hf_tensor)) {
        const std::int64_t row0 = std::max(block.hf_row, region.hf_row);
        const std::int64_t row1 = std::min(block.hf_row + block.rows, region.hf_row + region.rows);
        const std::int64_t col0 = std::max(block.hf_col, region.hf_col);
        const std::int64_t col1 = std::min(block.hf_col + block.cols, region.hf_col + region.cols);
        if (row0 >= row1 || col0 >= col1) continue;
        const auto [holder, source] = choose_holder(train, region, self);
        const LocalTensor& src = index.buffers(holder->at)[static_cast<std::size_t>(holder->chunk)]
                                     .tensors[static_cast<std::size_t>(holder->tensor)];
        const std::int64_t src_row = holder->local_row + (row0 - region.hf_row);
        const std::int64_t src_col = holder->local_col + (col0 - region.hf_col);
        const std::int64_t dst_row = block.local_row + (row0 - block.hf_row);
        const std::int64_t dst_col = block.local_col + (col0 - block.hf_col);
        Transfer transfer;
        transfer.source = source;
        transfer.src_chunk = holder->chunk;
        transfer.src_stride = src.cols * element_bytes;
        transfer.src_offset = src.offset_bytes + (src_row * src.cols + src_col) * element_bytes;
        transfer.dst_stride = dst.cols * element_bytes;
        transfer.dst_offset = dst.offset_bytes + (dst_row * dst.cols + dst_col) * element_bytes;
        transfer.rows = row1 - row0;
        transfer.row_bytes = (col1 - col0) * element_bytes;
        transfers.push_back(transfer);
      }
    }
  }
  return transfers;
}

// The transfers of every receiver, computed once per class: receivers at the same (tp, pp, dp mod expert period,
// inference tp) position need the same relative sources.
class TransferTable {
 public:
  TransferTable(const ModelSpec& spec, const TrainLayout& train, const InferenceLayout& inference,
                std::int64_t element_bytes)
      : spec_(spec), train_(train), inference_(inference), index_(spec, train), element_bytes_(element_bytes) {}

  const TrainIndex& index() const { return index_; }

  const std::vector<Transfer>& transfers_of(int receiver) { return entry(receiver).transfers; }
  const std::set<Source>& sources_of(int receiver) { return entry(receiver).sources; }

  const BufferLayout& inference_buffer(int inference_tp) {
    auto found = inference_buffers_.find(inference_tp);
    if (found == inference_buffers_.end()) {
      found = inference_buffers_.emplace(inference_tp, inference_param_buffer(spec_, inference_, inference_tp)).first;
    }
    return found->second;
  }

  // The rank `source` names for `receiver`.
  int source_rank(int receiver, const Source& source) const {
    const TrainLayout::Coord coord = train_.coord(receiver);
    return train_.rank_of({source.tp_rank, (coord.dp_rank + source.dp_offset) % train_.dp, source.pp_rank});
  }

 private:
  struct Entry {
    std::vector<Transfer> transfers;
    std::set<Source> sources;
  };

  const Entry& entry(int receiver) {
    const TrainLayout::Coord coord = train_.coord(receiver);
    const int inference_tp = inference_.coord(receiver).tp_rank;
    const auto key =
        std::make_tuple(coord.tp_rank, coord.pp_rank, coord.dp_rank % train_.expert_period(), inference_tp);
    auto found = cache_.find(key);
    if (found == cache_.end()) {
      Entry made;
      made.transfers = plan_transfers(train_, index_, inference_buffer(inference_tp), coord, element_bytes_);
      for (const Transfer& transfer : made.transfers) made.sources.insert(transfer.source);
      found = cache_.emplace(key, std::move(made)).first;
    }
    return found->second;
  }

  const ModelSpec& spec_;
  const TrainLayout& train_;
  const InferenceLayout& inference_;
  TrainIndex index_;
  std::int64_t element_bytes_;
  std::map<std::tuple<int, int, int, int>, Entry> cache_;
  std::map<int, BufferLayout> inference_buffers_;
};

// A piece whose rows are back to back on both sides becomes one row.
Piece normalized(Piece piece) {
  if (piece.rows > 1 && piece.row_bytes == piece.src_stride && piece.row_bytes == piece.dst_stride) {
    piece.row_bytes *= piece.rows;
    piece.rows = 1;
  }
  if (piece.rows == 1) piece.src_stride = piece.dst_stride = piece.row_bytes;
  return piece;
}

// Appends `piece`, merging it into the last one when it continues it on both sides.
void append_piece(std::vector<Piece>& pieces, Piece piece) {
  piece = normalized(piece);
  if (piece.bytes() == 0) return;
  if (!pieces.empty()) {
    Piece& last = pieces.back();
    if (last.src_buffer == piece.src_buffer) {
      if (last.rows == 1 && piece.rows == 1 && last.src_offset + last.row_bytes == piece.src_offset &&
          last.dst_offset + last.row_bytes == piece.dst_offset) {
        last.row_bytes += piece.row_bytes;
        last.src_stride = last.dst_stride = last.row_bytes;
        return;
      }
      if (last.row_bytes == piece.row_bytes && last.src_stride == piece.src_stride &&
          last.dst_stride == piece.dst_stride && last.src_offset + last.rows * last.src_stride == piece.src_offset &&
          last.dst_offset + last.rows * last.dst_stride == piece.dst_offset) {
        last.rows += piece.rows;
        last = normalized(last);
        return;
      }
    }
  }
  pieces.push_back(piece);
}

// Takes `next` into `last` as further rows of one 2-D piece when it continues it: the same source buffer and row width,
// and next's rows where last's continue at one pair of strides (last's own when it has several rows, next's when it
// has, else the distances between the two), each stride at least a row wide (rows never overlap, and a copy engine's
// 2-D pitch is at least its width). So the halves of adjacent experts (vLLM's w13 rows of expert e, e + 1, ... read
// from Megatron's per-expert [gate; up]), or a gate half and its up half, become one piece instead of one each.
bool take_rows(Piece& last, const Piece& next) {
  if (last.src_buffer != next.src_buffer || last.row_bytes != next.row_bytes) return false;
  std::int64_t src_stride = next.src_offset - last.src_offset;
  std::int64_t dst_stride = next.dst_offset - last.dst_offset;
  if (last.rows > 1) {
    src_stride = last.src_stride;
    dst_stride = last.dst_stride;
  } else if (next.rows > 1) {
    src_stride = next.src_stride;
    dst_stride = next.dst_stride;
  }
  if (next.rows > 1 && (next.src_stride != src_stride || next.dst_stride != dst_stride)) return false;
  if (src_stride < last.row_bytes || dst_stride < last.row_bytes) return false;
  if (next.src_offset != last.src_offset + last.rows * src_stride ||
      next.dst_offset != last.dst_offset + last.rows * dst_stride) {
    return false;
  }
  last.rows += next.rows;
  last.src_stride = src_stride;
  last.dst_stride = dst_stride;
  last = normalized(last);
  return true;
}

// `pieces` with every run of pieces that take_rows joins as one piece (the same bytes, the same order).
void coalesce_pieces(std::vector<Piece>& pieces) {
  std::vector<Piece> joined;
  joined.reserve(pieces.size());
  for (const Piece& piece : pieces) {
    if (joined.empty() || !take_rows(joined.back(), piece)) joined.push_back(piece);
  }
  pieces = std::move(joined);
}

// Rows [first_row, first_row + rows) of a transfer.
struct TransferPart {
  const Transfer* transfer = nullptr;
  std::int64_t first_row = 0;
  std::int64_t rows = 0;
};

// Cuts the transfers of one (source, destination) pair into chunks of at most `chunk_bytes`, splitting by rows; a
// single row larger than a chunk travels alone.
std::vector<std::vector<TransferPart>> cut_into_chunks(const std::vector<const Transfer*>& transfers,
                                                       std::int64_t chunk_bytes) {
  std::vector<std::vector<TransferPart>> chunks;
  std::vector<TransferPart> current;
  std::int64_t current_bytes = 0;
  const auto close = [&] {
    if (!current.empty()) chunks.push_back(std::move(current));
    current.clear();
    current_bytes = 0;
  };
  for (const Transfer* transfer : transfers) {
    std::int64_t row = 0;
    while (row < transfer->rows) {
      std::int64_t fit = (chunk_bytes - current_bytes) / transfer->row_bytes;
      if (fit <= 0) {
        if (current_bytes > 0) {
          close();
          continue;
        }
        fit = 1;
      }
      const std::int64_t take = std::min(fit, transfer->rows - row);
      current.push_back(TransferPart{transfer, row, take});
      current_bytes += take * transfer->row_bytes;
      row += take;
      if (current_bytes >= chunk_bytes) close();
    }
  }
  close();
  return chunks;
}

// One part's bytes on one side of the pair: back to back in one buffer (`contiguous`) from `begin` to `end`.
struct Run {
  bool contiguous = false;
  int buffer = -1;
  std::int64_t begin = 0;
  std::int64_t end = 0;
};

Run source_run(const TransferPart& part) {
  const Transfer& t = *part.transfer;
  const std::int64_t begin = t.src_offset + part.first_row * t.src_stride;
  return {part.rows == 1 || t.row_bytes == t.src_stride, t.src_chunk, begin, begin + part.rows * t.row_bytes};
}

Run destination_run(const TransferPart& part) {
  const Transfer& t = *part.transfer;
  const std::int64_t begin = t.dst_offset + part.first_row * t.dst_stride;
  return {part.rows == 1 || t.row_bytes == t.dst_stride, -1, begin, begin + part.rows * t.row_bytes};
}

// `run` followed by `next`, as one run (contiguous only when both are and `next` starts where `run` ends).
Run joined(const Run& run, const Run& next) {
  return {run.contiguous && next.contiguous && run.buffer == next.buffer && run.end == next.begin, run.buffer,
          run.begin, next.end};
}

// Cuts one chunk's parts into wires: [first, last) ranges of consecutive parts. A part joins the current wire unless
// that would lose a contiguous run of at least `direct_min_bytes` on either side (the wire's so far or the part's),
// which then gets a wire of its own: sent straight from the train buffer or received in place. Smaller contiguous
// runs are not worth a message of their own (a send/receive costs more than copying them through a bucket) and join
// their neighbours. Both sides of a pair see the same parts, so they cut the same wires.
std::vector<std::pair<std::size_t, std::size_t>> cut_into_wires(const std::vector<TransferPart>& parts,
                                                                std::int64_t direct_min_bytes) {
  std::vector<std::pair<std::size_t, std::size_t>> wires;
  Run src;
  Run dst;
  std::int64_t bytes = 0;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const Run part_src = source_run(parts[i]);
    const Run part_dst = destination_run(parts[i]);
    const std::int64_t part_bytes = parts[i].rows * parts[i].transfer->row_bytes;
    if (!wires.empty()) {
      const Run both_src = joined(src, part_src);
      const Run both_dst = joined(dst, part_dst);
      const auto lost = [&](const Run& run, const Run& both, std::int64_t run_bytes) {
        return run.contiguous && !both.contiguous && run_bytes >= direct_min_bytes;
      };
      if (!lost(src, both_src, bytes) && !lost(dst, both_dst, bytes) && !lost(part_src, both_src, part_bytes) &&
          !lost(part_dst, both_dst, part_bytes)) {
        wires.back().second = i + 1;
        src = both_src;
        dst = both_dst;
        bytes += part_bytes;
        continue;
      }
    }
    wires.emplace_back(i, i + 1);
    src = part_src;
    dst = part_dst;
    bytes = part_bytes;
  }
  return wires;
}

// One round's share of a pair's transfers: its wires, each a list of parts.
using Chunk = std::vector<std::vector<TransferPart>>;

// Cuts the transfers of one (source, destination) pair into wires (cut_into_wires over whole transfers) and the
// wires into chunks, one per round: a chunk takes wires while the bytes they stage on either side (the sender's
// packed wires, the receiver's bucketed ones) stay within `chunk_bytes`; wires direct on both sides stage nothing
// and go with the chunk at hand. A wire that stages more than a chunk is cut by rows (cut_into_chunks) into wires of
// their own, one chunk each (the last one shares its chunk with the wires after it).
std::vector<Chunk> cut_into_rounds(const std::vector<const Transfer*>& transfers, std::int64_t chunk_bytes,
                                   std::int64_t direct_min_bytes) {
  std::vector<TransferPart> whole;
  for (const Transfer* transfer : transfers) whole.push_back(TransferPart{transfer, 0, transfer->rows});
  std::vector<Chunk> chunks;
  Chunk current;
  std::int64_t send_staged = 0;
  std::int64_t recv_staged = 0;
  const auto close = [&] {
    if (!current.empty()) chunks.push_back(std::move(current));
    current.clear();
    send_staged = recv_staged = 0;
  };
  for (const auto& [first, last] : cut_into_wires(whole, direct_min_bytes)) {
    Run src = source_run(whole[first]);
    Run dst = destination_run(whole[first]);
    std::int64_t bytes = 0;
    for (std::size_t i = first; i < last; ++i) {
      if (i > first) {
        src = joined(src, source_run(whole[i]));
        dst = joined(dst, destination_run(whole[i]));
      }
      bytes += whole[i].rows * whole[i].transfer->row_bytes;
    }
    const std::int64_t wire_send = src.contiguous ? 0 : bytes;
    const std::int64_t wire_recv = dst.contiguous ? 0 : bytes;
    if (send_staged + wire_send > chunk_bytes || recv_staged + wire_recv > chunk_bytes) close();
    if (wire_send <= chunk_bytes && wire_recv <= chunk_bytes) {
      current.emplace_back(whole.begin() + static_cast<std::ptrdiff_t>(first),
                           whole.begin() + static_cast<std::ptrdiff_t>(last));
      send_staged += wire_send;
      recv_staged += wire_recv;
      continue;
    }
    std::vector<const Transfer*> wire_transfers;
    for (std::size_t i = first; i < last; ++i) wire_transfers.push_back(whole[i].transfer);
    std::vector<std::vector<TransferPart>> parts = cut_into_chunks(wire_transfers, chunk_bytes);
    for (std::size_t i = 0; i < parts.size(); ++i) {
      std::int64_t part_bytes = 0;
      for (const TransferPart& part : parts[i]) part_bytes += part.rows * part.transfer->row_bytes;
      current.push_back(std::move(parts[i]));
      if (i + 1 < parts.size()) {
        close();
      } else {  // the last part leaves room for the wires after it
        send_staged = wire_send > 0 ? part_bytes : 0;
        recv_staged = wire_recv > 0 ? part_bytes : 0;
      }
    }
  }
  close();
  return chunks;
}

// The piece of `part` as the sender (train buffer -> message at `offset`) or the receiver (message at `offset` ->
// inference) sees it.
Piece side_piece(const TransferPart& part, std::int64_t offset, bool sending) {
  const Transfer& t = *part.transfer;
  Piece piece;
  piece.rows = part.rows;
  piece.row_bytes = t.row_bytes;
  if (sending) {
    piece.src_buffer = t.src_chunk;
    piece.src_offset = t.src_offset + part.first_row * t.src_stride;
    piece.src_stride = t.src_stride;
    piece.dst_offset = offset;
    piece.dst_stride = t.row_bytes;
  } else {
    piece.src_buffer = -1;
    piece.src_offset = offset;
    piece.src_stride = t.row_bytes;
    piece.dst_offset = t.dst_offset + part.first_row * t.dst_stride;
    piece.dst_stride = t.dst_stride;
  }
  return piece;
}

// The message of one chunk, as the sender or the receiver sees it, with its wires.
Message make_message(int peer, const Chunk& chunk, bool sending) {
  Message message;
  message.peer = peer;
  for (const std::vector<TransferPart>& parts : chunk) {
    Wire& wire = message.wires.emplace_back();
    for (const TransferPart& part : parts) {
      append_piece(message.pieces, side_piece(part, message.bytes + wire.bytes, sending));
      append_piece(wire.pieces, side_piece(part, wire.bytes, sending));
      wire.bytes += part.rows * part.transfer->row_bytes;
    }
    message.bytes += wire.bytes;
  }
  return message;
}

// Inference-buffer bytes that no block covers: alignment gaps between tensors and vocabulary padding rows.
std::vector<ByteRange> uncovered_ranges(const BufferLayout& buffer) {
  std::vector<ByteRange> ranges;
  const auto add = [&ranges](std::int64_t offset, std::int64_t bytes) {
    if (bytes <= 0) return;
    if (!ranges.empty() && ranges.back().offset + ranges.back().bytes == offset) {
      ranges.back().bytes += bytes;
    } else {
      ranges.push_back(ByteRange{offset, bytes});
    }
  };
  const auto element_bytes = static_cast<std::int64_t>(dtype_size(buffer.dtype));
  std::int64_t end = 0;
  for (const LocalTensor& tensor : buffer.tensors) {
    add(end, tensor.offset_bytes - end);
    std::vector<std::pair<std::int64_t, std::int64_t>> rows;  // covered [first, last)
    std::int64_t covered = 0;
    for (const Block& block : tensor.blocks) {
      covered += block.rows * block.cols;
      rows.emplace_back(block.local_row, block.local_row + block.rows);
    }
    if (covered < tensor.numel()) {
      for (const Block& block : tensor.blocks) {
        HS_CHECK(
            block.local_col == 0 && block.cols == tensor.cols,
            "tensor " + tensor.name + " has uncovered elements inside a row; only whole padding rows are supported");
      }
      std::sort(rows.begin(), rows.end());
      std::int64_t row = 0;
      for (const auto& [first, last] : rows) {
        add(tensor.offset_bytes + row * tensor.cols * element_bytes, (first - row) * tensor.cols * element_bytes);
        row = std::max(row, last);
      }
      add(tensor.offset_bytes + row * tensor.cols * element_bytes, (tensor.rows - row) * tensor.cols * element_bytes);
    }
    end = tensor.offset_bytes + tensor.numel() * element_bytes;
  }
  add(end, buffer.bytes - end);
  return ranges;
}

// The distinct peers `rank` receives from and sends to.
std::pair<int, int> peer_counts(const TrainLayout& train, TransferTable& table, int rank) {
  std::set<int> sources;
  for (const Source& relative : table.sources_of(rank)) {
    const int source = table.source_rank(rank, relative);
    if (source != rank) sources.insert(source);
  }
  std::set<int> receivers;
  const TrainLayout::Coord coord = train.coord(rank);
  for (int offset = 0; offset < train.expert_period(); ++offset) {
    const int dp_rank = (coord.dp_rank - offset + train.dp) % train.dp;
    for (int p = 0; p < train.pp; ++p) {
      for (int t = 0; t < train.tp; ++t) {
        const int peer = train.rank_of({t, dp_rank, p});
        if (peer == rank || receivers.count(peer) > 0) continue;
        for (const Source& relative : table.sources_of(peer)) {
          if (table.source_rank(peer, relative) == rank) {
            receivers.insert(peer);
            break;
          }
        }
      }
    }
  }
  return {static_cast<int>(sources.size()), static_cast<int>(receivers.size())};
}

// The largest number of distinct peers any rank sends to or receives from, from the ranks of the data-parallel
// positions representative_replicas() lists: every other rank has the same counts as one of them.
int max_peers(const TrainLayout& train, const InferenceLayout& inference, TransferTable& table) {
  int most = 1;
  for (const int dp_rank : representative_replicas(train, inference)) {
    for (int p = 0; p < train.pp; ++p) {
      for (int t = 0; t < train.tp; ++t) {
        const auto [receives, sends] = peer_counts(train, table, train.rank_of({t, dp_rank, p}));
        most = std::max({most, receives, sends});
      }
    }
  }
  return most;
}

}  // namespace

bool Wire::direct() const { return pieces.size() == 1 && pieces.front().rows == 1; }

std::int64_t Round::send_bytes() const {
  return sum_of(sends, [](const Message& message) { return message.bytes; });
}

std::int64_t Round::recv_bytes() const {
  return sum_of(recvs, [](const Message& message) { return message.bytes; });
}

std::int64_t PeerPieces::bytes() const {
  return sum_of(pieces, [](const Piece& piece) { return piece.bytes(); });
}

std::int64_t RankPlan::bytes_local() const {
  return sum_of(local_pieces, [](const Piece& piece) { return piece.bytes(); });
}

std::int64_t RankPlan::bytes_sent() const {
  return sum_of(rounds, [](const Round& round) { return round.send_bytes(); });
}

std::int64_t RankPlan::bytes_received() const {
  return sum_of(rounds, [](const Round& round) { return round.recv_bytes(); });
}

std::int64_t RankPlan::max_round_send_bytes() const {
  return most_of(rounds, [](const Round& round) { return round.send_bytes(); });
}

std::int64_t RankPlan::max_round_recv_bytes() const {
  return most_of(rounds, [](const Round& round) { return round.recv_bytes(); });
}

std::int64_t Wire::staged_bytes() const { return direct() ? 0 : bytes; }

std::int64_t Message::staged_bytes() const {
  return sum_of(wires, [](const Wire& wire) { return wire.staged_bytes(); });
}

std::int64_t Round::staging_bytes() const {
  const auto staged = [](const Message& message) { return message.staged_bytes(); };
  return sum_of(sends, staged) + sum_of(recvs, staged);
}

std::int64_t RankPlan::bytes_packed() const {
  return sum_of(rounds, [](const Round& round) {
    return sum_of(round.sends, [](const Message& message) { return message.staged_bytes(); });
  });
}

std::int64_t RankPlan::bytes_landed_from_buckets() const {
  return sum_of(rounds, [](const Round& round) {
    return sum_of(round.recvs, [](const Message& message) { return message.staged_bytes(); });
  });
}

std::int64_t RankPlan::max_round_staging_bytes() const {
  return most_of(rounds, [](const Round& round) { return round.staging_bytes(); });
}

int RankPlan::staging_buckets() const {
  const std::int64_t staged = sum_of(rounds, [](const Round& round) { return round.staging_bytes() > 0 ? 1 : 0; });
  return static_cast<int>(std::min<std::int64_t>(staged, 2));
}

std::int64_t RankPlan::staging_bytes() const { return staging_buckets() * max_round_staging_bytes(); }

std::int64_t RankPlan::peak_extra_bytes() const { return inference_buffer.bytes + staging_bytes(); }

// What every rank's plan shares.
struct ReshardPlanner::State {
  ModelSpec spec;
  TrainLayout train;
  InferenceLayout inference;
  std::unique_ptr<TransferTable> table_of_transfers;
  std::int64_t chunk_bytes = 0;
  std::int64_t direct_min_bytes = 0;
  bool coalesce_rows = true;

  RankPlan plan(int rank);
};

ReshardPlanner::ReshardPlanner(const ModelSpec& spec, const TrainLayout& train, const InferenceLayout& inference,
                               const PlanOptions& options)
    : state_(std::make_unique<State>()) {
  std::vector<std::string> problems = problem_messages(spec.validate());
  for (auto& problem : train.validate(spec)) problems.push_back(std::move(problem.message));
  for (auto& problem : inference.validate(spec)) problems.push_back(std::move(problem.message));
  if (problems.empty() && train.world_size() != inference.world_size) {
    problems.push_back("the train world size (tp * dp * pp = " + num(train.world_size()) +
                       ") differs from the rollout world size " + num(inference.world_size));
  }
  if (options.bucket_bytes <= 0) problems.push_back("bucket_bytes must be positive, got " + num(options.bucket_bytes));
  if (options.direct_min_bytes < 0) {
    problems.push_back("direct_min_bytes cannot be negative, got " + num(options.direct_min_bytes));
  }
  if (!problems.empty()) {
    std::string message = "cannot plan the reshard:";
    for (const std::string& problem : problems) message += "\n  - " + problem;
    HS_THROW(ConfigError, message);
  }

  state_->spec = spec;
  state_->train = train;
  state_->inference = inference;
  const auto element_bytes = static_cast<std::int64_t>(dtype_size(spec.dtype));
  state_->table_of_transfers =
      std::make_unique<TransferTable>(state_->spec, state_->train, state_->inference, element_bytes);
  // A round's staging (its packed sends and bucketed receives, at most one chunk per peer each way) fits one bucket.
  state_->chunk_bytes =
      std::max<std::int64_t>(1, options.bucket_bytes / (2 * max_peers(train, inference, *state_->table_of_transfers)));
  state_->direct_min_bytes = options.direct_min_bytes;
  state_->coalesce_rows = options.coalesce_rows;
}

ReshardPlanner::~ReshardPlanner() = default;

std::int64_t ReshardPlanner::chunk_bytes() const { return state_->chunk_bytes; }

RankPlan ReshardPlanner::plan(int rank) { return state_->plan(rank); }

RankPlan ReshardPlanner::State::plan(int rank) {
  if (rank < 0 || rank >= train.world_size()) {
    HS_THROW(ConfigError,
             "cannot plan the reshard:\n  - rank " + num(rank) + " is outside [0, " + num(train.world_size()) + ")");
  }
  TransferTable& table = *table_of_transfers;
  const TrainLayout::Coord coord = train.coord(rank);

  RankPlan plan;
  plan.rank = rank;
  plan.spec = spec;
  plan.train = train;
  plan.inference = inference;
  plan.train_buffers = table.index().buffers(key_of(coord));
  plan.inference_buffer = table.inference_buffer(inference.coord(rank).tp_rank);
  plan.zero_fill = uncovered_ranges(plan.inference_buffer);
  plan.chunk_bytes = chunk_bytes;

  // Receives and local copies: what this rank needs, by source.
  const std::vector<Transfer>& needed = table.transfers_of(rank);
  std::map<int, std::vector<const Transfer*>> from_peer;
  for (const Transfer& transfer : needed) {
    const int source = table.source_rank(rank, transfer.source);
    if (source == rank) {
      Piece piece;
      piece.src_buffer = transfer.src_chunk;
      piece.src_offset = transfer.src_offset;
      piece.dst_offset = transfer.dst_offset;
      piece.rows = transfer.rows;
      piece.row_bytes = transfer.row_bytes;
      piece.src_stride = transfer.src_stride;
      piece.dst_stride = transfer.dst_stride;
      append_piece(plan.local_pieces, piece);
    } else {
      from_peer[source].push_back(&transfer);
    }
  }

  // Sends: what every other rank needs from this one, computed as that rank does. Only receivers whose data-parallel
  // rank lies within one expert period before this rank's can name it as a source.
  std::map<int, std::vector<const Transfer*>> to_peer;
  for (int offset = 0; offset < train.expert_period(); ++offset) {
    const int dp_rank = (coord.dp_rank - offset + train.dp) % train.dp;
    for (int p = 0; p < train.pp; ++p) {
      for (int t = 0; t < train.tp; ++t) {
        const int peer = train.rank_of({t, dp_rank, p});
        if (peer == rank) continue;
        for (const Transfer& transfer : table.transfers_of(peer)) {
          if (table.source_rank(peer, transfer.source) == rank) to_peer[peer].push_back(&transfer);
        }
      }
    }
  }

  const auto place = [&plan](std::size_t round_index) -> Round& {
    if (plan.rounds.size() <= round_index) plan.rounds.resize(round_index + 1);
    return plan.rounds[round_index];
  };
  // std::map iterates peers in ascending order, so every round's messages are sorted by peer.
  for (const auto& [peer, transfers] : to_peer) {
    const auto chunks = cut_into_rounds(transfers, plan.chunk_bytes, direct_min_bytes);
    for (std::size_t k = 0; k < chunks.size(); ++k) place(k).sends.push_back(make_message(peer, chunks[k], true));
  }
  for (const auto& [peer, transfers] : from_peer) {
    PeerPieces& reads = plan.peer_reads.emplace_back();
    reads.peer = peer;
    for (const Transfer* transfer : transfers) {
      append_piece(reads.pieces, Piece{transfer->src_chunk, transfer->src_offset, transfer->dst_offset, transfer->rows,
                                       transfer->row_bytes, transfer->src_stride, transfer->dst_stride});
    }
    const auto chunks = cut_into_rounds(transfers, plan.chunk_bytes, direct_min_bytes);
    for (std::size_t k = 0; k < chunks.size(); ++k) place(k).recvs.push_back(make_message(peer, chunks[k], false));
  }
  if (coalesce_rows) {
    coalesce_pieces(plan.local_pieces);
    for (PeerPieces& reads : plan.peer_reads) coalesce_pieces(reads.pieces);
    for (Round& round : plan.rounds) {
      for (std::vector<Message>* messages : {&round.sends, &round.recvs}) {
        for (Message& message : *messages) {
          coalesce_pieces(message.pieces);
          for (Wire& wire : message.wires) coalesce_pieces(wire.pieces);
        }
      }
    }
  }
  return plan;
}

RankPlan make_rank_plan(const ModelSpec& spec, const TrainLayout& train, const InferenceLayout& inference, int rank,
                        const PlanOptions& options) {
  return ReshardPlanner(spec, train, inference, options).plan(rank);
}

}  // namespace hybridshard::core
