// Hugging Face checkpoint directories: config.json, single and sharded safetensors, every tensor checked.
#include "hybridshard/service/checkpoint/hf_checkpoint.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "hybridshard/core/error.h"
#include "hybridshard/core/train_layout.h"

namespace hybridshard::service {
namespace {

class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("hs-checkpoint-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
};

// Element i of tensor t: a value exact in fp32 and distinct across tensors.
float value_of(int tensor, std::int64_t index) { return static_cast<float>(tensor * 1000 + index % 1000); }

core::ModelSpec tiny_spec(core::Architecture architecture = core::Architecture::kLlama) {
  core::ModelSpec spec = *core::model_preset("tiny");
  spec.architecture = architecture;
  spec.num_hidden_layers = 2;
  spec.dtype = core::DType::kFloat32;
  return spec;
}

void write_tiny(const std::filesystem::path& directory, const core::ModelSpec& spec, std::int64_t max_shard = 0) {
  write_hf_checkpoint(
      directory, spec,
      [](const core::HfTensor& tensor, void* data) {
        auto* out = static_cast<float*>(data);
        for (std::int64_t i = 0; i < tensor.numel(); ++i) out[i] = value_of(tensor.id, i);
      },
      max_shard);
}

std::string check_text(const std::filesystem::path& directory) {
  std::string text;
  for (const std::string& problem : check_hf_checkpoint(directory).problems) text += problem + "\n";
  return text;
}

TEST(HfCheckpointTest, config_json_of_a_llama_3_8b_reads_into_a_model_spec) {
  const std::string config = R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 14336, "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "vocab_size": 128256, "rope_theta": 500000.0, "rms_norm_eps": 1e-05, "tie_word_embeddings": false,
    "torch_dtype": "bfloat16", "max_position_embeddings": 8192, "rope_scaling": null})";
  const core::ModelSpec spec = parse_hf_config(config, "config.json");
  EXPECT_EQ(spec.architecture, core::Architecture::kLlama);
  EXPECT_EQ(spec.num_hidden_layers, 32);
  EXPECT_EQ(spec.num_key_value_heads, 8);
  EXPECT_EQ(spec.vocab_size, 128256);
  EXPECT_EQ(spec.rope_theta, 500000.0);
  EXPECT_EQ(spec.rms_norm_eps, 1e-5);
  EXPECT_EQ(spec.dtype, core::DType::kBFloat16);
  EXPECT_EQ(spec.max_position_embeddings, 8192);
}

TEST(HfCheckpointTest, bad_config_json_names_the_key) {
  try {
    parse_hf_config(R"({"model_type": "mistral", "hidden_size": "big"})", "/x/config.json");
    FAIL() << "no error";
  } catch (const core::ConfigError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("/x/config.json: model_type 'mistral' is not supported"), std::string::npos) << message;
    EXPECT_NE(message.find("hidden_size must be a whole number"), std::string::npos) << message;
    EXPECT_NE(message.find("missing num_hidden_layers"), std::string::npos) << message;
  }
  EXPECT_THROW(parse_hf_config("not json", "config.json"), core::ConfigError);
}

// Qwen3-30B-A3B's and Mixtral-8x7B's published config.json (the keys that shape the model).
TEST(HfCheckpointTest, config_json_of_qwen3_moe_and_mixtral_reads_their_experts) {
  const core::ModelSpec qwen = parse_hf_config(R"({
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 2048, "head_dim": 128,
    "intermediate_size": 6144, "moe_intermediate_size": 768, "num_experts": 128, "num_experts_per_tok": 8,
    "norm_topk_prob": true, "decoder_sparse_step": 1, "mlp_only_layers": [], "num_attention_heads": 32,
    "num_hidden_layers": 48, "num_key_value_heads": 4, "vocab_size": 151936, "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-06, "max_position_embeddings": 40960, "tie_word_embeddings": false,
    "attention_bias": false, "torch_dtype": "bfloat16"})",
                                               "config.json");
  core::ModelSpec preset = *core::model_preset("qwen3-30b-a3b");
  EXPECT_EQ(qwen.num_parameters(), preset.num_parameters());
  EXPECT_EQ(qwen.num_experts, 128);
  EXPECT_EQ(qwen.moe_intermediate_size, 768);
  EXPECT_TRUE(qwen.norm_topk_prob);
  const core::ModelSpec mixtral = parse_hf_config(R"({
    "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": 4096,
    "intermediate_size": 14336, "num_local_experts": 8, "num_experts_per_tok": 2, "num_attention_heads": 32,
    "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 32000, "rope_theta": 1e6,
    "rms_norm_eps": 1e-05, "max_position_embeddings": 32768, "tie_word_embeddings": false,
    "torch_dtype": "bfloat16"})",
                                                  "config.json");
  EXPECT_EQ(mixtral.num_parameters(), core::model_preset("mixtral-8x7b")->num_parameters());
  EXPECT_EQ(mixtral.moe_intermediate_size, 14336);
  // What hybridshard writes reads back the same.
  preset.decoder_sparse_step = 2;
  preset.mlp_only_layers = {3, 5};
  const core::ModelSpec again = parse_hf_config(hf_config_json(preset), "config.json");
  EXPECT_EQ(again.mlp_only_layers, preset.mlp_only_layers);
  EXPECT_EQ(again.num_parameters(), preset.num_parameters());
  try {
    parse_hf_config(R"({"model_type": "qwen3_moe", "hidden_size": 64, "intermediate_size": 128,
      "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 100, "num_experts": 4,
      "mlp_only_layers": "all"})",
                    "/x/config.json");
    FAIL() << "expected a ConfigError";
  } catch (const core::ConfigError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("/x/config.json: missing num_experts_per_tok"), std::string::npos) << message;
    EXPECT_NE(message.find("missing moe_intermediate_size"), std::string::npos) << message;
    EXPECT_NE(message.find("mlp_only_layers must be a list of layer numbers"), std::string::npos) << message;
  }
}

