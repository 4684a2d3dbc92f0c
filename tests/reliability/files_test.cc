// Files end to end: what `hybridshard run` writes and where. The run record is written only as a regular file: a
// FIFO, a device or a directory named by --record is refused before any rank starts and left as it was; an earlier
// record is refused unless --force; the .partial of a run that died does not block the next one (it is moved to
// .incomplete); a record that cannot be written completely ends the job with exit 1 and keeps the name .incomplete (a
// file size limit set on the running launcher stands in for a full disk); SIGHUP stops the job like SIGTERM and the
// record is finished. The embedded default job reaches the ranks without a temporary file (a planted symbolic link is
// never followed).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "child_process.h"
#include "hybridshard/service/observe/record.h"

namespace hybridshard::testing {
namespace {

namespace fs = std::filesystem;

// The quickstart, short: one iteration (or `iterations`), no HTTP endpoint.
fs::path write_job(const ScratchDir& dir, const std::string& iterations = "1", const std::string& timeout = "30s") {
  const fs::path job = dir / "job.yaml";
  std::ofstream(job) << quickstart_with({{"iterations", iterations}, {"listen", "\"\""}, {"timeout", timeout}});
  return job;
}

ChildResult run_job(const ScratchDir& dir, const std::vector<std::string>& arguments, std::chrono::seconds deadline) {
  std::vector<std::string> argv = {hybridshard_binary()};
  argv.insert(argv.end(), arguments.begin(), arguments.end());
  ChildProcess launcher(argv, {}, dir / "launcher");
  return launcher.wait(deadline);
}

// A job that runs until it is stopped, recording to `record`.
ChildProcess start_endless_job(const ScratchDir& dir, const fs::path& record, const std::string& timeout = "30s") {
  return ChildProcess(
      {hybridshard_binary(), "run", write_job(dir, "1000000", timeout).string(), "--record", record.string()}, {},
      dir / "launcher");
}

bool reached_first_iteration(ChildProcess& launcher) {
  return launcher.wait_for_output([](const std::string& out) { return out.find("iter 1/") != std::string::npos; },
                                  std::chrono::seconds(90));
}

bool is_complete_record(const fs::path& path) {
  service::RecordReader reader = service::RecordReader::open(path.string());
  reader.read_all();
  return reader.complete();
}

mode_t file_type(const fs::path& path) {
  struct stat info {};
  return ::lstat(path.c_str(), &info) == 0 ? (info.st_mode & S_IFMT) : 0;
}

// --record naming something that is not a regular file: refused before any rank starts (no progress line), the thing
// left as it was, no .partial beside it.
struct NotAFile {
  std::string name;
  std::function<bool(const fs::path&)> make;  // false: cannot be made here (skipped)
  mode_t type;
  std::string expect;
};

std::vector<NotAFile> not_files() {
  return {
      {"fifo", [](const fs::path& p) { return ::mkfifo(p.c_str(), 0644) == 0; }, S_IFIFO, "is a FIFO"},
      {"directory", [](const fs::path& p) { return fs::create_directory(p); }, S_IFDIR, "is a directory"},
      // A device node like /dev/null (needs root: CI runs as root).
      {"device", [](const fs::path& p) { return ::mknod(p.c_str(), S_IFCHR | 0666, ::makedev(1, 3)) == 0; }, S_IFCHR,
       "is a character device"},
      {"link_to_fifo",
       [](const fs::path& p) {
         return ::mkfifo((p.string() + ".target").c_str(), 0644) == 0 &&
                ::symlink((p.string() + ".target").c_str(), p.c_str()) == 0;
       },
       S_IFLNK, "is a symbolic link to a FIFO"},
  };
}

class RecordPathTest : public ::testing::TestWithParam<NotAFile> {};

TEST_P(RecordPathTest, is_refused_before_any_rank_starts_and_left_as_it_was) {
  ScratchDir dir("files-record-path");
  const fs::path job = write_job(dir);
  const fs::path record = dir / "record";
  if (!GetParam().make(record)) GTEST_SKIP() << "cannot make a " << GetParam().name << " here";
  const ChildResult run = run_job(dir, {"run", job.string(), "--record", record.string()}, std::chrono::seconds(60));
  ASSERT_FALSE(run.timed_out) << run.describe();
  EXPECT_NE(run.exit_code, 0) << run.describe();
  EXPECT_NE(run.err.find(record.string() + " " + GetParam().expect), std::string::npos) << run.describe();
  EXPECT_EQ(run.out.find("iter 1/"), std::string::npos) << "ranks ran: " << run.describe();
  EXPECT_EQ(file_type(record), GetParam().type);
  EXPECT_FALSE(fs::exists(record.string() + ".partial"));
  // --force never replaces what is not a regular file either.
  const ChildResult forced =
      run_job(dir, {"run", job.string(), "--record", record.string(), "--force"}, std::chrono::seconds(60));
  EXPECT_NE(forced.exit_code, 0) << forced.describe();
  EXPECT_EQ(file_type(record), GetParam().type);
}

std::string not_a_file_name(const ::testing::TestParamInfo<NotAFile>& param) { return param.param.name; }
INSTANTIATE_TEST_SUITE_P(Files, RecordPathTest, ::testing::ValuesIn(not_files()), not_a_file_name);

TEST(RecordFileTest, an_earlier_record_is_refused_unless_forced) {
  ScratchDir dir("files-earlier");
  const fs::path job = write_job(dir);
  const fs::path record = dir / "run.jsonl";
  std::ofstream(record) << "earlier\n";
  const ChildResult refused =
      run_job(dir, {"run", job.string(), "--record", record.string()}, std::chrono::seconds(60));
  EXPECT_NE(refused.exit_code, 0) << refused.describe();
  EXPECT_NE(refused.err.find("--force"), std::string::npos) << refused.describe();
  EXPECT_EQ(refused.out.find("iter 1/"), std::string::npos) << refused.describe();
  EXPECT_EQ(read_text_file(record), "earlier\n");

  const ChildResult forced =
      run_job(dir, {"run", job.string(), "--record", record.string(), "--force", "--quiet"}, std::chrono::seconds(120));
  EXPECT_EQ(forced.exit_code, 0) << forced.describe();
  EXPECT_TRUE(is_complete_record(record));
}

TEST(RecordFileTest, the_partial_record_of_a_run_that_died_is_moved_aside_and_the_next_run_goes_on) {
  ScratchDir dir("files-stale");
  const fs::path job = write_job(dir);
  const fs::path record = dir / "run.jsonl";
  const std::string stale = "{\"type\":\"job\",\"time\":1}\n{\"type\":\"rank_up\",\"ti";  // cut mid-line
  std::ofstream(record.string() + ".partial") << stale;
  const ChildResult run =
      run_job(dir, {"run", job.string(), "--record", record.string(), "--quiet"}, std::chrono::seconds(120));
  EXPECT_EQ(run.exit_code, 0) << run.describe();
  EXPECT_NE(run.err.find("left by a run that did not finish"), std::string::npos) << run.describe();
  EXPECT_TRUE(is_complete_record(record));
  EXPECT_EQ(read_text_file(record.string() + ".incomplete"), stale);
  EXPECT_FALSE(fs::exists(record.string() + ".partial"));
}

TEST(RecordFileTest, a_record_that_cannot_be_written_completely_ends_the_job_and_says_so_in_its_name) {
  ScratchDir dir("files-full");
  const fs::path record = dir / "run.jsonl";
  ChildProcess launcher = start_endless_job(dir, record);
  ASSERT_TRUE(reached_first_iteration(launcher)) << launcher.out() << launcher.err();
  // The disk fills up: a file size limit on the launcher alone (the ranks keep theirs) makes the record's next write
  // fail with EFBIG, as it would with ENOSPC.
  const rlimit full{static_cast<rlim_t>(fs::file_size(record.string() + ".partial") + 1024), RLIM_INFINITY};
  ASSERT_EQ(::prlimit(launcher.pid(), RLIMIT_FSIZE, &full, nullptr), 0) << std::strerror(errno);
  const ChildResult run = launcher.wait(std::chrono::seconds(60));
  ASSERT_FALSE(run.timed_out) << run.describe();
  EXPECT_EQ(run.exit_code, 1) << run.describe();
  EXPECT_NE(run.out.find("failed: the run record could not be written"), std::string::npos) << run.describe();
  EXPECT_NE(run.err.find(record.string() + ".incomplete"), std::string::npos) << run.describe();
  EXPECT_FALSE(fs::exists(record));
  EXPECT_FALSE(fs::exists(record.string() + ".partial"));
  EXPECT_TRUE(fs::exists(record.string() + ".incomplete"));
}

TEST(SignalTest, sighup_stops_the_job_at_a_boundary_and_finishes_the_record) {
  ScratchDir dir("files-sighup");
  const fs::path record = dir / "run.jsonl";
  ChildProcess launcher = start_endless_job(dir, record);
  ASSERT_TRUE(reached_first_iteration(launcher)) << launcher.out() << launcher.err();
  launcher.signal(SIGHUP);
  const ChildResult run = launcher.wait(std::chrono::seconds(60));
  ASSERT_FALSE(run.timed_out) << run.describe();
  EXPECT_EQ(run.exit_code, 128 + SIGHUP) << run.describe();
  EXPECT_NE(run.out.find("stopped by SIGHUP"), std::string::npos) << run.describe();
  EXPECT_FALSE(fs::exists(record.string() + ".partial"));
  ASSERT_TRUE(fs::exists(record));
  EXPECT_TRUE(is_complete_record(record));
  // Nothing blocks the next run's record.
  const ChildResult next =
      run_job(dir, {"run", write_job(dir).string(), "--record", (dir / "next.jsonl").string(), "--quiet"},
              std::chrono::seconds(120));
  EXPECT_EQ(next.exit_code, 0) << next.describe();
}

// A launcher stopped for longer than runtime.timeout (Ctrl-Z, then fg) either keeps the job or names itself as the
// cause; a rank is never blamed for the launcher's own silence (it was "rank 0 stopped answering").
TEST(SignalTest, a_launcher_paused_past_the_timeout_survives_or_names_the_pause) {
  ScratchDir dir("files-paused");
  const fs::path record = dir / "run.jsonl";
  ChildProcess launcher = start_endless_job(dir, record, "10s");
  ASSERT_TRUE(reached_first_iteration(launcher)) << launcher.out() << launcher.err();
  launcher.signal(SIGSTOP);
  std::this_thread::sleep_for(std::chrono::seconds(15));
  launcher.signal(SIGCONT);
  const bool ended = launcher.wait_for_output(
      [](const std::string& out) { return out.find("hybridshard: failed") != std::string::npos; },
      std::chrono::seconds(30));
  if (!ended) launcher.signal(SIGINT);  // it survived: stop it
  const ChildResult run = launcher.wait(std::chrono::seconds(60));
  ASSERT_FALSE(run.timed_out) << run.describe();
  EXPECT_NE(run.out.find("hybridshard: the launcher was paused for 1"), std::string::npos) << run.describe();
  if (ended) {
    EXPECT_EQ(run.exit_code, 1) << run.describe();
    EXPECT_NE(run.out.find("failed: the launcher was paused for 1"), std::string::npos) << run.describe();
  } else {
    EXPECT_EQ(run.exit_code, 130) << run.describe();
  }
  EXPECT_EQ(run.out.find("stopped answering"), std::string::npos) << run.describe();
}

// The old launcher wrote the embedded default job to $TMPDIR/hybridshard-job-PID.yaml through whatever was there.
// Links are planted at every name of that form the launcher could get; none may be followed, and nothing may be left.
TEST(DefaultJobTest, reaches_the_ranks_without_a_predictable_temporary_file) {
  ScratchDir dir("files-default-job");
  const fs::path tmp = dir / "tmp";
  fs::create_directories(tmp);
  const fs::path target = dir / "target";
  std::ofstream(target) << "precious\n";
  long last_pid = 0;
  std::ifstream("/proc/sys/kernel/ns_last_pid") >> last_pid;
  std::set<fs::path> planted;
  for (long pid = last_pid + 1; pid <= last_pid + 400; ++pid) {
    const fs::path link = tmp / ("hybridshard-job-" + std::to_string(pid) + ".yaml");
    fs::create_symlink(target, link);
    planted.insert(link);
  }
  ChildProcess launcher({hybridshard_binary(), "run", "--metrics-listen", "", "--quiet"}, {{"TMPDIR", tmp.string()}},
                        dir / "launcher");
  const ChildResult run = launcher.wait(std::chrono::seconds(120));
  EXPECT_EQ(run.exit_code, 0) << run.describe();
  EXPECT_EQ(read_text_file(target), "precious\n");
  std::set<fs::path> left;
  for (const fs::directory_entry& entry : fs::directory_iterator(tmp)) left.insert(entry.path());
  EXPECT_EQ(left, planted);
}

}  // namespace
}  // namespace hybridshard::testing
