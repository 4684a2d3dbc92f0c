#include "hybridshard/service/observe/record.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "hybridshard/core/error.h"
#include "hybridshard/service/events/event_json.h"

namespace hybridshard::service {
namespace {

namespace fs = std::filesystem;

class RecordTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("hybridshard-record-test-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

nlohmann::json event(int index) {
  return {{"type", "transfer"}, {"time", 1.0 + index}, {"rank", index % 4},
          {"iteration", 0},     {"path", "network"},   {"bytes", index},
          {"seconds", 0.5},     {"peer", -1},          {"operation", "enter.round0.recv"}};
}

TEST_F(RecordTest, writes_under_a_temporary_name_and_renames_on_close) {
  const std::string file = path("run.jsonl");
  RecordWriter writer(file);
  writer.write(event(0));
  writer.write(job_end_event(true, "", 3.0, 4.0));
  EXPECT_TRUE(fs::exists(file + ".partial"));
  EXPECT_FALSE(fs::exists(file));
  writer.close();
  EXPECT_FALSE(fs::exists(file + ".partial"));
  ASSERT_TRUE(fs::exists(file));

  RecordReader reader = RecordReader::open(file);
  std::vector<nlohmann::json> events = reader.read_all();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0], event(0));
  EXPECT_EQ(events[1]["type"], "job_end");
  EXPECT_TRUE(reader.complete());
  EXPECT_EQ(reader.truncated_last_line(), 0);
}

TEST_F(RecordTest, each_line_reaches_the_file_as_it_is_written) {
  const std::string file = path("run.jsonl");
  RecordWriter writer(file);
  writer.write(event(0));
  writer.write(event(1));
  std::ifstream partial(file + ".partial");
  std::stringstream text;
  text << partial.rdbuf();
  EXPECT_EQ(text.str(), event_line(event(0)) + "\n" + event_line(event(1)) + "\n");
}

TEST_F(RecordTest, a_crashed_writer_leaves_every_complete_line_in_the_partial_file) {
  const std::string file = path("run.jsonl");
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    RecordWriter writer(file);
    for (int i = 0; i < 5; ++i) writer.write(event(i));
    ::_exit(0);  // a crash: no close(), no destructors
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_FALSE(fs::exists(file));
  ASSERT_TRUE(fs::exists(file + ".partial"));
  RecordReader reader = RecordReader::open(file + ".partial");
  std::vector<nlohmann::json> events = reader.read_all();
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(events[4], event(4));
  EXPECT_FALSE(reader.complete());
}

TEST_F(RecordTest, refuses_the_partial_record_of_a_run_that_is_still_writing_it) {
  const std::string file = path("run.jsonl");
  RecordWriter live(file);
  live.write(event(0));
  try {
    RecordWriter writer(file);
    FAIL() << "no error";
  } catch (const core::Error& error) {
    EXPECT_NE(std::string(error.what()).find("run.jsonl.partial is being written by a run that is still going"),
              std::string::npos)
        << error.what();
  }
  EXPECT_EQ(fs::file_size(file + ".partial"), event_line(event(0)).size() + 1);
}

TEST_F(RecordTest, moves_the_partial_record_of_a_run_that_died_to_incomplete_and_starts_afresh) {
  const std::string file = path("run.jsonl");
  std::ofstream(file + ".partial") << event_line(event(0)) << "\n";
  std::ofstream(file + ".incomplete") << "an older one\n";
  RecordWriter writer(file);
  EXPECT_EQ(writer.stale_partial_moved_to(), file + ".incomplete.2");
  EXPECT_EQ(fs::file_size(file + ".incomplete.2"), event_line(event(0)).size() + 1);
  writer.write(event(1));
  writer.close();
  std::vector<nlohmann::json> events = RecordReader::open(file).read_all();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0], event(1));
}

