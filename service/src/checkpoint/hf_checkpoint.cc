#include "hybridshard/service/checkpoint/hf_checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>

#include "hybridshard/core/error.h"
#include "hybridshard/service/files/output_file.h"
#include "safetensors_detail.h"

namespace hybridshard::service {
namespace {

using core::DType;
using nlohmann::json;

constexpr std::int64_t kMaxConfigBytes = std::int64_t{4} << 20;
constexpr std::int64_t kMaxIndexBytes = std::int64_t{64} << 20;
constexpr std::size_t kMaxProblems = 40;

std::vector<std::int64_t> expected_shape(const core::HfTensor& tensor) {
  if (tensor.is_1d) return {tensor.rows};
  return {tensor.rows, tensor.cols};
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

// The experts of qwen2_moe and qwen3_moe (num_experts, moe_intermediate_size, norm_topk_prob, decoder_sparse_step,
// mlp_only_layers, with Qwen2MoeConfig's / Qwen3MoeConfig's defaults; qwen2_moe also shared_expert_intermediate_size)
// and mixtral (num_local_experts; its intermediate_size is the experts' width; the top-k weights are always
// renormalised).
template <typename Integer, typename Problem>
void read_experts(const json& config, core::ModelSpec& spec, const Integer& integer, const Problem& problem) {
  if (!spec.is_moe()) return;
  integer("num_experts_per_tok", spec.num_experts_per_tok, true);
  if (spec.architecture == core::Architecture::kMixtral) {
    integer("num_local_experts", spec.num_experts, true);
    spec.moe_intermediate_size = spec.intermediate_size;
    spec.norm_topk_prob = true;
    return;
  }
  integer("num_experts", spec.num_experts, true);
  integer("moe_intermediate_size", spec.moe_intermediate_size, true);
  if (spec.has_shared_expert()) integer("shared_expert_intermediate_size", spec.shared_expert_intermediate_size, true);
  spec.decoder_sparse_step = 1;
  integer("decoder_sparse_step", spec.decoder_sparse_step, false);
  spec.norm_topk_prob = false;
  if (auto it = config.find("norm_topk_prob"); it != config.end() && !it->is_null()) {
    if (!it->is_boolean()) {
      problem("norm_topk_prob must be true or false, got " + it->dump());
    } else {
      spec.norm_topk_prob = it->get<bool>();
    }
  }
  spec.mlp_only_layers.clear();
  if (auto it = config.find("mlp_only_layers"); it != config.end() && !it->is_null()) {
    bool ok = it->is_array();
    for (const json& layer : ok ? *it : json::array()) {
      ok = ok && layer.is_number_integer();
      if (ok) spec.mlp_only_layers.push_back(layer.get<std::int64_t>());
    }
    if (!ok) problem("mlp_only_layers must be a list of layer numbers, got " + it->dump());
  }
}

// config.json -> ModelSpec, appending problems that name `file_name` and the key.
std::optional<core::ModelSpec> check_hf_config(std::string_view text, const std::string& file_name,
                                               std::vector<std::string>& problems) {
  const std::size_t before = problems.size();
  const auto problem = [&](const std::string& message) { problems.push_back(file_name + ": " + message); };
  json config;
  try {
    config = json::parse(text.begin(), text.end());
  } catch (const json::exception& error) {
    problem(std::string("not valid JSON: ") + error.what());
    return std::nullopt;
  }
  if (!config.is_object()) {
    problem("not a JSON object");
    return std::nullopt;
  }
  core::ModelSpec spec;
  // model_type, or the architectures list of older files.
  std::string model_type;
  if (auto it = config.find("model_type"); it != config.end() && it->is_string()) {
    model_type = it->get<std::string>();
  } else if (auto list = config.find("architectures");
             list != config.end() && list->is_array() && !list->empty() && (*list)[0].is_string()) {
    model_type = (*list)[0].get<std::string>();  // "LlamaForCausalLM", "Qwen3MoeForCausalLM", ...
  }
  if (auto architecture = core::parse_architecture(model_type)) {
    spec.architecture = *architecture;
  } else {
    problem("model_type '" + model_type +
            "' is not supported; hybridshard reads llama, qwen2, qwen3, qwen2_moe, qwen3_moe and mixtral checkpoints");
  }

  const auto integer = [&](const char* key, std::int64_t& field, bool required) {
    auto it = config.find(key);
    if (it == config.end() || it->is_null()) {
      if (required) problem("missing " + std::string(key));
      return false;
    }
    if (!it->is_number_integer() || it->get<std::int64_t>() < 0 || it->get<std::int64_t>() > (std::int64_t{1} << 40)) {
      problem(std::string(key) + " must be a whole number from 0 to 2^40, got " + it->dump());
      return false;
    }
    field = it->get<std::int64_t>();
    return true;
  };
  const auto real = [&](const char* key, double& field) {
    auto it = config.find(key);
    if (it == config.end() || it->is_null()) return;
    if (!it->is_number()) {
      problem(std::string(key) + " must be a number, got " + it->dump());
      return;
    }
    field = it->get<double>();
  };
  integer("num_hidden_layers", spec.num_hidden_layers, true);
  integer("hidden_size", spec.hidden_size, true);
  integer("num_attention_heads", spec.num_attention_heads, true);
  integer("intermediate_size", spec.intermediate_size, true);
  integer("vocab_size", spec.vocab_size, true);
  if (!integer("num_key_value_heads", spec.num_key_value_heads, false)) {
    spec.num_key_value_heads = spec.num_attention_heads;  // Hugging Face's default: no grouping
  }
  spec.head_dim = 0;
  integer("head_dim", spec.head_dim, false);
  integer("max_position_embeddings", spec.max_position_embeddings, false);
  spec.rope_theta = 10000.0;
  real("rope_theta", spec.rope_theta);
  spec.rms_norm_eps = 1e-6;
  real("rms_norm_eps", spec.rms_norm_eps);
  spec.tie_word_embeddings = false;
  if (auto it = config.find("tie_word_embeddings"); it != config.end() && !it->is_null()) {
    if (!it->is_boolean()) {
      problem("tie_word_embeddings must be true or false, got " + it->dump());
    } else {
      spec.tie_word_embeddings = it->get<bool>();
    }
  }
  spec.dtype = DType::kBFloat16;
  for (const char* key : {"torch_dtype", "dtype"}) {
    auto it = config.find(key);
    if (it == config.end() || it->is_null()) continue;
    const std::string name = it->is_string() ? it->get<std::string>() : it->dump();
    if (auto dtype = core::parse_dtype(name)) {
      spec.dtype = *dtype;
    } else {
      problem(std::string(key) + " '" + name + "' is not supported; use bfloat16, float16 or float32");
    }
    break;
  }
  read_experts(config, spec, integer, problem);
  // Qwen2MoeConfig's qkv_bias (default true): hybridshard's qwen2_moe layouts carry the biases.
  if (auto it = config.find("qkv_bias"); spec.architecture == core::Architecture::kQwen2Moe && it != config.end() &&
                                         !it->is_null() && !(it->is_boolean() && it->get<bool>())) {
    problem("qkv_bias " + it->dump() + " is not supported for qwen2_moe (its q/k/v projections have biases)");
  }
  for (const char* key : {"attention_bias", "mlp_bias"}) {
    auto it = config.find(key);
    if (it != config.end() && it->is_boolean() && it->get<bool>()) {
      problem(std::string(key) + " true is not supported (no such biases in the Llama/Qwen2 layouts)");
    }
  }
  if (problems.size() != before) return std::nullopt;
  for (const core::ModelSpec::Problem& found : spec.validate()) problem(found.message);
  if (problems.size() != before) return std::nullopt;
  return spec;
}

// A shard file name from an index must stay inside the checkpoint directory.
bool safe_file_name(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos && name.find('\\') == std::string::npos && name != "." &&
         name != "..";
}

void write_text_file(const std::filesystem::path& path, const std::string& text) {
  const std::filesystem::path temporary = path.string() + ".tmp." + std::to_string(::getpid());
  const int fd = create_exclusive(temporary, 0644);  // never through a planted link, never an existing file
  if (fd < 0) HS_THROW(core::Error, temporary.string() + ": cannot create: " + std::strerror(errno));
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t wrote = ::write(fd, text.data() + done, text.size() - done);
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote <= 0) {
      const int saved = errno;
      ::close(fd);
      ::unlink(temporary.c_str());
      HS_THROW(core::Error, temporary.string() + ": write failed: " + std::strerror(saved));
    }
    done += static_cast<std::size_t>(wrote);
  }
  ::fsync(fd);
  ::close(fd);
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    const int saved = errno;
    ::unlink(temporary.c_str());
    HS_THROW(core::Error, path.string() + ": cannot rename into place: " + std::strerror(saved));
  }
}

}  // namespace