// Qwen1.5-MoE-A2.7B's published config.json (the keys that shape the model; no mlp_only_layers, as published).
TEST(HfCheckpointTest, config_json_of_qwen2_moe_reads_its_shared_expert) {
  const core::ModelSpec qwen = parse_hf_config(R"({
    "architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe", "hidden_size": 2048,
    "intermediate_size": 5632, "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632,
    "num_experts": 60, "num_experts_per_tok": 4, "norm_topk_prob": false, "decoder_sparse_step": 1,
    "num_attention_heads": 16, "num_hidden_layers": 24, "num_key_value_heads": 16, "vocab_size": 151936,
    "rope_theta": 1000000.0, "rms_norm_eps": 1e-06, "max_position_embeddings": 8192, "max_window_layers": 21,
    "sliding_window": 32768, "use_sliding_window": false, "tie_word_embeddings": false, "torch_dtype": "bfloat16"})",
                                               "config.json");
  const core::ModelSpec preset = *core::model_preset("qwen1.5-moe-a2.7b");
  EXPECT_EQ(qwen.architecture, core::Architecture::kQwen2Moe);
  EXPECT_EQ(qwen.shared_expert_intermediate_size, 5632);
  EXPECT_FALSE(qwen.norm_topk_prob);
  EXPECT_TRUE(qwen.has_qkv_bias());
  EXPECT_EQ(qwen.num_parameters(), preset.num_parameters());
  // What hybridshard writes reads back the same.
  const core::ModelSpec again = parse_hf_config(hf_config_json(preset), "config.json");
  EXPECT_EQ(again.architecture, core::Architecture::kQwen2Moe);
  EXPECT_EQ(again.shared_expert_intermediate_size, 5632);
  EXPECT_EQ(again.num_parameters(), preset.num_parameters());
  try {
    parse_hf_config(R"({"model_type": "qwen2_moe", "hidden_size": 64, "intermediate_size": 128,
      "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 100, "num_experts": 4,
      "num_experts_per_tok": 2, "moe_intermediate_size": 32, "qkv_bias": false})",
                    "/x/config.json");
    FAIL() << "expected a ConfigError";
  } catch (const core::ConfigError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("/x/config.json: missing shared_expert_intermediate_size"), std::string::npos) << message;
    EXPECT_NE(message.find("qwen2_moe"), std::string::npos) << message;
    EXPECT_NE(message.find("qkv_bias false is not supported"), std::string::npos) << message;
  }
}

TEST(HfCheckpointTest, written_checkpoint_opens_and_reads_back_every_tensor) {
  for (auto architecture : {core::Architecture::kLlama, core::Architecture::kQwen2}) {
    TempDir dir;
    const core::ModelSpec spec = tiny_spec(architecture);
    write_tiny(dir.path(), spec);
    const HfCheckpoint checkpoint = HfCheckpoint::open(dir.path());
    EXPECT_EQ(checkpoint.spec().architecture, architecture);
    EXPECT_EQ(checkpoint.spec().num_hidden_layers, 2);
    EXPECT_EQ(checkpoint.files().size(), 1u);
    for (const core::HfTensor& tensor : spec.hf_tensors()) {
      std::vector<float> data(static_cast<std::size_t>(tensor.numel()));
      checkpoint.read(tensor, core::DType::kFloat32, data.data());
      for (std::int64_t i = 0; i < tensor.numel(); i += 97) {
        ASSERT_EQ(data[static_cast<std::size_t>(i)], value_of(tensor.id, i)) << tensor.name << " " << i;
      }
    }
  }
}

