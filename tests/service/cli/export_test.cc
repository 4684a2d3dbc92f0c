// `hybridshard export` end to end (label multirank: its ranks are Gloo threads on 127.0.0.1): a Hugging Face
// checkpoint written from the independent reference's full tensors, exported through the train layout into vLLM
// shards; every tensor of every shard file equals the reference's vLLM tensor bit for bit. Odd layouts: vocabulary
// padding, GQA with fewer KV heads than tp', qwen2 biases, tied embeddings, experts (EP/ETP to vLLM's fused MoE).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "hybridshard/core/inference_layout.h"
#include "hybridshard/core/model_spec.h"
#include "hybridshard/service/checkpoint/hf_checkpoint.h"
#include "hybridshard/service/checkpoint/safetensors.h"
#include "reference.h"

namespace hybridshard::service {
namespace {

namespace fs = std::filesystem;
constexpr std::uint32_t kVersion = 7;

struct ExportCase {
  std::string name;
  core::ModelSpec spec;
  int train_tp = 1;
  int train_pp = 1;
  int rollout_tp = 1;
  int world = 0;                 // 0: train tp x pp (data parallel 1)
  std::string extra_train = "";  // more train keys (expert parallelism), YAML lines under train:
  bool expert_parallel = false;  // rollout.enable_expert_parallel
};

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class ExportTest : public ::testing::TestWithParam<ExportCase> {
 protected:
  void SetUp() override {
    dir_ =
        fs::temp_directory_path() / ("hybridshard-export-test-" + std::to_string(::getpid()) + "-" + GetParam().name);
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_P(ExportTest, shards_equal_the_reference_vllm_tensors_bit_for_bit) {
  const ExportCase& c = GetParam();
  const fs::path checkpoint = dir_ / "checkpoint";
  write_hf_checkpoint(checkpoint, c.spec, [&](const core::HfTensor& tensor, void* data) {
    const reference::ExpectedTensor full = reference::full_tensor(c.spec, tensor.name, kVersion);
    const std::size_t element = core::dtype_size(c.spec.dtype);
    auto* out = static_cast<std::uint8_t*>(data);
    for (std::size_t i = 0; i < full.values.size(); ++i) {
      reference::encode(full.values[i], c.spec.dtype, out + i * element);
    }
  });
  const int world = c.world > 0 ? c.world : c.train_tp * c.train_pp;
  const fs::path job = dir_ / "job.yaml";
  std::ofstream(job) << "model:\n  checkpoint: " << checkpoint.string() << "\n"
                     << "train:\n  tensor_model_parallel_size: " << c.train_tp
                     << "\n  pipeline_model_parallel_size: " << c.train_pp << "\n"
                     << c.extra_train << "rollout:\n  tensor_model_parallel_size: " << c.rollout_tp
                     << "\n  enable_expert_parallel: " << (c.expert_parallel ? "true" : "false") << "\n"
                     << "runtime:\n  world_size: " << world << "\n  backend: gloo\n  cpu_device_memory: 4GiB\n"
                     << "metrics:\n  listen: \"\"\n";
  const fs::path out = dir_ / "out";
  const fs::path log = dir_ / "export.log";
  const std::string command = std::string(HYBRIDSHARD_BIN_DIR) + "/hybridshard export " + job.string() + " --out " +
                              out.string() + " >" + log.string() + " 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << read_text(log);

  core::InferenceLayout inference;
  inference.tp = c.rollout_tp;
  inference.world_size = world;
  inference.expert_parallel = c.expert_parallel;
  std::size_t files = 0;
  for (const auto& entry : fs::directory_iterator(out)) {
    ++files;
    EXPECT_EQ(entry.path().extension(), ".safetensors") << entry.path() << ": only the shards, nothing staged";
  }
  EXPECT_EQ(files, static_cast<std::size_t>(c.rollout_tp));
  for (int rank = 0; rank < c.rollout_tp; ++rank) {
    const SafetensorsFile file = SafetensorsFile::open(out / ("rank-" + std::to_string(rank) + ".safetensors"));
    EXPECT_EQ(file.metadata().at("hybridshard.inference_tp_rank"), std::to_string(rank));
    const core::BufferLayout layout = core::inference_param_buffer(c.spec, inference, rank);
    const std::vector<std::uint8_t> expected =
        reference::expected_inference_buffer(c.spec, inference, rank, kVersion, layout);
    ASSERT_EQ(file.tensors().size(), layout.tensors.size());
    std::vector<std::uint8_t> actual(static_cast<std::size_t>(layout.bytes), 0);
    for (const core::LocalTensor& tensor : layout.tensors) {
      const SafetensorsTensor* stored = file.find(tensor.name);
      ASSERT_NE(stored, nullptr) << "rank " << rank << ": no " << tensor.name;
      EXPECT_EQ(stored->shape, tensor.shape) << tensor.name;
      ASSERT_EQ(stored->dtype, c.spec.dtype) << tensor.name;
      file.read_raw(*stored, 0, stored->bytes(), actual.data() + tensor.offset_bytes);
    }
    EXPECT_EQ(reference::first_difference(layout, expected, actual.data(), actual.size()), "") << "rank " << rank;
  }
}

core::ModelSpec spec_of(const std::string& preset, core::Architecture architecture, bool tied, core::DType dtype,
                        int kv_heads = 2) {
  core::ModelSpec spec = *core::model_preset(preset);
  spec.num_key_value_heads = kv_heads;
  spec.architecture = architecture;
  spec.tie_word_embeddings = tied;
  spec.dtype = dtype;
  return spec;
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, ExportTest,
    ::testing::Values(
        // vocabulary 500: Megatron pads to 512 (128 x tp), vLLM to 512 (64 x tp') with other shard boundaries
        ExportCase{"tp2_pp2_to_tp2_bf16", spec_of("tiny", core::Architecture::kLlama, false, core::DType::kBFloat16), 2,
                   2, 2},
        // 2 KV heads over tp' 4: each KV head on two ranks; qwen2 biases; tied embeddings; fp32; train dp 2
        ExportCase{"qwen2_tied_tp1_pp2_to_tp4_fp32",
                   spec_of("tiny", core::Architecture::kQwen2, true, core::DType::kFloat32), 1, 2, 4, 4},
        ExportCase{"tp4_to_tp1_fp16", spec_of("tiny", core::Architecture::kLlama, false, core::DType::kFloat16, 4), 4,
                   1, 1}),
    [](const ::testing::TestParamInfo<ExportCase>& case_info) { return case_info.param.name; });

// Mixture of experts: the checkpoint holds HF's per-expert tensors (mlp.experts.E.gate_proj.weight ...,
// block_sparse_moe.experts.E.w1.weight ..., qwen2_moe's mlp.shared_expert.gate_proj.weight ...); the reference stacks
// them into vLLM's w13_weight / w2_weight and splits the shared expert itself.
core::ModelSpec small_moe(core::Architecture architecture, core::DType dtype) {
  core::ModelSpec spec = *core::model_preset("tiny");
  spec.architecture = architecture;
  spec.num_hidden_layers = 2;
  spec.head_dim = architecture == core::Architecture::kQwen3Moe ? 24 : 0;
  spec.num_experts = 4;
  spec.num_experts_per_tok = 2;
  spec.moe_intermediate_size = 32;
  if (architecture == core::Architecture::kMixtral) spec.intermediate_size = 32;  // Mixtral's config: experts' width
  if (architecture == core::Architecture::kQwen2Moe) spec.shared_expert_intermediate_size = 48;
  spec.dtype = dtype;
  return spec;
}

INSTANTIATE_TEST_SUITE_P(
    Experts, ExportTest,
    ::testing::Values(
        // train EP 2 over dp 2 -> vLLM's tensor-parallel experts on tp' 2
        ExportCase{"qwen3_moe_ep2_to_tp2_experts", small_moe(core::Architecture::kQwen3Moe, core::DType::kBFloat16), 1,
                   1, 2, 2, "  expert_model_parallel_size: 2\n"},
        // train tp 2, ETP 1, EP 2 -> vLLM expert parallel on tp' 2, fp32
        ExportCase{"mixtral_tp2_etp1_ep2_to_vllm_ep2", small_moe(core::Architecture::kMixtral, core::DType::kFloat32),
                   2, 1, 2, 2, "  expert_model_parallel_size: 2\n  expert-tensor-parallel-size: 1\n", true},
        // qwen2_moe (biases, shared expert and its gate from HF's mlp.shared_expert.* names): train pp 2, dp 2, EP 2
        // -> vLLM tensor-parallel experts and shared expert on tp' 4
        ExportCase{"qwen2_moe_pp2_ep2_to_tp4_experts", small_moe(core::Architecture::kQwen2Moe, core::DType::kBFloat16),
                   1, 2, 4, 4, "  expert_model_parallel_size: 2\n"}),
    [](const ::testing::TestParamInfo<ExportCase>& case_info) { return case_info.param.name; });

}  // namespace
}  // namespace hybridshard::service
