// A rank process's RankResult, written as text and read back by the bench that started it: every field and every
// bit of every double comes back.
#include <gtest/gtest.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "detail/rank_result_file.h"
#include "hybridshard/core/error.h"

namespace hybridshard::service::bench::detail {
namespace {

std::uint64_t bits(double value) { return std::bit_cast<std::uint64_t>(value); }

void expect_same_bits(const std::vector<double>& actual, const std::vector<double>& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  for (std::size_t i = 0; i < actual.size(); ++i) EXPECT_EQ(bits(actual[i]), bits(expected[i])) << "seconds " << i;
}

void expect_same_series(const std::map<SeriesKey, Series>& actual, const std::map<SeriesKey, Series>& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  for (const auto& [key, series] : expected) {
    const auto found = actual.find(key);
    ASSERT_NE(found, actual.end()) << std::get<0>(key) << " " << std::get<1>(key) << " " << std::get<2>(key);
    const Series& back = found->second;
    expect_same_bits(back.seconds, series.seconds);
    EXPECT_EQ(back.bytes, series.bytes);
    EXPECT_EQ(back.extra_bytes, series.extra_bytes);
    EXPECT_EQ(back.driver_bytes, series.driver_bytes);
    EXPECT_EQ(back.host_bytes, series.host_bytes);
    EXPECT_EQ(back.wrong, series.wrong);
    EXPECT_EQ(back.checked, series.checked);
    EXPECT_EQ(back.what, series.what);
  }
}

// Doubles that decimal text with too few digits would not bring back: a third, 0.1, the smallest subnormal, the
// largest double, one ulp above 1, negative zero; and the non-finite ones.
RankResult awkward_result() {
  RankResult result;
  Series& enter = result.phases[{"enter", "hybridshard", "free/driver"}];
  enter.seconds = {1.0 / 3.0,
                   0.1,
                   std::numeric_limits<double>::denorm_min(),
                   std::numeric_limits<double>::max(),
                   std::nextafter(1.0, 2.0),
                   -0.0,
                   std::numeric_limits<double>::infinity(),
                   0.0123456789012345678};
  enter.bytes = std::int64_t{16} << 30;
  enter.extra_bytes = (std::int64_t{1} << 62) + 1;  // beyond a double's 53 bits
  enter.driver_bytes = -4096;
  enter.host_bytes = 7;
  enter.wrong = 3;
  enter.checked = true;
  Series& exit = result.phases[{"exit", "seed", "offload/cache"}];
  exit.seconds = {2e-3, 2.5e-3};
  exit.checked = false;
  Series& batch = result.phases[{"batch.pre", "-", "-"}];
  batch.seconds = {};
  batch.what = "quotes \" and backslashes \\ and a newline\n and UTF-8: \xC3\xA9";
  Series& bound = result.bounds[{"p2p.hybridshard", "", ""}];
  bound.seconds = {0.0206, 0.0207};
  bound.bytes = 8031309824;
  bound.what = "copy engines reading the peers' memory directly";
  result.steps[{"hybridshard", "enter.free/driver", "enter.round*.recv", "network"}] = {1.0 / 7.0, 123456789};
  result.steps[{"seed", "exit.free/driver", "exit.free", "device_to_device"}] = {5e-324, 0};
  result.notes = {"seed does not apply", "a second note"};
  result.device_description = "cuda:1 (NVIDIA H200, 139.8 GiB)";
  result.shard_bytes = 16060522496;
  result.d2h_bytes = std::int64_t{2} << 30;
  return result;
}

TEST(BenchRankResultTest, round_trips_every_field_and_every_bit) {
  const RankResult result = awkward_result();
  const RankResult back = parse_rank_result(rank_result_text(result), "test");
  expect_same_series(back.phases, result.phases);
  expect_same_series(back.bounds, result.bounds);
  ASSERT_EQ(back.steps.size(), result.steps.size());
  for (const auto& [key, step] : result.steps) {
    ASSERT_EQ(back.steps.count(key), 1u) << std::get<2>(key);
    EXPECT_EQ(bits(back.steps.at(key).seconds), bits(step.seconds));
    EXPECT_EQ(back.steps.at(key).bytes, step.bytes);
  }
  EXPECT_EQ(back.notes, result.notes);
  EXPECT_EQ(back.device_description, result.device_description);
  EXPECT_EQ(back.shard_bytes, result.shard_bytes);
  EXPECT_EQ(back.d2h_bytes, result.d2h_bytes);
}

TEST(BenchRankResultTest, not_a_number_comes_back_as_not_a_number) {
  RankResult result;
  result.phases[{"enter", "seed", "free/driver"}].seconds = {std::numeric_limits<double>::quiet_NaN()};
  const RankResult back = parse_rank_result(rank_result_text(result), "test");
  EXPECT_TRUE(std::isnan(back.phases.at({"enter", "seed", "free/driver"}).seconds.at(0)));
}

TEST(BenchRankResultTest, another_version_or_a_missing_key_is_an_error_naming_the_file) {
  std::string text = rank_result_text(awkward_result());
  const std::string version = "\"version\": " + std::to_string(kRankResultVersion);
  ASSERT_NE(text.find(version), std::string::npos);
  std::string other = text;
  other.replace(other.find(version), version.size(), "\"version\": 99");
  try {
    parse_rank_result(other, "/tmp/rank-1.json");
    FAIL() << "version 99 was read";
  } catch (const core::Error& error) {
    EXPECT_NE(std::string(error.what()).find("/tmp/rank-1.json: version 99"), std::string::npos) << error.what();
  }
  std::string missing = text;
  missing.replace(missing.find("\"shard_bytes\""), 13, "\"shard_size\"");
  try {
    parse_rank_result(missing, "/tmp/rank-0.json");
    FAIL() << "a result without shard_bytes was read";
  } catch (const core::Error& error) {
    EXPECT_NE(std::string(error.what()).find("/tmp/rank-0.json"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("shard_bytes"), std::string::npos) << error.what();
  }
  EXPECT_THROW(parse_rank_result("{\"format\": \"hybridshard-bench-rank-result\", \"version\": 1", "half"),
               core::Error);
}

TEST(BenchRankResultTest, a_result_file_is_written_once_and_read_back) {
  const std::filesystem::path directory =
      std::filesystem::temp_directory_path() / ("hybridshard-bench-rank-result-" + std::to_string(::getpid()));
  std::filesystem::create_directories(directory);
  const RankFiles files = rank_files(directory, 1);
  const std::string text = rank_result_text(awkward_result());
  write_text_file(files.result, text);
  EXPECT_EQ(read_text_file(files.result), text);
  EXPECT_FALSE(std::filesystem::exists(files.result.string() + ".partial"));
  EXPECT_THROW(write_text_file(files.result, text), core::Error);  // never over a file that is there
  EXPECT_THROW(read_text_file(files.error), core::Error);          // none was written
  std::filesystem::remove_all(directory);
}

}  // namespace
}  // namespace hybridshard::service::bench::detail
