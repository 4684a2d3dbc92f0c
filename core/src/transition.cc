// What both strategies share: names, applicability, the factory, event and memory helpers, and the seed's groups and
// conversions (also used by peer_data.cc).
#include "hybridshard/core/transition.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <utility>

#include "hybridshard/core/error.h"
#include "transition/transition_internal.h"

namespace hybridshard::core {

std::string_view strategy_name(Strategy strategy) {
  switch (strategy) {
    case Strategy::kHybridshard:
      return "hybridshard";
    case Strategy::kSeed:
      return "seed";
  }
  return "unknown";
}

std::string_view exit_policy_name(ExitPolicy policy) {
  switch (policy) {
    case ExitPolicy::kFree:
      return "free";
    case ExitPolicy::kOffload:
      return "offload";
  }
  return "unknown";
}

bool strategy_applies(Strategy strategy, const TrainLayout& train, const InferenceLayout& inference) {
  if (train.world_size() != inference.world_size || inference.tp <= 0 || train.tp <= 0) return false;
  if (inference.world_size % inference.tp != 0) return false;
  switch (strategy) {
    case Strategy::kHybridshard:
      return true;
    case Strategy::kSeed:
      // The seed all-gathers tp / tp' consecutive train shards: it cannot split a train shard (tp' > tp) or mix
      // shards of different inference ranks.
      return train.tp % inference.tp == 0;
  }
  return false;
}

bool strategy_applies(Strategy strategy, const ModelSpec& spec, const TrainLayout& train,
                      const InferenceLayout& inference) {
  if (!strategy_applies(strategy, train, inference)) return false;
  if (strategy != Strategy::kSeed) return true;
  if (spec.is_moe()) return false;  // the seed (verl's first hybrid engine) has no Mixture-of-Experts path
  try {
    for (int shard = 0; shard < inference.tp; ++shard)
      transition_detail::seed_vocab_rows(spec, train, inference, shard);
  } catch (const ConfigError&) {
    return false;
  }
  return true;
}

int inference_tp_rank_of(Strategy strategy, const TrainLayout& train, const InferenceLayout& inference, int rank) {
  if (strategy == Strategy::kSeed && strategy_applies(strategy, train, inference)) {
    return train.coord(rank).tp_rank / (train.tp / inference.tp);
  }
  return inference.coord(rank).tp_rank;
}

std::string_view transport_name(Transport transport) {
  switch (transport) {
    case Transport::kAuto:
      return "auto";
    case Transport::kPeer:
      return "peer";
    case Transport::kSendRecv:
      return "sendrecv";
  }
  return "unknown";
}

std::optional<Transport> parse_transport(std::string_view name) {
  for (Transport transport : {Transport::kAuto, Transport::kPeer, Transport::kSendRecv}) {
    if (name == transport_name(transport)) return transport;
  }
  return std::nullopt;
}

std::unique_ptr<Transition> make_transition(Strategy strategy, RankPlan plan, Communicator& world, Device& device,
                                            EventSink* events, TransitionOptions options) {
  if (world.size() != plan.train.world_size() || world.rank() != plan.rank) {
    HS_THROW(ConfigError, "make_transition: the communicator is rank " + std::to_string(world.rank()) + " of " +
                              std::to_string(world.size()) + " but the plan is for rank " + std::to_string(plan.rank) +
                              " of " + std::to_string(plan.train.world_size()));
  }
  if (!strategy_applies(strategy, plan.spec, plan.train, plan.inference)) {
    HS_THROW(ConfigError, "strategy " + std::string(strategy_name(strategy)) + " does not apply to train tp " +
                              std::to_string(plan.train.tp) + " -> inference tp " + std::to_string(plan.inference.tp) +
                              " (the seed needs tp % tp' == 0 and matching vocabulary shard boundaries)");
  }
  switch (strategy) {
    case Strategy::kHybridshard:
      return transition_detail::make_hybridshard_transition(std::move(plan), world, device, events, options);
    case Strategy::kSeed:
      return transition_detail::make_seed_transition(std::move(plan), world, device, events);
  }
  HS_THROW(ConfigError, "unknown strategy");
}

namespace transition_detail {

void emit_transfer(EventSink* events, int rank, int iteration, TransferPath path, std::int64_t bytes, double seconds,
                   int peer, std::string operation) {
  if (events == nullptr) return;
  Event event;
  event.type = EventType::kTransfer;
  event.time = wall_time_now();
  event.rank = rank;
  event.iteration = iteration;
  event.path = path;
  event.bytes = bytes;
  event.seconds = seconds;
  event.peer = peer;
  event.operation = std::move(operation);
  events->on_event(event);
}

void check_train_params(const RankPlan& plan, const std::vector<FlatBuffer*>& train_params) {
  if (train_params.size() != plan.train_buffers.size()) {
    HS_THROW(Error, "enter on rank " + std::to_string(plan.rank) + ": got " + std::to_string(train_params.size()) +
                        " train parameter buffers, the plan has " + std::to_string(plan.train_buffers.size()));
  }
  for (std::size_t i = 0; i < train_params.size(); ++i) {
    const FlatBuffer* buffer = train_params[i];
    const BufferLayout& layout = plan.train_buffers[i];
    if (buffer == nullptr || buffer->residency() != Residency::kGpu || buffer->bytes() != layout.bytes) {
      HS_THROW(
          Error,
          "enter on rank " + std::to_string(plan.rank) + ": train buffer " + std::to_string(i) + " ('" + layout.name +
              "', " + std::to_string(layout.bytes) + " bytes) must be resident on the device" +
              (buffer == nullptr ? std::string(" (got none)")
                                 : " (got '" + buffer->name() + "', " + std::to_string(buffer->bytes()) +
                                       " bytes, residency " + std::string(residency_name(buffer->residency())) + ")"));
    }
  }
}

std::string shape_text(const BufferLayout& layout) {
  std::int64_t elements = 0;
  for (const LocalTensor& tensor : layout.tensors) elements += tensor.numel();
  return std::to_string(layout.tensors.size()) + " tensors, " + std::to_string(elements) + " elems";
}

namespace {
std::int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

Stopwatch::Stopwatch() : start_ns_(steady_ns()) {}
double Stopwatch::seconds() const { return static_cast<double>(steady_ns() - start_ns_) * 1e-9; }

PeakTracker::PeakTracker(Device& device)
    : device_(device), start_(device.bytes_in_use(Residency::kGpu)), peak_(start_) {}

void PeakTracker::sample() { peak_ = std::max(peak_, device_.bytes_in_use(Residency::kGpu)); }

std::vector<Piece> landing_pieces(const RankPlan& plan, const std::vector<bool>& direct) {
  const auto own = static_cast<int>(plan.train_buffers.size());
  std::vector<Piece> pieces = plan.local_pieces;
  int first = own;
  for (const PeerPieces& reads : plan.peer_reads) {
    const auto p = static_cast<std::size_t>(reads.peer);
    if (!direct.empty() && (p >= direct.size() || !direct[p])) continue;
    for (Piece piece : reads.pieces) {
      piece.src_buffer += first;
      pieces.push_back(piece);
    }
    first += own;
  }
  return pieces;
}

std::vector<ByteRange> zero_ranges(const RankPlan& plan) {
  const BufferLayout& layout = plan.inference_buffer;
  const auto element = static_cast<std::int64_t>(dtype_size(layout.dtype));
  std::vector<ByteRange> ranges = plan.zero_fill;
  std::int64_t end_of_previous = 0;
  for (const LocalTensor& tensor : layout.tensors) {
    if (tensor.offset_bytes > end_of_previous)
      ranges.push_back({end_of_previous, tensor.offset_bytes - end_of_previous});
    end_of_previous = std::max(end_of_previous, tensor.offset_bytes + tensor.numel() * element);
  }
  if (layout.bytes > end_of_previous) ranges.push_back({end_of_previous, layout.bytes - end_of_previous});
  std::sort(ranges.begin(), ranges.end(), [](const ByteRange& a, const ByteRange& b) { return a.offset < b.offset; });
  std::vector<ByteRange> merged;
  for (const ByteRange& range : ranges) {
    if (range.bytes <= 0) continue;
    if (!merged.empty() && range.offset <= merged.back().offset + merged.back().bytes) {
      merged.back().bytes =
          std::max(merged.back().offset + merged.back().bytes, range.offset + range.bytes) - merged.back().offset;
    } else {
      merged.push_back(range);
    }
  }
  return merged;
}

// ---- The seed ----

namespace {

bool ends_with(const std::string& text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Megatron-Core local names -> vLLM names (verl's normalize_pp_vpp_params plus its name mapping). `layers` holds the
// chunk's global layer indices. Empty when vLLM has no such tensor.
std::string inference_name_of(const ModelSpec& spec, const std::string& train_name, const std::vector<int>& layers) {
  if (train_name == "embedding.word_embeddings.weight") return "model.embed_tokens.weight";
  if (train_name == "decoder.final_layernorm.weight") return "model.norm.weight";
  if (train_name == "output_layer.weight") return spec.tie_word_embeddings ? std::string() : "lm_head.weight";
  const std::string prefix = "decoder.layers.";
  if (train_name.rfind(prefix, 0) != 0) {
    HS_THROW(Error, "seed strategy: no vLLM name for train tensor '" + train_name + "'");
  }
  const std::size_t dot = train_name.find('.', prefix.size());
  const int local = std::stoi(train_name.substr(prefix.size(), dot - prefix.size()));
  if (local < 0 || local >= static_cast<int>(layers.size())) {
    HS_THROW(Error, "seed strategy: train tensor '" + train_name + "' names local layer " + std::to_string(local) +
                        " but its chunk holds " + std::to_string(layers.size()) + " layers");
  }
  static const std::map<std::string, std::string> kLayerNames = {
      {"input_layernorm.weight", "input_layernorm.weight"},
      {"self_attention.linear_qkv.weight", "self_attn.qkv_proj.weight"},
      {"self_attention.linear_qkv.bias", "self_attn.qkv_proj.bias"},
      {"self_attention.linear_proj.weight", "self_attn.o_proj.weight"},
      {"self_attention.q_layernorm.weight", "self_attn.q_norm.weight"},
      {"self_attention.k_layernorm.weight", "self_attn.k_norm.weight"},
      {"pre_mlp_layernorm.weight", "post_attention_layernorm.weight"},
      {"mlp.linear_fc1.weight", "mlp.gate_up_proj.weight"},
      {"mlp.linear_fc2.weight", "mlp.down_proj.weight"},
  };
  const auto found = kLayerNames.find(train_name.substr(dot + 1));
  if (found == kLayerNames.end()) HS_THROW(Error, "seed strategy: no vLLM name for train tensor '" + train_name + "'");
  return "model.layers." + std::to_string(layers[static_cast<std::size_t>(local)]) + "." + found->second;
}

}  // namespace

TpClass tp_class_of(const std::string& name) {
  if (ends_with(name, "layernorm.weight")) return TpClass::kReplicated;
  if (ends_with(name, "linear_qkv.weight") || ends_with(name, "linear_qkv.bias")) return TpClass::kQkv;
  if (ends_with(name, "linear_fc1.weight")) return TpClass::kGateUp;
  if (ends_with(name, "linear_proj.weight") || ends_with(name, "linear_fc2.weight")) return TpClass::kColumns;
  if (ends_with(name, "word_embeddings.weight") || ends_with(name, "output_layer.weight")) return TpClass::kVocabRows;
  HS_THROW(Error, "seed strategy: unknown tensor-parallel split of train tensor '" + name + "'");
}

SeedTopology seed_topology(const TrainLayout& train, const InferenceLayout& inference, int rank) {
  if (inference.tp <= 0 || train.tp % inference.tp != 0) {
    HS_THROW(ConfigError, "seed strategy: train tp " + std::to_string(train.tp) +
                              " is not a multiple of inference tp " + std::to_string(inference.tp));
  }
  SeedTopology topology;
  topology.micro_dp_size = train.tp / inference.tp;
  const TrainLayout::Coord coord = train.coord(rank);
  topology.micro_dp_rank = coord.tp_rank % topology.micro_dp_size;
  topology.inference_tp_rank = coord.tp_rank / topology.micro_dp_size;
  for (int dp_rank = 0; dp_rank < train.dp; ++dp_rank) {
    for (int tp_rank = 0; tp_rank < train.tp; ++tp_rank) {
      std::vector<int> group;
      for (int pp_rank = 0; pp_rank < train.pp; ++pp_rank) group.push_back(train.rank_of({tp_rank, dp_rank, pp_rank}));
      if (tp_rank == coord.tp_rank && dp_rank == coord.dp_rank) {
        topology.pipeline_group = static_cast<int>(topology.pipeline_groups.size());
      }
      topology.pipeline_groups.push_back(std::move(group));
    }
  }
  const int world = train.world_size();
  for (int first = 0; first < world; first += topology.micro_dp_size) {
    std::vector<int> group;
    for (int member = first; member < first + topology.micro_dp_size; ++member) group.push_back(member);
    if (rank >= first && rank < first + topology.micro_dp_size) {
      topology.micro_dp_group = static_cast<int>(topology.micro_dp_groups.size());
    }
    topology.micro_dp_groups.push_back(std::move(group));
  }
  return topology;
}

VocabRowCopy seed_vocab_rows(const ModelSpec& spec, const TrainLayout& train, const InferenceLayout& inference,
                             int inference_tp_rank) {
  const std::int64_t train_padded = train.padded_vocab(spec);
  const std::int64_t inference_padded = inference.padded_vocab(spec);
  // The group's gathered rows and the rows the inference shard holds (both in the full vocabulary's numbering).
  const std::int64_t held_begin = inference_tp_rank * (train_padded / inference.tp);
  const std::int64_t held_end = held_begin + train_padded / inference.tp;
  const std::int64_t shard_begin = inference_tp_rank * (inference_padded / inference.tp);
  const std::int64_t need_end = std::min(spec.vocab_size, shard_begin + inference_padded / inference.tp);
  VocabRowCopy copy;
  if (need_end <= shard_begin) return copy;  // only padding rows
  if (shard_begin < held_begin || need_end > held_end) {
    HS_THROW(ConfigError, "seed strategy: inference tp rank " + std::to_string(inference_tp_rank) +
                              " needs vocabulary rows [" + std::to_string(shard_begin) + ", " +
                              std::to_string(need_end) + ") but its micro data-parallel group holds [" +
                              std::to_string(held_begin) + ", " + std::to_string(held_end) +
                              ") (Megatron pads the vocabulary to " + std::to_string(train_padded) + ", vLLM to " +
                              std::to_string(inference_padded) + ")");
  }
  copy.src_row = shard_begin - held_begin;
  copy.dst_row = 0;
  copy.rows = need_end - shard_begin;
  return copy;
}

std::vector<SeedTensor> seed_schedule(const ModelSpec& spec, const TrainLayout& train,
                                      const std::vector<std::vector<BufferLayout>>& stage_buffers,
                                      const BufferLayout& inference_buffer) {
  std::map<std::string, int> inference_index;
  for (std::size_t i = 0; i < inference_buffer.tensors.size(); ++i) {
    inference_index[inference_buffer.tensors[i].name] = static_cast<int>(i);
  }
  std::vector<SeedTensor> schedule;
  for (int chunk = 0; chunk < train.vpp; ++chunk) {
    for (int pp_rank = 0; pp_rank < train.pp; ++pp_rank) {
      const BufferLayout& layout =
          stage_buffers.at(static_cast<std::size_t>(pp_rank)).at(static_cast<std::size_t>(chunk));
      const std::vector<int> layers = train.layers_of(spec, pp_rank, chunk);
      for (std::size_t t = 0; t < layout.tensors.size(); ++t) {
        SeedTensor entry;
        entry.pp_rank = pp_rank;
        entry.chunk = chunk;
        entry.tensor = static_cast<int>(t);
        entry.tp_class = tp_class_of(layout.tensors[t].name);
        const std::string name = inference_name_of(spec, layout.tensors[t].name, layers);
        if (!name.empty()) {
          const auto found = inference_index.find(name);
          if (found == inference_index.end()) {
            HS_THROW(Error, "seed strategy: the inference buffer has no tensor '" + name + "' for train tensor '" +
                                layout.tensors[t].name + "' of stage " + std::to_string(pp_rank) + " chunk " +
                                std::to_string(chunk));
          }
          entry.inference_tensor = found->second;
        }
        schedule.push_back(entry);
      }
    }
  }
  return schedule;
}

std::vector<Piece> seed_concat_pieces(const ModelSpec& spec, const LocalTensor& shard, TpClass tp_class,
                                      int micro_dp_size) {
  const auto element = static_cast<std::int64_t>(dtype_size(spec.dtype));
  const std::int64_t row_bytes = shard.cols * element;
  const std::int64_t shard_bytes = shard.numel() * element;
  const std::int64_t m = micro_dp_size;
  std::vector<Piece> pieces;
  auto rows_piece = [&](std::int64_t src_row_byte, std::int64_t dst_row_byte, std::int64_t rows) {
    Piece piece;
    piece.src_buffer = 0;
    piece.src_offset = src_row_byte;
    piece.dst_offset = dst_row_byte;
    piece.rows = rows;
    piece.row_bytes = row_bytes;
    piece.src_stride = row_bytes;
    piece.dst_stride = row_bytes;
    if (rows > 0 && row_bytes > 0) pieces.push_back(piece);
  };
  switch (tp_class) {
    case TpClass::kReplicated:
    case TpClass::kVocabRows:
      rows_piece(0, 0, m * shard.rows);
      break;
    case TpClass::kQkv: {
      const std::int64_t head_dim = spec.resolved_head_dim();
      const std::int64_t q_per_group = spec.num_attention_heads / spec.num_key_value_heads;
      const std::int64_t group_rows = (q_per_group + 2) * head_dim;
      if (group_rows <= 0 || shard.rows % group_rows != 0) {
        HS_THROW(Error, "seed strategy: fused QKV '" + shard.name + "' has " + std::to_string(shard.rows) +
                            " rows, not a multiple of a query group's " + std::to_string(group_rows));
      }
      const std::int64_t groups = shard.rows / group_rows;  // local query groups per train shard
      const std::int64_t q_rows = m * groups * q_per_group * head_dim;
      const std::int64_t k_rows = m * groups * head_dim;
      for (std::int64_t j = 0; j < m; ++j) {
        for (std::int64_t g = 0; g < groups; ++g) {
          const std::int64_t src = j * shard_bytes + g * group_rows * row_bytes;
          const std::int64_t global_group = j * groups + g;
          rows_piece(src, global_group * q_per_group * head_dim * row_bytes, q_per_group * head_dim);
          rows_piece(src + q_per_group * head_dim * row_bytes, (q_rows + global_group * head_dim) * row_bytes,
                     head_dim);
          rows_piece(src + (q_per_group + 1) * head_dim * row_bytes,
                     (q_rows + k_rows + global_group * head_dim) * row_bytes, head_dim);
        }
      }
      break;
    }
    case TpClass::kGateUp: {
      const std::int64_t half = shard.rows / 2;
      for (std::int64_t j = 0; j < m; ++j) {
        rows_piece(j * shard_bytes, j * half * row_bytes, half);
        rows_piece(j * shard_bytes + half * row_bytes, (m * half + j * half) * row_bytes, half);
      }
      break;
    }
    case TpClass::kColumns:
      for (std::int64_t j = 0; j < m; ++j) {
        Piece piece;
        piece.src_buffer = 0;
        piece.src_offset = j * shard_bytes;
        piece.dst_offset = j * row_bytes;
        piece.rows = shard.rows;
        piece.row_bytes = row_bytes;
        piece.src_stride = row_bytes;
        piece.dst_stride = m * row_bytes;
        if (piece.rows > 0 && row_bytes > 0) pieces.push_back(piece);
      }
      break;
  }
  return pieces;
}

}  // namespace transition_detail
}  // namespace hybridshard::core