core::ModelSpec parse_hf_config(std::string_view json_text, const std::string& file_name) {
  std::vector<std::string> problems;
  auto spec = check_hf_config(json_text, file_name, problems);
  if (!spec) detail::throw_problems(problems);
  return *spec;
}

std::string hf_config_json(const core::ModelSpec& spec) {
  const bool qwen2 = spec.architecture == core::Architecture::kQwen2;
  const char* architecture = "LlamaForCausalLM";
  switch (spec.architecture) {
    case core::Architecture::kLlama:
      break;
    case core::Architecture::kQwen2:
      architecture = "Qwen2ForCausalLM";
      break;
    case core::Architecture::kQwen3:
      architecture = "Qwen3ForCausalLM";
      break;
    case core::Architecture::kQwen3Moe:
      architecture = "Qwen3MoeForCausalLM";
      break;
    case core::Architecture::kMixtral:
      architecture = "MixtralForCausalLM";
      break;
    case core::Architecture::kQwen2Moe:
      architecture = "Qwen2MoeForCausalLM";
      break;
  }
  json config = {
      {"architectures", {architecture}},
      {"model_type", std::string(core::architecture_name(spec.architecture))},
      {"hidden_act", "silu"},
      {"num_hidden_layers", spec.num_hidden_layers},
      {"hidden_size", spec.hidden_size},
      {"num_attention_heads", spec.num_attention_heads},
      {"num_key_value_heads", spec.num_key_value_heads},
      {"intermediate_size", spec.intermediate_size},
      {"vocab_size", spec.vocab_size},
      {"max_position_embeddings", spec.max_position_embeddings},
      {"rope_theta", spec.rope_theta},
      {"rms_norm_eps", spec.rms_norm_eps},
      {"tie_word_embeddings", spec.tie_word_embeddings},
      {"torch_dtype", spec.dtype == DType::kBFloat16  ? "bfloat16"
                      : spec.dtype == DType::kFloat16 ? "float16"
                                                      : "float32"},
  };
  if (spec.head_dim > 0) config["head_dim"] = spec.head_dim;
  if (qwen2 || spec.architecture == core::Architecture::kQwen2Moe) config["use_sliding_window"] = false;
  if (spec.architecture == core::Architecture::kQwen3 || spec.architecture == core::Architecture::kQwen3Moe) {
    config["attention_bias"] = false;
  }
  if (spec.architecture == core::Architecture::kQwen2Moe) {
    config["shared_expert_intermediate_size"] = spec.shared_expert_intermediate_size;
    config["qkv_bias"] = true;
  }
  if (spec.architecture == core::Architecture::kQwen3Moe || spec.architecture == core::Architecture::kQwen2Moe) {
    config["num_experts"] = spec.num_experts;
    config["num_experts_per_tok"] = spec.num_experts_per_tok;
    config["moe_intermediate_size"] = spec.moe_intermediate_size;
    config["norm_topk_prob"] = spec.norm_topk_prob;
    config["decoder_sparse_step"] = spec.decoder_sparse_step;
    config["mlp_only_layers"] = spec.mlp_only_layers;
  }
  if (spec.architecture == core::Architecture::kMixtral) {
    config["num_local_experts"] = spec.num_experts;
    config["num_experts_per_tok"] = spec.num_experts_per_tok;
    config["intermediate_size"] = spec.moe_intermediate_size;
  }
  return config.dump(2) + "\n";
}

