// Hugging Face checkpoint directories: config.json, model.safetensors.index.json and the shard files come from the
// input (parts separated by the line "@@@@"; see kPartSeparator). check_hf_checkpoint lists every problem or opens
// the checkpoint, and an opened checkpoint reads every tensor of its spec inside its files. parse_hf_config on the
// first part throws ConfigError or returns a spec that validates.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_io.h"
#include "hybridshard/core/error.h"
#include "hybridshard/service/checkpoint/hf_checkpoint.h"

namespace {

using namespace hybridshard;
using namespace hybridshard::service;

constexpr std::string_view kPartSeparator = "\n@@@@\n";

// Parts: config.json, index (empty: a single-file checkpoint), then the shard files.
void write_directory(const fuzz::ScratchDirectory& scratch, const std::vector<std::string_view>& parts) {
  scratch.clear();
  if (!parts.empty()) scratch.write("config.json", parts[0]);
  const bool sharded = parts.size() > 1 && !parts[1].empty();
  if (sharded) scratch.write("model.safetensors.index.json", parts[1]);
  const std::size_t shards = parts.size() > 2 ? parts.size() - 2 : 0;
  for (std::size_t i = 0; i < shards; ++i) {
    std::string name = "model.safetensors";
    if (sharded) {
      name = "model-0000" + std::to_string(i + 1) + "-of-0000" + std::to_string(shards) + ".safetensors";
    }
    scratch.write(name, parts[i + 2]);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const fuzz::ScratchDirectory scratch;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> parts = fuzz::split_parts(bytes, kPartSeparator);
  if (parts.size() > 6) parts.resize(6);

  try {
    const core::ModelSpec spec = parse_hf_config(parts[0], "config.json");
    if (spec.num_hidden_layers <= 0 || spec.hidden_size <= 0 || spec.vocab_size <= 0) std::abort();
  } catch (const core::ConfigError&) {
  }

  write_directory(scratch, parts);
  HfCheckpoint opened;
  const CheckpointCheck check = check_hf_checkpoint(scratch.path(), &opened);
  for (const std::string& problem : check.problems) {
    if (problem.empty()) std::abort();
  }
  if (!check.problems.empty()) return 0;

  // Opened: every tensor is there with its shape, inside its file, and reads back (small models only).
  const core::ModelSpec& spec = opened.spec();
  if (spec.num_parameters() > (std::int64_t{1} << 20)) return 0;
  for (const core::HfTensor& tensor : spec.hf_tensors()) {
    const SafetensorsTensor& stored = opened.stored(tensor);
    if (stored.numel() != tensor.numel()) std::abort();
    std::vector<float> values(static_cast<std::size_t>(tensor.numel()));
    opened.read(tensor, core::DType::kFloat32, values.data());
    if (tensor.rows > 1 && tensor.cols > 1) {
      float corner[4];
      opened.read_block(tensor, tensor.rows - 2, tensor.cols - 2, 2, 2, core::DType::kFloat32, corner, 2);
    }
  }
  return 0;
}