TEST(HfCheckpointTest, read_block_takes_a_sub_rectangle_converted) {
  TempDir dir;
  const core::ModelSpec spec = tiny_spec();
  write_tiny(dir.path(), spec);
  const HfCheckpoint checkpoint = HfCheckpoint::open(dir.path());
  const core::HfTensor q = spec.hf_tensors()[2];  // layer 0 q_proj [heads*d, hidden]
  ASSERT_EQ(q.kind, core::HfKind::kQ);
  const std::int64_t rows = 3;
  const std::int64_t cols = 5;
  const std::int64_t stride = 8;
  std::vector<float> block(static_cast<std::size_t>(rows * stride), -1.0f);
  checkpoint.read_block(q, 4, 7, rows, cols, core::DType::kFloat32, block.data(), stride);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) {
      EXPECT_EQ(block[static_cast<std::size_t>(r * stride + c)], value_of(q.id, (4 + r) * q.cols + 7 + c));
    }
    EXPECT_EQ(block[static_cast<std::size_t>(r * stride + cols)], -1.0f);  // untouched past the block
  }
  EXPECT_THROW(checkpoint.read_block(q, q.rows - 1, 0, 2, 1, core::DType::kFloat32, block.data(), 1),
               core::ConfigError);
}

TEST(HfCheckpointTest, read_buffer_fills_a_train_shard_with_padding_rows_zero) {
  TempDir dir;
  const core::ModelSpec spec = tiny_spec();  // vocab 500, hidden 64: tp 2 pads the vocabulary to 512
  write_tiny(dir.path(), spec);
  const HfCheckpoint checkpoint = HfCheckpoint::open(dir.path());
  core::TrainLayout train;
  train.tp = 2;
  const std::vector<core::BufferLayout> buffers = core::train_param_buffers(spec, train, /*tp_rank=*/1, 0);
  ASSERT_EQ(buffers.size(), 1u);
  const core::BufferLayout& layout = buffers[0];
  std::vector<float> host(static_cast<std::size_t>(layout.bytes / 4), -1.0f);
  checkpoint.read_buffer(spec, layout, host.data());

  auto tensor_named = [&](const std::string& name) -> const core::LocalTensor& {
    for (const core::LocalTensor& tensor : layout.tensors) {
      if (tensor.name == name) return tensor;
    }
    throw std::runtime_error("no tensor " + name);
  };
  auto hf_id = [&](core::HfKind kind, int layer) {
    for (const core::HfTensor& tensor : spec.hf_tensors()) {
      if (tensor.kind == kind && (tensor.layer == layer || layer < 0)) return tensor.id;
    }
    throw std::runtime_error("no hf tensor");
  };
  // Rows 256..511 of the padded vocabulary: 256..499 from the checkpoint, 500..511 zero.
  const core::LocalTensor& embedding = tensor_named("embedding.word_embeddings.weight");
  ASSERT_EQ(embedding.rows, 256);
  const int embedding_id = hf_id(core::HfKind::kEmbedding, -1);
  for (std::int64_t r = 0; r < 256; ++r) {
    for (std::int64_t c = 0; c < 64; ++c) {
      const float got = host[static_cast<std::size_t>(embedding.offset_bytes / 4 + r * 64 + c)];
      const float want = 256 + r < 500 ? value_of(embedding_id, (256 + r) * 64 + c) : 0.0f;
      ASSERT_EQ(got, want) << "embedding row " << 256 + r << " col " << c;
    }
  }
  // o_proj of layer 1 split by columns: this rank holds columns 32..63.
  const core::LocalTensor& proj = tensor_named("decoder.layers.1.self_attention.linear_proj.weight");
  ASSERT_EQ(proj.cols, 32);
  const int o_id = hf_id(core::HfKind::kO, 1);
  for (std::int64_t r = 0; r < 64; ++r) {
    for (std::int64_t c = 0; c < 32; ++c) {
      ASSERT_EQ(host[static_cast<std::size_t>(proj.offset_bytes / 4 + r * 32 + c)], value_of(o_id, r * 64 + 32 + c))
          << "o_proj row " << r << " col " << c;
    }
  }
  for (float value : host) ASSERT_NE(value, -1.0f) << "every byte of the buffer is written";
}