CheckpointCheck check_hf_checkpoint(const std::filesystem::path& directory, HfCheckpoint* opened) {
  CheckpointCheck check;
  std::vector<std::string>& problems = check.problems;
  std::error_code code;
  const std::filesystem::file_status status = std::filesystem::status(directory, code);
  if (!std::filesystem::is_directory(status)) {
    const bool loop = code == std::errc::too_many_symbolic_link_levels;
    problems.push_back(directory.string() + ": " +
                       (loop                              ? "a symbolic link loop (too many levels of symbolic links)"
                        : std::filesystem::exists(status) ? "not a directory"
                                                          : "no such directory") +
                       "; model.checkpoint names a Hugging Face model directory (config.json, *.safetensors)");
    return check;
  }
  const std::filesystem::path config_path = directory / "config.json";
  if (auto text = detail::read_small_file(config_path, kMaxConfigBytes, problems)) {
    check.spec = check_hf_config(*text, config_path.string(), problems);
  }

  // Which file holds each tensor.
  const std::filesystem::path index_path = directory / "model.safetensors.index.json";
  const std::filesystem::path single_path = directory / "model.safetensors";
  std::map<std::string, std::string> weight_map;  // tensor -> file name; empty: the single file
  std::vector<std::string> file_names;
  if (std::filesystem::exists(index_path, code)) {
    if (auto text = detail::read_small_file(index_path, kMaxIndexBytes, problems)) {
      json index;
      bool parsed = true;
      try {
        index = json::parse(*text);
      } catch (const json::exception& error) {
        parsed = false;
        problems.push_back(index_path.string() + ": not valid JSON: " + error.what());
      }
      const auto map = parsed && index.is_object() ? index.find("weight_map") : index.end();
      if (parsed && (!index.is_object() || map == index.end() || !map->is_object())) {
        problems.push_back(index_path.string() + ": no \"weight_map\" object");
      } else if (parsed) {
        std::set<std::string> seen;
        for (const auto& [tensor, file] : map->items()) {
          if (!file.is_string() || !safe_file_name(file.get<std::string>())) {
            problems.push_back(index_path.string() + ": tensor '" + tensor + "' maps to " + file.dump() +
                               ", not a file name in the checkpoint directory");
            continue;
          }
          weight_map[tensor] = file.get<std::string>();
          if (seen.insert(file.get<std::string>()).second) file_names.push_back(file.get<std::string>());
        }
        if (weight_map.empty()) problems.push_back(index_path.string() + ": weight_map is empty");
      }
    }
  } else if (std::filesystem::exists(single_path, code)) {
    file_names.push_back("model.safetensors");
  } else {
    problems.push_back(directory.string() + ": no model.safetensors or model.safetensors.index.json");
  }

  HfCheckpoint checkpoint;
  checkpoint.directory_ = directory;
  std::map<std::string, int> file_index;
  for (const std::string& name : file_names) {
    if (auto file = detail::try_open_safetensors(directory / name, problems)) {
      file_index[name] = static_cast<int>(checkpoint.files_.size());
      checkpoint.files_.push_back(std::move(*file));
    }
  }

  if (check.spec && problems.empty()) {
    const std::vector<core::HfTensor> tensors = check.spec->hf_tensors();
    checkpoint.by_id_.assign(tensors.size(), {-1, -1});
    for (const core::HfTensor& tensor : tensors) {
      if (problems.size() >= kMaxProblems) break;
      std::string file_name = "model.safetensors";
      if (!weight_map.empty()) {
        auto it = weight_map.find(tensor.name);
        if (it == weight_map.end()) {
          problems.push_back(index_path.string() + ": tensor '" + tensor.name + "' is missing from weight_map");
          continue;
        }
        file_name = it->second;
      }
      auto opened_file = file_index.find(file_name);
      if (opened_file == file_index.end()) continue;  // its problem is already listed
      const SafetensorsFile& file = checkpoint.files_[static_cast<std::size_t>(opened_file->second)];
      const SafetensorsTensor* stored = file.find(tensor.name);
      if (stored == nullptr) {
        problems.push_back(file.path().string() + ": tensor '" + tensor.name + "' is missing");
        continue;
      }
      const std::vector<std::int64_t> shape = expected_shape(tensor);
      if (stored->shape != shape) {
        problems.push_back(file.path().string() + ": tensor '" + tensor.name + "' has shape " +
                           shape_text(stored->shape) + ", config.json implies " + shape_text(shape));
        continue;
      }
      checkpoint.by_id_[static_cast<std::size_t>(tensor.id)] = {opened_file->second,
                                                                static_cast<int>(stored - file.tensors().data())};
    }
    if (problems.size() >= kMaxProblems) problems.push_back("(more problems not listed)");
  }
  if (problems.empty() && check.spec && opened != nullptr) {
    checkpoint.spec_ = *check.spec;
    *opened = std::move(checkpoint);
  }
  return check;
}