TEST_F(RecordTest, only_a_new_regular_file_is_written_unless_replacing_a_record) {
  const std::string fifo = path("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  fs::create_directory(path("dir"));
  const std::string earlier = path("earlier.jsonl");
  std::ofstream(earlier) << "earlier\n";
  for (const auto& [name, expect] :
       {std::pair{fifo, "is a FIFO"}, std::pair{path("dir"), "is a directory"}, std::pair{earlier, "exists"}}) {
    try {
      RecordWriter writer(name);
      FAIL() << "no error for " << name;
    } catch (const core::Error& error) {
      EXPECT_NE(std::string(error.what()).find(name + " " + expect), std::string::npos) << error.what();
    }
    EXPECT_FALSE(fs::exists(name + ".partial"));
  }
  EXPECT_THROW(RecordWriter(fifo, RecordOptions{.replace = true}), core::Error);
  RecordWriter replacing(earlier, RecordOptions{.replace = true});
  replacing.write(event(2));
  replacing.close();
  EXPECT_EQ(RecordReader::open(earlier).read_all().at(0), event(2));
}

TEST_F(RecordTest, a_failed_write_keeps_the_file_as_incomplete_and_close_says_so) {
  const std::string file = path("run.jsonl");
  RecordWriter writer(file);
  writer.write(event(0));
  ::signal(SIGXFSZ, SIG_IGN);
  rlimit previous{};
  ::getrlimit(RLIMIT_FSIZE, &previous);
  rlimit small = previous;
  small.rlim_cur = fs::file_size(file + ".partial") + 10;  // the next line does not fit
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  writer.write(event(1));
  ::setrlimit(RLIMIT_FSIZE, &previous);
  writer.write(event(2));  // dropped: the record already lost a line
  EXPECT_NE(writer.failure().find("writing line 2 of " + file + ".partial failed"), std::string::npos)
      << writer.failure();
  try {
    writer.close();
    FAIL() << "no error";
  } catch (const core::Error& error) {
    EXPECT_NE(std::string(error.what()).find("kept in " + file + ".incomplete"), std::string::npos) << error.what();
  }
  EXPECT_FALSE(fs::exists(file));
  EXPECT_FALSE(fs::exists(file + ".partial"));
  EXPECT_TRUE(fs::exists(file + ".incomplete"));
}

TEST_F(RecordTest, a_cut_last_line_is_an_error_unless_accepted_and_then_reported) {
  std::string text = event_line(event(0)) + "\n" + event_line(event(1)) + "\n" + event_line(event(2)).substr(0, 20);
  {
    std::istringstream in(text);
    RecordReader reader(in, "run.jsonl.partial");
    try {
      reader.read_all();
      FAIL() << "no error";
    } catch (const core::Error& error) {
      EXPECT_NE(std::string(error.what()).find("run.jsonl.partial: line 3"), std::string::npos)
          << "[" << error.what() << "]";
    }
  }
  std::istringstream in(text);
  RecordReader reader(in, "run.jsonl.partial", RecordReadOptions{.accept_truncated_last_line = true});
  std::vector<nlohmann::json> events = reader.read_all();
  EXPECT_EQ(events.size(), 2u);
  EXPECT_EQ(reader.truncated_last_line(), 3);
}

TEST_F(RecordTest, a_malformed_line_in_the_middle_is_always_an_error_with_its_number) {
  for (const std::string& bad : {std::string("{\"type\": "), std::string(""), std::string("{\"no_type\": 1}")}) {
    std::istringstream in(event_line(event(0)) + "\n" + bad + "\n" + event_line(event(1)) + "\n");
    RecordReader reader(in, "run.jsonl", RecordReadOptions{.accept_truncated_last_line = true});
    try {
      reader.read_all();
      FAIL() << "no error for '" << bad << "'";
    } catch (const core::Error& error) {
      EXPECT_NE(std::string(error.what()).find("line 2"), std::string::npos) << error.what();
    }
  }
}

TEST_F(RecordTest, lines_written_from_many_threads_stay_whole) {
  const std::string file = path("run.jsonl");
  constexpr int kThreads = 4;
  constexpr int kPerThread = 250;
  {
    RecordWriter writer(file);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&writer, t] {
        for (int i = 0; i < kPerThread; ++i) writer.write(event(t * kPerThread + i));
      });
    }
    for (std::thread& thread : threads) thread.join();
    EXPECT_EQ(writer.lines_written(), kThreads * kPerThread);
  }  // the destructor closes
  std::vector<nlohmann::json> events = RecordReader::open(file).read_all();
  ASSERT_EQ(events.size(), static_cast<std::size_t>(kThreads * kPerThread));
  std::vector<bool> seen(kThreads * kPerThread, false);
  for (const nlohmann::json& e : events) seen.at(e["bytes"].get<std::size_t>()) = true;
  EXPECT_EQ(std::count(seen.begin(), seen.end(), true), kThreads * kPerThread);
}

TEST_F(RecordTest, writing_after_close_is_an_error) {
  RecordWriter writer(path("run.jsonl"));
  writer.close();
  writer.close();  // idempotent
  EXPECT_THROW(writer.write(event(0)), core::Error);
}

TEST_F(RecordTest, an_unwritable_place_is_an_error_naming_the_file) {
  try {
    RecordWriter writer(path("no/such/dir/run.jsonl"));
    FAIL() << "no error";
  } catch (const core::Error& error) {
    EXPECT_NE(std::string(error.what()).find("no/such/dir/run.jsonl is in a directory that does not exist"),
              std::string::npos)
        << error.what();
  }
}

}  // namespace
}  // namespace hybridshard::service
