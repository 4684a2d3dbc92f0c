// A Hugging Face checkpoint directory: config.json (Llama or Qwen2) and the weights in model.safetensors or in the
// shards listed by model.safetensors.index.json. Opening checks everything a later read relies on: the config's
// shape keys, every safetensors header, and that every tensor of ModelSpec::hf_tensors() is there exactly once with
// its shape, in BF16, F16 or F32, inside its file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hybridshard/core/buffer_layout.h"
#include "hybridshard/core/model_spec.h"
#include "hybridshard/service/checkpoint/safetensors.h"

namespace hybridshard::service {

// config.json text -> ModelSpec (architecture from model_type: "llama" or "qwen2"; dtype from torch_dtype, bf16 when
// absent). Throws core::ConfigError naming `file_name` and the key.
core::ModelSpec parse_hf_config(std::string_view json_text, const std::string& file_name);

// The config.json a Hugging Face model of this shape would carry (LlamaForCausalLM / Qwen2ForCausalLM).
std::string hf_config_json(const core::ModelSpec& spec);

class HfCheckpoint;

// Every problem of a checkpoint directory at once (empty when it opened), for `validate`.
struct CheckpointCheck {
  std::vector<std::string> problems;    // each names the file (and the tensor)
  std::optional<core::ModelSpec> spec;  // set when config.json was readable
};

class HfCheckpoint {
 public:
  // Throws core::ConfigError listing every problem (see check_hf_checkpoint).
  static HfCheckpoint open(const std::filesystem::path& directory);

  const std::filesystem::path& directory() const { return directory_; }
  const core::ModelSpec& spec() const { return spec_; }  // from config.json (dtype = torch_dtype)
  std::vector<std::filesystem::path> files() const;

  // Where a tensor is stored; throws core::ConfigError when the spec has no such tensor.
  const SafetensorsTensor& stored(const core::HfTensor& tensor) const;

  // The full tensor converted to `dtype`: rows * cols elements at `destination`.
  void read(const core::HfTensor& tensor, core::DType dtype, void* destination) const;
  // Rows [row, row + rows) and columns [col, col + cols) of the canonical 2-D view, converted to `dtype`, written
  // with `destination_stride` elements between rows.
  void read_block(const core::HfTensor& tensor, std::int64_t row, std::int64_t col, std::int64_t rows,
                  std::int64_t cols, core::DType dtype, void* destination, std::int64_t destination_stride) const;
  // A whole flat buffer of `spec`'s tensors (a train or inference layout) in host memory of layout.bytes: every
  // block read from the checkpoint, zeros where no block lands (vocabulary padding).
  void read_buffer(const core::ModelSpec& spec, const core::BufferLayout& layout, void* host) const;

  // Every stored tensor holding NaN or Inf values, one line each: "FILE: tensor 'NAME' holds 3 non-finite values
  // (NaN or Inf), the first at element 17". Reads every weight once (`validate` does; `run` does not).
  std::vector<std::string> non_finite_weights() const;

 private:
  friend CheckpointCheck check_hf_checkpoint(const std::filesystem::path& directory, HfCheckpoint* opened);
  std::filesystem::path directory_;
  core::ModelSpec spec_;
  std::vector<SafetensorsFile> files_;
  std::vector<std::pair<int, int>> by_id_;  // HfTensor::id -> (file index, tensor index in that file)
};

// Checks a checkpoint directory and reports every problem; with `opened` set, fills it when there are none.
CheckpointCheck check_hf_checkpoint(const std::filesystem::path& directory, HfCheckpoint* opened = nullptr);

// Writes a checkpoint of `spec` into `directory` (created if needed): config.json and model.safetensors, or, when
// `max_shard_bytes` > 0 and the weights are larger, model-0000i-of-0000n.safetensors shards and
// model.safetensors.index.json. `fill` writes a tensor's rows * cols elements (in spec.dtype) to its argument.
void write_hf_checkpoint(const std::filesystem::path& directory, const core::ModelSpec& spec,
                         const std::function<void(const core::HfTensor&, void*)>& fill,
                         std::int64_t max_shard_bytes = 0);

}  // namespace hybridshard::service