HfCheckpoint HfCheckpoint::open(const std::filesystem::path& directory) {
  HfCheckpoint checkpoint;
  const CheckpointCheck check = check_hf_checkpoint(directory, &checkpoint);
  if (!check.problems.empty()) detail::throw_problems(check.problems);
  return checkpoint;
}

namespace {

// True for the bit pattern of a NaN or an infinity: every exponent bit set.
bool non_finite(const std::uint8_t* element, DType dtype) {
  if (dtype == DType::kFloat32) {
    std::uint32_t bits = 0;
    std::memcpy(&bits, element, 4);
    return (bits & 0x7F800000u) == 0x7F800000u;
  }
  std::uint16_t bits = 0;
  std::memcpy(&bits, element, 2);
  return dtype == DType::kBFloat16 ? (bits & 0x7F80u) == 0x7F80u : (bits & 0x7C00u) == 0x7C00u;
}

}  // namespace

std::vector<std::string> HfCheckpoint::non_finite_weights() const {
  constexpr std::int64_t kChunkBytes = std::int64_t{8} << 20;
  std::vector<std::string> found;
  std::vector<std::uint8_t> chunk;
  for (const SafetensorsFile& file : files_) {
    for (const SafetensorsTensor& tensor : file.tensors()) {
      const std::int64_t element_bytes = static_cast<std::int64_t>(core::dtype_size(tensor.dtype));
      const std::int64_t total = tensor.data_end - tensor.data_begin;
      std::int64_t count = 0;
      std::int64_t first = -1;
      for (std::int64_t offset = 0; offset < total; offset += kChunkBytes) {
        const std::int64_t bytes = std::min(kChunkBytes, total - offset);
        chunk.resize(static_cast<std::size_t>(bytes));
        file.read_raw(tensor, offset, bytes, chunk.data());
        for (std::int64_t at = 0; at + element_bytes <= bytes; at += element_bytes) {
          if (!non_finite(chunk.data() + at, tensor.dtype)) continue;
          if (count++ == 0) first = (offset + at) / element_bytes;
        }
      }
      if (count > 0) {
        found.push_back(file.path().string() + ": tensor '" + tensor.name + "' holds " + std::to_string(count) +
                        " non-finite value" + (count == 1 ? "" : "s") + " (NaN or Inf), the first at element " +
                        std::to_string(first));
      }
    }
  }
  return found;
}

