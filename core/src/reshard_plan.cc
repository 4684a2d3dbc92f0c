#include "hybridshard/core/reshard_plan.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <utility>

#include "hybridshard/core/error.h"

namespace hybridshard::core {
namespace {

std::string num(std::int64_t value) { return std::to_string(value); }

// A train rank position inside one data-parallel replica.
struct StageColumn {
  int tp_rank = 0;
  int pp_rank = 0;
  friend bool operator<(const StageColumn& a, const StageColumn& b) {
    return std::tie(a.pp_rank, a.tp_rank) < std::tie(b.pp_rank, b.tp_rank);
  }
  friend bool operator==(const StageColumn& a, const StageColumn& b) = default;
};

// One copy of a region in some train rank's buffers.
struct Holder {
  StageColumn at;
  int chunk = 0;   // vpp chunk = index of the train buffer
  int tensor = 0;  // index in that buffer's tensors
  std::int64_t local_row = 0;
  std::int64_t local_col = 0;
};

// A rectangle of a full tensor and every train copy of it. Train blocks of one full tensor are, across all ranks,
// either identical (replicated: norms, tied embedding/output copies) or disjoint, so regions never overlap.
struct Region {
  std::int64_t hf_row = 0;
  std::int64_t hf_col = 0;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::vector<Holder> holders;
};

// A rectangle copied from a train buffer of `source` into the inference buffer, in byte terms.
struct Transfer {
  StageColumn source;
  int src_chunk = 0;
  std::int64_t src_offset = 0;
  std::int64_t src_stride = 0;
  std::int64_t dst_offset = 0;
  std::int64_t dst_stride = 0;
  std::int64_t rows = 0;
  std::int64_t row_bytes = 0;
};

// All train parameter buffers of one replica (identical for every dp rank) and where each full tensor lives.
class TrainIndex {
 public:
  TrainIndex(const ModelSpec& spec, const TrainLayout& train) : train_(train) {
    const auto num_hf = spec.hf_tensors().size();
    regions_.resize(num_hf);
    buffers_.resize(static_cast<std::size_t>(train.tp * train.pp));
    for (int p = 0; p < train.pp; ++p) {
      for (int t = 0; t < train.tp; ++t) {
        auto& buffers = buffers_[position({t, p})];
        buffers = train_param_buffers(spec, train, t, p);
        for (std::size_t c = 0; c < buffers.size(); ++c) {
          for (std::size_t i = 0; i < buffers[c].tensors.size(); ++i) {
            for (const Block& block : buffers[c].tensors[i].blocks) {
              add(block, Holder{{t, p}, static_cast<int>(c), static_cast<int>(i), block.local_row, block.local_col});
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

  const std::vector<BufferLayout>& buffers(StageColumn at) const { return buffers_[position(at)]; }
  const std::vector<Region>& regions(int hf_tensor) const { return regions_.at(static_cast<std::size_t>(hf_tensor)); }

 private:
  std::size_t position(StageColumn at) const { return static_cast<std::size_t>(at.pp_rank * train_.tp + at.tp_rank); }

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
  std::vector<std::vector<BufferLayout>> buffers_;
  std::vector<std::vector<Region>> regions_;
};

// The source of a region for a receiver at `self`: itself if it holds a copy; else the copy in its own tensor-parallel
// column; else the copy on the nearest stage (tied embeddings: first-stage embedding or last-stage output layer).
const Holder& choose_holder(const Region& region, StageColumn self) {
  const Holder* best = nullptr;
  auto key = [self](const Holder& h) {
    return std::make_tuple(!(h.at == self), h.at.tp_rank != self.tp_rank, std::abs(h.at.pp_rank - self.pp_rank),
                           h.at.pp_rank, h.at.tp_rank, h.chunk);
  };
  for (const Holder& holder : region.holders) {
    if (best == nullptr || key(holder) < key(*best)) best = &holder;
  }
  return *best;
}

// Everything the inference rank at `self` (train position) with inference buffer `inference` needs, in destination
// order (tensor, block, region), with the chosen source of each rectangle.
std::vector<Transfer> plan_transfers(const TrainIndex& index, const BufferLayout& inference, StageColumn self,
                                     std::int64_t element_bytes) {
  std::vector<Transfer> transfers;
  for (const LocalTensor& dst : inference.tensors) {
    for (const Block& block : dst.blocks) {
      for (const Region& region : index.regions(block.hf_tensor)) {
        const std::int64_t row0 = std::max(block.hf_row, region.hf_row);
        const std::int64_t row1 = std::min(block.hf_row + block.rows, region.hf_row + region.rows);
        const std::int64_t col0 = std::max(block.hf_col, region.hf_col);
        const std::int64_t col1 = std::min(block.hf_col + block.cols, region.hf_col + region.cols);
        if (row0 >= row1 || col0 >= col1) continue;
        const Holder& holder = choose_holder(region, self);
        const LocalTensor& src = index.buffers(holder.at)[static_cast<std::size_t>(holder.chunk)]
                                     .tensors[static_cast<std::size_t>(holder.tensor)];
        const std::int64_t src_row = holder.local_row + (row0 - region.hf_row);
        const std::int64_t src_col = holder.local_col + (col0 - region.hf_col);
        const std::int64_t dst_row = block.local_row + (row0 - block.hf_row);
        const std::int64_t dst_col = block.local_col + (col0 - block.hf_col);
        Transfer transfer;
        transfer.source = holder.at;
        transfer.src_chunk = holder.chunk;
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

// The message of one chunk, as the sender (train buffer -> message) or the receiver (message -> inference) sees it.
Message make_message(int peer, const std::vector<TransferPart>& parts, bool sending) {
  Message message;
  message.peer = peer;
  for (const TransferPart& part : parts) {
    const Transfer& t = *part.transfer;
    Piece piece;
    piece.rows = part.rows;
    piece.row_bytes = t.row_bytes;
    if (sending) {
      piece.src_buffer = t.src_chunk;
      piece.src_offset = t.src_offset + part.first_row * t.src_stride;
      piece.src_stride = t.src_stride;
      piece.dst_offset = message.bytes;
      piece.dst_stride = t.row_bytes;
    } else {
      piece.src_buffer = -1;
      piece.src_offset = message.bytes;
      piece.src_stride = t.row_bytes;
      piece.dst_offset = t.dst_offset + part.first_row * t.dst_stride;
      piece.dst_stride = t.dst_stride;
    }
    append_piece(message.pieces, piece);
    message.bytes += part.rows * t.row_bytes;
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

// The largest number of distinct peers any rank sends to or receives from. Receivers with the same (train tp, train
// pp, inference tp) position need the same stage columns, so their sources are computed once.
int max_peers(const ModelSpec& spec, const TrainLayout& train, const InferenceLayout& inference,
              const TrainIndex& index) {
  std::map<std::tuple<int, int, int>, std::vector<StageColumn>> sources_of_class;
  std::map<int, BufferLayout> inference_buffers;
  std::vector<int> send_peers(static_cast<std::size_t>(train.world_size()), 0);
  int most = 0;
  for (int rank = 0; rank < train.world_size(); ++rank) {
    const TrainLayout::Coord coord = train.coord(rank);
    const StageColumn self{coord.tp_rank, coord.pp_rank};
    const int inference_tp = inference.coord(rank).tp_rank;
    const auto key = std::make_tuple(coord.tp_rank, coord.pp_rank, inference_tp);
    auto found = sources_of_class.find(key);
    if (found == sources_of_class.end()) {
      auto buffer = inference_buffers.find(inference_tp);
      if (buffer == inference_buffers.end()) {
        buffer = inference_buffers.emplace(inference_tp, inference_param_buffer(spec, inference, inference_tp)).first;
      }
      std::set<StageColumn> sources;
      for (const Transfer& transfer : plan_transfers(index, buffer->second, self, 1)) {
        if (!(transfer.source == self)) sources.insert(transfer.source);
      }
      found = sources_of_class.emplace(key, std::vector<StageColumn>(sources.begin(), sources.end())).first;
    }
    most = std::max(most, static_cast<int>(found->second.size()));
    for (const StageColumn& source : found->second) {
      const int source_rank = train.rank_of({source.tp_rank, coord.dp_rank, source.pp_rank});
      most = std::max(most, ++send_peers[static_cast<std::size_t>(source_rank)]);
    }
  }
  return std::max(most, 1);
}

}  // namespace

std::int64_t Round::send_bytes() const {
  std::int64_t total = 0;
  for (const Message& message : sends) total += message.bytes;
  return total;
}

std::int64_t Round::recv_bytes() const {
  std::int64_t total = 0;
  for (const Message& message : recvs) total += message.bytes;
  return total;
}

std::int64_t RankPlan::bytes_local() const {
  std::int64_t total = 0;
  for (const Piece& piece : local_pieces) total += piece.bytes();
  return total;
}

std::int64_t RankPlan::bytes_sent() const {
  std::int64_t total = 0;
  for (const Round& round : rounds) total += round.send_bytes();
  return total;
}

std::int64_t RankPlan::bytes_received() const {
  std::int64_t total = 0;
  for (const Round& round : rounds) total += round.recv_bytes();
  return total;
}

std::int64_t RankPlan::max_round_send_bytes() const {
  std::int64_t most = 0;
  for (const Round& round : rounds) most = std::max(most, round.send_bytes());
  return most;
}

std::int64_t RankPlan::max_round_recv_bytes() const {
  std::int64_t most = 0;
  for (const Round& round : rounds) most = std::max(most, round.recv_bytes());
  return most;
}

std::int64_t RankPlan::peak_extra_bytes() const {
  return inference_buffer.bytes + max_round_send_bytes() + max_round_recv_bytes();
}

RankPlan make_rank_plan(const ModelSpec& spec, const TrainLayout& train, const InferenceLayout& inference, int rank,
                        const PlanOptions& options) {
  std::vector<std::string> problems = spec.validate();
  for (std::string& problem : train.validate(spec)) problems.push_back(std::move(problem));
  for (std::string& problem : inference.validate(spec)) problems.push_back(std::move(problem));
  if (problems.empty() && train.world_size() != inference.world_size) {
    problems.push_back("the train world size (tp * dp * pp = " + num(train.world_size()) +
                       ") differs from the rollout world size " + num(inference.world_size));
  }
  if (problems.empty() && (rank < 0 || rank >= train.world_size())) {
    problems.push_back("rank " + num(rank) + " is outside [0, " + num(train.world_size()) + ")");
  }
  if (options.bucket_bytes <= 0) problems.push_back("bucket_bytes must be positive, got " + num(options.bucket_bytes));
  if (!problems.empty()) {
    std::string message = "cannot plan the reshard:";
    for (const std::string& problem : problems) message += "\n  - " + problem;
    HS_THROW(ConfigError, message);
  }

  const auto element_bytes = static_cast<std::int64_t>(dtype_size(spec.dtype));
  const TrainIndex index(spec, train);
  const TrainLayout::Coord coord = train.coord(rank);
  const StageColumn self{coord.tp_rank, coord.pp_rank};

  RankPlan plan;
  plan.rank = rank;
  plan.spec = spec;
  plan.train = train;
  plan.inference = inference;
  plan.train_buffers = index.buffers(self);
  plan.inference_buffer = inference_param_buffer(spec, inference, inference.coord(rank).tp_rank);
  plan.zero_fill = uncovered_ranges(plan.inference_buffer);
  plan.chunk_bytes = std::max<std::int64_t>(1, options.bucket_bytes / max_peers(spec, train, inference, index));

  // Receives and local copies: what this rank needs, by source.
  const std::vector<Transfer> needed = plan_transfers(index, plan.inference_buffer, self, element_bytes);
  std::map<int, std::vector<const Transfer*>> from_peer;
  for (const Transfer& transfer : needed) {
    if (transfer.source == self) {
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
      from_peer[train.rank_of({transfer.source.tp_rank, coord.dp_rank, transfer.source.pp_rank})].push_back(&transfer);
    }
  }

  // Sends: what every other rank of this data-parallel replica needs from this one, computed as that rank does.
  std::map<int, BufferLayout> inference_buffers;
  std::map<int, std::vector<Transfer>> to_peer_transfers;
  for (int p = 0; p < train.pp; ++p) {
    for (int t = 0; t < train.tp; ++t) {
      const int peer = train.rank_of({t, coord.dp_rank, p});
      if (peer == rank) continue;
      const int peer_inference_tp = inference.coord(peer).tp_rank;
      auto buffer = inference_buffers.find(peer_inference_tp);
      if (buffer == inference_buffers.end()) {
        buffer =
            inference_buffers.emplace(peer_inference_tp, inference_param_buffer(spec, inference, peer_inference_tp))
                .first;
      }
      std::vector<Transfer> transfers = plan_transfers(index, buffer->second, StageColumn{t, p}, element_bytes);
      std::erase_if(transfers, [&self](const Transfer& transfer) { return !(transfer.source == self); });
      if (!transfers.empty()) to_peer_transfers.emplace(peer, std::move(transfers));
    }
  }

  const auto place = [&plan](std::size_t round_index) -> Round& {
    if (plan.rounds.size() <= round_index) plan.rounds.resize(round_index + 1);
    return plan.rounds[round_index];
  };
  // std::map iterates peers in ascending order, so every round's messages are sorted by peer.
  for (const auto& [peer, transfers] : to_peer_transfers) {
    std::vector<const Transfer*> pointers;
    for (const Transfer& transfer : transfers) pointers.push_back(&transfer);
    const auto chunks = cut_into_chunks(pointers, plan.chunk_bytes);
    for (std::size_t k = 0; k < chunks.size(); ++k) place(k).sends.push_back(make_message(peer, chunks[k], true));
  }
  for (const auto& [peer, transfers] : from_peer) {
    const auto chunks = cut_into_chunks(transfers, plan.chunk_bytes);
    for (std::size_t k = 0; k < chunks.size(); ++k) place(k).recvs.push_back(make_message(peer, chunks[k], false));
  }
  return plan;
}

}  // namespace hybridshard::core
