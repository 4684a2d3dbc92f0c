// A newcomer's first job end to end (label multirank: its ranks are Gloo processes on 127.0.0.1): the model's
// shape, train tp 2 x pp 2, rollout tp 1, Gloo and nothing about the batch. `hybridshard validate` accepts it for
// every world the layouts divide, `hybridshard run` runs it, and `hybridshard export` exports it. And the batch a job
// file describes is the batch the ranks run.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace {

namespace fs = std::filesystem;

std::string newcomer_job(int world, int train_pp) {
  return "model:\n  num_hidden_layers: 4\n  hidden_size: 64\n  num_attention_heads: 4\n  num_key_value_heads: 2\n"
         "  intermediate_size: 128\n  vocab_size: 500\n"
         "train:\n  tensor_model_parallel_size: 2\n  pipeline_model_parallel_size: " +
         std::to_string(train_pp) +
         "\nrollout:\n  tensor_model_parallel_size: 1\n"
         "runtime:\n  world_size: " +
         std::to_string(world) + "\n  backend: gloo\n";
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class NewcomerJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("hybridshard-newcomer-test-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Runs `hybridshard ARGS`; returns its exit code, its output in `output`.
  int hybridshard(const std::string& args, std::string& output) {
    const fs::path log = dir_ / "log.txt";
    const std::string command =
        std::string(HYBRIDSHARD_BIN_DIR) + "/hybridshard " + args + " >" + log.string() + " 2>&1 </dev/null";
    const int status = std::system(command.c_str());
    output = read_text(log);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  fs::path write_job(const std::string& name, const std::string& text) {
    const fs::path path = dir_ / name;
    std::ofstream(path) << text;
    return path;
  }

  fs::path dir_;
};

TEST_F(NewcomerJobTest, validates_for_worlds_2_4_and_8_runs_and_exports) {
  std::string output;
  // World 2: pp 1 (tp 2 x pp 2 needs a multiple of 4); 4 and 8: the layout.
  for (const auto& [world, pp] : {std::pair{2, 1}, std::pair{4, 2}, std::pair{8, 2}}) {
    const fs::path job = write_job("world" + std::to_string(world) + ".yaml", newcomer_job(world, pp));
    EXPECT_EQ(hybridshard("validate " + job.string(), output), 0) << output;
    EXPECT_EQ(output.find("error"), std::string::npos) << output;
    EXPECT_EQ(output.find("warning"), std::string::npos) << output;
    const fs::path out = dir_ / ("export" + std::to_string(world));
    EXPECT_EQ(hybridshard("export " + job.string() + " --out " + out.string(), output), 0) << output;
    EXPECT_TRUE(fs::exists(out / "rank-0.safetensors")) << output;
  }
  const fs::path job = dir_ / "world4.yaml";
  ASSERT_EQ(hybridshard("run " + job.string() + " --metrics-listen '' --quiet", output), 0) << output;
  EXPECT_NE(output.find("hybridshard: done: all 4 ranks finished"), std::string::npos) << output;
}

// Explicit prompts are the global batch: each train replica runs its share (prompts_per_train_replica rows), not all
// of them. Train dp 2 and rollout tp 1 on 2 ranks: 4 prompts -> 2 rows per rollout replica, 2 x (3 + 2) = 10 token
// positions of KV cache (the tiny model: 1 KiB each), which is all the cache there is: a replica that ran every
// prompt would need twice that.
TEST_F(NewcomerJobTest, explicit_prompts_are_split_over_the_train_replicas) {
  const fs::path job = write_job("prompts.yaml",
                                 "model: {preset: tiny}\n"
                                 "rollout:\n  prompts: [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]]\n"
                                 "  max_new_tokens: 2\n  kv_cache_bytes: 10KiB\n"
                                 "schedule: {iterations: 1}\n"
                                 "runtime: {world_size: 2, backend: gloo}\n");
  std::string output;
  ASSERT_EQ(hybridshard("run " + job.string() + " --metrics-listen '' --quiet", output), 0) << output;
  EXPECT_NE(output.find("hybridshard: done: all 2 ranks finished"), std::string::npos) << output;
}

}  // namespace