std::vector<std::filesystem::path> HfCheckpoint::files() const {
  std::vector<std::filesystem::path> paths;
  for (const SafetensorsFile& file : files_) paths.push_back(file.path());
  return paths;
}

const SafetensorsTensor& HfCheckpoint::stored(const core::HfTensor& tensor) const {
  if (tensor.id < 0 || static_cast<std::size_t>(tensor.id) >= by_id_.size() ||
      by_id_[static_cast<std::size_t>(tensor.id)].first < 0) {
    HS_THROW(core::ConfigError, directory_.string() + ": no tensor '" + tensor.name + "' (id " +
                                    std::to_string(tensor.id) + ") in this checkpoint's model");
  }
  const auto [file, index] = by_id_[static_cast<std::size_t>(tensor.id)];
  const SafetensorsTensor& stored_tensor =
      files_[static_cast<std::size_t>(file)].tensors()[static_cast<std::size_t>(index)];
  if (stored_tensor.name != tensor.name) {
    HS_THROW(core::ConfigError, directory_.string() + ": tensor id " + std::to_string(tensor.id) + " is '" +
                                    stored_tensor.name + "' here, not '" + tensor.name +
                                    "' (a spec other than the checkpoint's?)");
  }
  return stored_tensor;
}

void HfCheckpoint::read(const core::HfTensor& tensor, DType dtype, void* destination) const {
  const SafetensorsTensor& stored_tensor = stored(tensor);
  files_[static_cast<std::size_t>(by_id_[static_cast<std::size_t>(tensor.id)].first)].read(stored_tensor, dtype,
                                                                                           destination);
}