TEST(HfCheckpointTest, sharded_checkpoint_with_index_opens_and_reads) {
  TempDir dir;
  const core::ModelSpec spec = tiny_spec();
  write_tiny(dir.path(), spec, 64 << 10);
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "model.safetensors.index.json"));
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "model.safetensors"));
  const HfCheckpoint checkpoint = HfCheckpoint::open(dir.path());
  EXPECT_GT(checkpoint.files().size(), 1u);
  const core::HfTensor last = spec.hf_tensors().back();
  std::vector<std::uint16_t> bf16(static_cast<std::size_t>(last.numel()));
  checkpoint.read(last, core::DType::kBFloat16, bf16.data());
  float first = 0;
  std::uint32_t bits = static_cast<std::uint32_t>(bf16[1]) << 16;
  std::memcpy(&first, &bits, 4);
  // 20001 in bf16: the step between 2^14 and 2^15 is 128, so it rounds to 156 * 128 = 19968.
  ASSERT_EQ(value_of(last.id, 1), 20001.0f);
  EXPECT_EQ(first, 19968.0f);
  std::vector<float> exact(static_cast<std::size_t>(last.numel()));
  checkpoint.read(last, core::DType::kFloat32, exact.data());
  EXPECT_EQ(exact[1], 20001.0f);
}

TEST(HfCheckpointTest, missing_pieces_are_all_reported_by_file_and_tensor) {
  TempDir dir;
  const core::ModelSpec spec = tiny_spec();
  EXPECT_NE(check_text(dir.path() / "absent").find("no such directory"), std::string::npos);
  EXPECT_NE(check_text(dir.path()).find("config.json: does not exist"), std::string::npos);
  EXPECT_NE(check_text(dir.path()).find("no model.safetensors or model.safetensors.index.json"), std::string::npos);

  // A file that lacks one tensor and has another with the wrong shape.
  write_tiny(dir.path(), spec);
  const std::vector<core::HfTensor> tensors = spec.hf_tensors();
  std::vector<std::vector<float>> data;
  std::vector<SafetensorsEntry> entries;
  for (const core::HfTensor& tensor : tensors) {
    if (tensor.name == "model.norm.weight") continue;
    data.emplace_back(static_cast<std::size_t>(tensor.numel()), 0.0f);
    std::vector<std::int64_t> shape =
        tensor.is_1d ? std::vector<std::int64_t>{tensor.rows} : std::vector<std::int64_t>{tensor.rows, tensor.cols};
    if (tensor.name == "model.layers.1.mlp.down_proj.weight") shape = {tensor.cols, tensor.rows};
    entries.push_back({tensor.name, core::DType::kFloat32, shape, data.back().data()});
  }
  write_safetensors(dir.path() / "model.safetensors", entries);
  const std::string text = check_text(dir.path());
  EXPECT_NE(text.find("model.safetensors: tensor 'model.norm.weight' is missing"), std::string::npos) << text;
  EXPECT_NE(text.find("tensor 'model.layers.1.mlp.down_proj.weight' has shape [128, 64], config.json implies "
                      "[64, 128]"),
            std::string::npos)
      << text;
  EXPECT_THROW(HfCheckpoint::open(dir.path()), core::ConfigError);
}

TEST(HfCheckpointTest, truncated_shard_and_escaping_index_are_refused) {
  TempDir dir;
  const core::ModelSpec spec = tiny_spec();
  write_tiny(dir.path(), spec, 64 << 10);
  std::filesystem::path shard;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    if (entry.path().filename().string().rfind("model-00002-of-", 0) == 0) shard = entry.path();
  }
  ASSERT_FALSE(shard.empty()) << "expected several shards";
  std::filesystem::resize_file(shard, std::filesystem::file_size(shard) / 2);
  const std::string truncated = check_text(dir.path());
  EXPECT_NE(truncated.find(shard.filename().string() + ": tensor '"), std::string::npos) << truncated;
  EXPECT_NE(truncated.find("truncated file?"), std::string::npos) << truncated;

  std::ofstream(dir.path() / "model.safetensors.index.json")
      << R"({"weight_map": {"model.embed_tokens.weight": "../../etc/passwd"}})";
  EXPECT_NE(check_text(dir.path()).find("not a file name in the checkpoint directory"), std::string::npos);
  std::ofstream(dir.path() / "model.safetensors.index.json") << "[]";
  EXPECT_NE(check_text(dir.path()).find("no \"weight_map\" object"), std::string::npos);
}

}  // namespace
}  // namespace hybridshard::service
