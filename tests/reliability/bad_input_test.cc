// Bad input end to end: `hybridshard validate` and `hybridshard run --record` on malformed job files and on broken
// checkpoints. Each must end with a diagnostic naming the file (and line for YAML), exit 2 (validate, and run on a
// bad job file) or non-zero, within bounded memory (1 GiB of address space, through prlimit) and time, and leave no
// record behind (neither the file nor its .partial).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <regex>
#include <string>
#include <vector>

#include "child_process.h"
#include "hybridshard/core/model_spec.h"
#include "hybridshard/service/checkpoint/hf_checkpoint.h"
#include "hybridshard/service/checkpoint/safetensors.h"

namespace hybridshard::testing {
namespace {

namespace fs = std::filesystem;

constexpr const char* kAddressSpaceLimit = "--as=1073741824";

// Runs `hybridshard ARGS...` under a 1 GiB address-space limit (when prlimit is there) with a 60 s deadline.
ChildResult run_hybridshard(const ScratchDir& dir, const std::vector<std::string>& arguments) {
  std::vector<std::string> argv;
  if (::access("/usr/bin/prlimit", X_OK) == 0) argv = {"/usr/bin/prlimit", kAddressSpaceLimit, "--"};
  argv.push_back(hybridshard_binary());
  argv.insert(argv.end(), arguments.begin(), arguments.end());
  ChildProcess child(argv, {}, dir / ("hybridshard-" + arguments.front()));
  return child.wait(std::chrono::seconds(60));
}

struct BadJob {
  std::string name;
  std::string text;
  std::string expect;  // a piece of the diagnostic
};

std::string alias_bomb() {
  std::string text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  char previous = 'a';
  for (char level = 'b'; level <= 'k'; ++level) {
    text += std::string(1, level) + ": &" + level + " [";
    for (int i = 0; i < 10; ++i) text += std::string(i ? ", " : "") + "*" + previous;
    text += "]\n";
    previous = level;
  }
  return text + "model:\n  preset: tiny\n";
}

std::vector<BadJob> bad_jobs() {
  std::string binary;
  for (int i = 0; i < 512; ++i) binary.push_back(static_cast<char>((i * 37) & 0xff));
  return {
      {"syntax_error", "model:\n  preset: tiny\ntrain: {tensor_model_parallel_size: [2\n", "error"},
      {"alias_bomb", alias_bomb(), "alias"},
      {"huge_numbers",
       "model:\n  preset: tiny\n  num_hidden_layers: 99999999999999999999999\nruntime:\n  timeout: 1e308s\n",
       "num_hidden_layers"},
      {"wrong_types", "model: [1, 2]\nschedule:\n  iterations: {a: b}\n", "model"},
      {"duplicate_keys", "model:\n  preset: tiny\nschedule:\n  iterations: 2\n  iterations: 3\n", "iterations"},
      {"unknown_key", "model:\n  preset: tiny\n  hiden_size: 4\n", "hiden_size"},
      {"layout_does_not_divide",
       "model:\n  preset: tiny\ntrain:\n  tensor_model_parallel_size: 3\nruntime:\n  world_size: 4\n  backend: gloo\n",
       "tensor_model_parallel_size"},
      {"empty_file", "", "empty"},
      {"binary_file", binary, "error"},
  };
}

class BadJobTest : public ::testing::TestWithParam<BadJob> {};

TEST_P(BadJobTest, validate_and_run_exit_2_with_file_and_line_and_leave_no_record) {
  const BadJob& bad = GetParam();
  ScratchDir dir("bad-job");
  const fs::path job = dir / "job.yaml";
  std::ofstream(job, std::ios::binary) << bad.text;

  const ChildResult validate = run_hybridshard(dir, {"validate", job.string()});
  ASSERT_FALSE(validate.timed_out) << validate.describe();
  EXPECT_EQ(validate.exit_code, 2) << validate.describe();
  // Diagnostics read FILE:LINE:COL: error: ... (or FILE: error: for a problem of the whole file).
  const std::regex located(std::regex_replace(job.string(), std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)") +
                           R"((:\d+:\d+)?: error: )");
  EXPECT_TRUE(std::regex_search(validate.err, located)) << validate.describe();
  EXPECT_NE(validate.err.find(bad.expect), std::string::npos) << validate.describe();

  const fs::path record = dir / "run.jsonl";
  const ChildResult run = run_hybridshard(dir, {"run", job.string(), "--record", record.string(), "--quiet"});
  ASSERT_FALSE(run.timed_out) << run.describe();
  EXPECT_EQ(run.exit_code, 2) << run.describe();
  EXPECT_TRUE(std::regex_search(run.err, located)) << run.describe();
  EXPECT_FALSE(fs::exists(record));
  EXPECT_FALSE(fs::exists(record.string() + ".partial"));
}

std::string bad_job_name(const ::testing::TestParamInfo<BadJob>& param) { return param.param.name; }
INSTANTIATE_TEST_SUITE_P(Malformed, BadJobTest, ::testing::ValuesIn(bad_jobs()), bad_job_name);

// A checkpoint of the tiny model (bf16), written by the project's own writer; the cases then break it.
core::ModelSpec tiny_spec() {
  core::ModelSpec spec = *core::model_preset("tiny");
  spec.dtype = core::DType::kBFloat16;
  return spec;
}

void write_good_checkpoint(const fs::path& directory) {
  service::write_hf_checkpoint(directory, tiny_spec(), [](const core::HfTensor& tensor, void* data) {
    auto* out = static_cast<std::uint16_t*>(data);
    for (std::int64_t i = 0; i < tensor.numel(); ++i) out[i] = 0x3c00 + static_cast<std::uint16_t>(i % 64);
  });
}

// runtime.timeout leaves room for a slow start (a loaded 2-core machine starts 4 ranks in more than 5 s): the broken
// checkpoints are refused before any rank starts, so no case waits for it.
std::string checkpoint_job(const fs::path& checkpoint) {
  return "model:\n  checkpoint: " + checkpoint.string() +
         "\ntrain:\n  tensor_model_parallel_size: 2\n  pipeline_model_parallel_size: 2\n"
         "rollout:\n  tensor_model_parallel_size: 1\n  max_new_tokens: 4\n  prompt_length: 4\n"
         "  prompts_per_train_replica: 4\nmemory:\n  bucket_bytes: 1MiB\nschedule:\n  iterations: 1\n"
         "runtime:\n  world_size: 4\n  backend: gloo\n  timeout: 30s\n  cpu_device_memory: 1GiB\n"
         "metrics:\n  listen: \"\"\n";
}

// Overwrites bytes of a file in place.
void patch(const fs::path& file, std::int64_t offset, const std::string& bytes) {
  std::fstream io(file, std::ios::binary | std::ios::in | std::ios::out);
  io.seekp(offset);
  io.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Replaces the header of a safetensors file by `header` (same data section).
void replace_header(const fs::path& file, const std::string& header) {
  const std::string bytes = read_text_file(file);
  std::uint64_t length = 0;
  std::memcpy(&length, bytes.data(), 8);
  const std::string data = bytes.substr(8 + length);
  std::string padded = header;
  while (padded.size() % 8 != 0) padded.push_back(' ');
  std::uint64_t new_length = padded.size();
  std::string out(reinterpret_cast<const char*>(&new_length), 8);
  std::ofstream(file, std::ios::binary | std::ios::trunc) << out << padded << data;
}

std::string header_of(const fs::path& file) {
  const std::string bytes = read_text_file(file);
  std::uint64_t length = 0;
  std::memcpy(&length, bytes.data(), 8);
  return bytes.substr(8, length);
}

struct BrokenCheckpoint {
  std::string name;
  std::function<void(const fs::path& directory)> breakage;
  std::string expect;  // a piece of the diagnostic
};

std::vector<BrokenCheckpoint> broken_checkpoints() {
  auto weights = [](const fs::path& directory) { return directory / "model.safetensors"; };
  return {
      {"truncated", [=](const fs::path& d) { fs::resize_file(weights(d), fs::file_size(weights(d)) - 100); },
       "model.safetensors"},
      {"header_claims_gigabytes", [=](const fs::path& d) { patch(weights(d), 0, std::string("\0\0\0\0\2\0\0\0", 8)); },
       "the header claims"},
      {"offsets_beyond_the_file",
       [=](const fs::path& d) {
         std::string header = header_of(weights(d));
         const std::size_t at = header.find("\"data_offsets\":[0,");
         ASSERT_NE(at, std::string::npos) << header;
         header.replace(at, std::strlen("\"data_offsets\":[0,"), "\"data_offsets\":[99999999999,");
         replace_header(weights(d), header);
       },
       "model.safetensors"},
      {"unknown_dtype",
       [=](const fs::path& d) {
         std::string header = header_of(weights(d));
         const std::size_t at = header.find("\"BF16\"");
         ASSERT_NE(at, std::string::npos) << header;
         header.replace(at, 6, "\"I64\" ");
         replace_header(weights(d), header);
       },
       "I64"},
      {"missing_tensor",
       [=](const fs::path& d) {
         std::string header = header_of(weights(d));
         const std::size_t at = header.find("\"lm_head.weight\"");
         ASSERT_NE(at, std::string::npos) << header;
         header.replace(at, std::strlen("\"lm_head.weight\""), "\"lm_head.weigh\"");
         replace_header(weights(d), header);
       },
       "lm_head.weight"},
      {"no_config", [](const fs::path& d) { fs::remove(d / "config.json"); }, "config.json"},
      {"config_not_json", [](const fs::path& d) { std::ofstream(d / "config.json") << "{\"model_type\": "; },
       "config.json"},
      // A FIFO is refused, never opened: opening one for reading waits for a writer that never comes.
      {"config_is_a_fifo",
       [](const fs::path& d) {
         fs::remove(d / "config.json");
         ASSERT_EQ(::mkfifo((d / "config.json").c_str(), 0644), 0);
       },
       "config.json: is a FIFO, not a regular file"},
      {"shard_is_a_fifo",
       [=](const fs::path& d) {
         fs::remove(weights(d));
         ASSERT_EQ(::mkfifo(weights(d).c_str(), 0644), 0);
       },
       "model.safetensors: cannot open: it is a FIFO, not a regular file"},
      {"directory_is_a_symlink_loop",
       [](const fs::path& d) {
         fs::remove_all(d);
         fs::create_symlink(d.string() + ".loop", d);
         fs::create_symlink(d, d.string() + ".loop");
       },
       "symbolic link loop"},
  };
}

class BrokenCheckpointTest : public ::testing::TestWithParam<BrokenCheckpoint> {};

TEST_P(BrokenCheckpointTest, validate_and_run_refuse_it_naming_the_file_and_leave_no_record) {
  ScratchDir dir("bad-checkpoint");
  const fs::path checkpoint = dir / "checkpoint";
  write_good_checkpoint(checkpoint);
  GetParam().breakage(checkpoint);
  if (HasFatalFailure()) return;
  const fs::path job = dir / "job.yaml";
  std::ofstream(job) << checkpoint_job(checkpoint);

  const ChildResult validate = run_hybridshard(dir, {"validate", job.string()});
  ASSERT_FALSE(validate.timed_out) << validate.describe();
  EXPECT_EQ(validate.exit_code, 2) << validate.describe();
  EXPECT_NE(validate.err.find(job.string() + ":"), std::string::npos) << validate.describe();
  EXPECT_NE(validate.err.find(GetParam().expect), std::string::npos) << validate.describe();

  const fs::path record = dir / "run.jsonl";
  const ChildResult run = run_hybridshard(dir, {"run", job.string(), "--record", record.string(), "--quiet"});
  ASSERT_FALSE(run.timed_out) << run.describe();
  EXPECT_NE(run.exit_code, 0) << run.describe();
  EXPECT_NE(run.err.find(GetParam().expect), std::string::npos) << run.describe();
  EXPECT_FALSE(fs::exists(record));
  EXPECT_FALSE(fs::exists(record.string() + ".partial"));
}

std::string broken_name(const ::testing::TestParamInfo<BrokenCheckpoint>& param) { return param.param.name; }
INSTANTIATE_TEST_SUITE_P(Malformed, BrokenCheckpointTest, ::testing::ValuesIn(broken_checkpoints()), broken_name);

// The control: the same checkpoint unbroken validates and runs, so the refusals above are about the breakage.
TEST(GoodCheckpointTest, validates_and_runs) {
  ScratchDir dir("good-checkpoint");
  const fs::path checkpoint = dir / "checkpoint";
  write_good_checkpoint(checkpoint);
  const fs::path job = dir / "job.yaml";
  std::ofstream(job) << checkpoint_job(checkpoint);
  const ChildResult validate = run_hybridshard(dir, {"validate", job.string()});
  EXPECT_EQ(validate.exit_code, 0) << validate.describe();
  const fs::path record = dir / "run.jsonl";
  ChildProcess launcher({hybridshard_binary(), "run", job.string(), "--record", record.string(), "--quiet"}, {},
                        dir / "launcher");
  const ChildResult run = launcher.wait(std::chrono::seconds(120));
  EXPECT_EQ(run.exit_code, 0) << run.describe();
  EXPECT_TRUE(fs::exists(record));
}

// NaN and Inf weights load (the header is fine) but `validate` reads every weight and names the file and tensor.
TEST(NonFiniteWeightsTest, validate_names_the_file_and_each_tensor) {
  ScratchDir dir("non-finite");
  const fs::path checkpoint = dir / "checkpoint";
  service::write_hf_checkpoint(checkpoint, tiny_spec(), [](const core::HfTensor& tensor, void* data) {
    auto* out = static_cast<std::uint16_t*>(data);
    for (std::int64_t i = 0; i < tensor.numel(); ++i) out[i] = 0x3c00 + static_cast<std::uint16_t>(i % 64);
    if (tensor.name == "model.layers.1.mlp.down_proj.weight") out[5] = 0x7fc0;  // NaN
    if (tensor.name == "lm_head.weight") out[0] = out[7] = 0xff80;              // -Inf
  });
  const fs::path job = dir / "job.yaml";
  std::ofstream(job) << checkpoint_job(checkpoint);
  const ChildResult validate = run_hybridshard(dir, {"validate", job.string()});
  ASSERT_FALSE(validate.timed_out) << validate.describe();
  EXPECT_EQ(validate.exit_code, 2) << validate.describe();
  const std::string file = (checkpoint / "model.safetensors").string();
  EXPECT_NE(validate.err.find(file + ": tensor 'model.layers.1.mlp.down_proj.weight' holds 1 non-finite value "
                                     "(NaN or Inf), the first at element 5"),
            std::string::npos)
      << validate.describe();
  EXPECT_NE(validate.err.find(file + ": tensor 'lm_head.weight' holds 2 non-finite values (NaN or Inf), the first at "
                                     "element 0"),
            std::string::npos)
      << validate.describe();
}

// `export` runs its ranks as threads of one process, each with a socket to every peer: a world of 64 under a 1024
// descriptor limit is refused before anything starts, naming the limit and the fix, and leaves nothing in --out (it
// aborted half-way with an uncaught c10d SocketError and left .export-PID/).
TEST(DescriptorLimitTest, export_of_a_large_world_under_a_low_limit_is_refused_up_front) {
  if (::access("/usr/bin/prlimit", X_OK) != 0) GTEST_SKIP() << "no prlimit";
  ScratchDir dir("fd-limit");
  const fs::path job = dir / "job.yaml";
  std::ofstream(job) << "model:\n  preset: tiny\ntrain:\n  tensor_model_parallel_size: 2\n"
                        "  pipeline_model_parallel_size: 2\nruntime:\n  world_size: 64\n  backend: gloo\n";
  const fs::path out = dir / "out";
  ChildProcess child({"/usr/bin/prlimit", "--nofile=1024:1024", "--", hybridshard_binary(), "export", job.string(),
                      "--out", out.string()},
                     {}, dir / "export");
  const ChildResult result = child.wait(std::chrono::seconds(60));
  ASSERT_FALSE(result.timed_out) << result.describe();
  EXPECT_EQ(result.exit_code, 1) << result.describe();
  EXPECT_NE(result.err.find("export of 64 ranks as threads of this process needs about"), std::string::npos)
      << result.describe();
  EXPECT_NE(result.err.find("the limit is 1024 (hard limit 1024)"), std::string::npos) << result.describe();
  EXPECT_NE(result.err.find("ulimit -n"), std::string::npos) << result.describe();
  EXPECT_LT(result.seconds, 20) << result.describe();
  EXPECT_TRUE(!fs::exists(out) || fs::is_empty(out)) << "left in " << out;

  // The bench runs Gloo ranks as threads too.
  ChildProcess bench({"/usr/bin/prlimit",
                      "--nofile=256:256",
                      "--",
                      hybridshard_binary(),
                      "bench",
                      "--model",
                      "tiny",
                      "--comm",
                      "gloo",
                      "--tp",
                      "2",
                      "--pp",
                      "2",
                      "--world",
                      "32",
                      "--rollout-tp",
                      "1",
                      "-n",
                      "1",
                      "-w",
                      "0"},
                     {}, dir / "bench");
  const ChildResult benched = bench.wait(std::chrono::seconds(60));
  ASSERT_FALSE(benched.timed_out) << benched.describe();
  EXPECT_NE(benched.exit_code, 0) << benched.describe();
  EXPECT_NE((benched.out + benched.err).find("bench of 32 Gloo ranks as threads needs about"), std::string::npos)
      << benched.describe();
}

// Job files that are not regular files: refused before they are opened (a FIFO would make the reader wait forever),
// each with what it is.
TEST(JobFileTest, a_fifo_or_a_symlink_loop_is_refused_saying_what_it_is) {
  ScratchDir dir("job-file-kinds");
  const fs::path fifo = dir / "fifo.yaml";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  const fs::path loop = dir / "loop.yaml";
  fs::create_symlink(dir / "loop2.yaml", loop);
  fs::create_symlink(loop, dir / "loop2.yaml");
  for (const auto& [job, expect] :
       {std::pair{fifo, "it is a FIFO, not a regular file"}, std::pair{loop, "it is a symbolic link loop"}}) {
    for (const char* command : {"validate", "plan", "run", "export"}) {
      std::vector<std::string> arguments = {command, job.string()};
      if (std::string(command) == "export") arguments.insert(arguments.end(), {"--out", (dir / "out").string()});
      const ChildResult result = run_hybridshard(dir, arguments);
      ASSERT_FALSE(result.timed_out) << command << ": " << result.describe();
      EXPECT_EQ(result.exit_code, 2) << command << ": " << result.describe();
      EXPECT_NE(result.err.find(job.string() + ": error: cannot read the job file: " + expect), std::string::npos)
          << command << ": " << result.describe();
    }
  }
}

// An empty file name is a mistake (an unset shell variable), not "use the embedded default job".
TEST(EmptyPathTest, is_an_error_naming_the_argument) {
  ScratchDir dir("empty-path");
  const fs::path job = dir / "job.yaml";
  std::ofstream(job) << checkpoint_job(dir / "absent");
  const std::vector<std::vector<std::string>> cases = {{"validate", ""},
                                                       {"plan", ""},
                                                       {"run", ""},
                                                       {"export", "", "--out", (dir / "out").string()},
                                                       {"export", job.string(), "--out", ""},
                                                       {"run", "--record", ""}};
  for (const std::vector<std::string>& arguments : cases) {
    const ChildResult result = run_hybridshard(dir, arguments);
    ASSERT_FALSE(result.timed_out) << arguments[0] << ": " << result.describe();
    EXPECT_EQ(result.exit_code, 2) << arguments[0] << ": " << result.describe();
    EXPECT_NE(result.err.find("is an empty file name"), std::string::npos) << arguments[0] << ": " << result.describe();
  }
  EXPECT_FALSE(fs::exists(dir / "out"));
}

TEST(LingerTest, a_negative_or_not_a_number_is_refused) {
  ScratchDir dir("linger");
  for (const char* value : {"-1", "nan", "inf", "1e300"}) {
    const ChildResult result = run_hybridshard(dir, {"run", "--linger", value, "--quiet"});
    ASSERT_FALSE(result.timed_out) << value << ": " << result.describe();
    EXPECT_NE(result.exit_code, 0) << value << ": " << result.describe();
    EXPECT_NE(result.err.find("--linger"), std::string::npos) << value << ": " << result.describe();
    EXPECT_EQ(result.out.find("ranks"), std::string::npos) << value << ": the job ran: " << result.describe();
  }
}

}  // namespace
}  // namespace hybridshard::testing