void HfCheckpoint::read_block(const core::HfTensor& tensor, std::int64_t row, std::int64_t col, std::int64_t rows,
                              std::int64_t cols, DType dtype, void* destination,
                              std::int64_t destination_stride) const {
  const SafetensorsTensor& stored_tensor = stored(tensor);
  if (row < 0 || col < 0 || rows < 0 || cols < 0 || row > tensor.rows - rows || col > tensor.cols - cols ||
      destination_stride < cols) {
    HS_THROW(core::ConfigError, "read_block of '" + tensor.name + "': rows [" + std::to_string(row) + ", +" +
                                    std::to_string(rows) + ") cols [" + std::to_string(col) + ", +" +
                                    std::to_string(cols) + ") stride " + std::to_string(destination_stride) +
                                    " do not fit its " + std::to_string(tensor.rows) + " x " +
                                    std::to_string(tensor.cols));
  }
  const SafetensorsFile& file = files_[static_cast<std::size_t>(by_id_[static_cast<std::size_t>(tensor.id)].first)];
  const std::int64_t in_size = static_cast<std::int64_t>(core::dtype_size(stored_tensor.dtype));
  const std::int64_t out_size = static_cast<std::int64_t>(core::dtype_size(dtype));
  auto* out = static_cast<unsigned char*>(destination);
  std::vector<unsigned char> staging;
  // Whole rows into a dense destination: one read (converted in bounded chunks by read_raw + convert_dtype below).
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t offset = ((row + r) * tensor.cols + col) * in_size;
    unsigned char* row_out = out + r * destination_stride * out_size;
    if (dtype == stored_tensor.dtype) {
      file.read_raw(stored_tensor, offset, cols * in_size, row_out);
    } else {
      staging.resize(static_cast<std::size_t>(cols * in_size));
      file.read_raw(stored_tensor, offset, cols * in_size, staging.data());
      convert_dtype(staging.data(), stored_tensor.dtype, row_out, dtype, cols);
    }
  }
}

void write_hf_checkpoint(const std::filesystem::path& directory, const core::ModelSpec& spec,
                         const std::function<void(const core::HfTensor&, void*)>& fill, std::int64_t max_shard_bytes) {
  std::filesystem::create_directories(directory);
  const std::vector<core::HfTensor> tensors = spec.hf_tensors();
  const std::int64_t element = static_cast<std::int64_t>(core::dtype_size(spec.dtype));
  // Group tensors into shards in checkpoint order.
  std::vector<std::vector<const core::HfTensor*>> shards(1);
  std::int64_t shard_bytes = 0;
  std::int64_t total_bytes = 0;
  for (const core::HfTensor& tensor : tensors) {
    const std::int64_t bytes = tensor.numel() * element;
    if (max_shard_bytes > 0 && shard_bytes > 0 && shard_bytes + bytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(&tensor);
    shard_bytes += bytes;
    total_bytes += bytes;
  }
  const bool sharded = shards.size() > 1;
  json weight_map = json::object();
  for (std::size_t s = 0; s < shards.size(); ++s) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
    const std::string file_name = sharded ? std::string(name) : std::string("model.safetensors");
    std::vector<std::vector<unsigned char>> data;
    std::vector<SafetensorsEntry> entries;
    data.reserve(shards[s].size());
    for (const core::HfTensor* tensor : shards[s]) {
      data.emplace_back(static_cast<std::size_t>(tensor->numel() * element));
      fill(*tensor, data.back().data());
      entries.push_back({tensor->name, spec.dtype, expected_shape(*tensor), data.back().data()});
      weight_map[tensor->name] = file_name;
    }
    write_safetensors(directory / file_name, entries, {{"format", "pt"}});
  }
  if (sharded) {
    const json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
    write_text_file(directory / "model.safetensors.index.json", index.dump(2) + "\n");
  }
  write_text_file(directory / "config.json", hf_config_json(spec));
}

void HfCheckpoint::read_buffer(const core::ModelSpec& spec, const core::BufferLayout& layout, void* host) const {
  const std::vector<core::HfTensor> tensors = spec.hf_tensors();
  const auto element = static_cast<std::int64_t>(core::dtype_size(layout.dtype));
  auto* base = static_cast<std::uint8_t*>(host);
  std::fill(base, base + layout.bytes, std::uint8_t{0});
  for (const core::LocalTensor& tensor : layout.tensors) {
    for (const core::Block& block : tensor.blocks) {
      read_block(tensors[static_cast<std::size_t>(block.hf_tensor)], block.hf_row, block.hf_col, block.rows, block.cols,
                 layout.dtype, base + tensor.offset_bytes + (block.local_row * tensor.cols + block.local_col) * element,
                 tensor.cols);
    }
  }
}

}  // namespace hybridshard::service
