// The safetensors reader against files written byte by byte, the writer by round trip, and every malformed header.
#include "hybridshard/service/checkpoint/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "hybridshard/core/error.h"

namespace hybridshard::service {
namespace {

class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("hs-safetensors-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }
  const std::filesystem::path& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
};

// A file of: 8-byte little-endian `header_length` (the real length unless given), the header text, `data`.
std::filesystem::path write_raw(const std::filesystem::path& path, const std::string& header, const std::string& data,
                                std::uint64_t header_length = 0) {
  std::uint64_t length = header_length != 0 ? header_length : header.size();
  std::string bytes;
  for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<char>((length >> (8 * i)) & 0xff));
  bytes += header + data;
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

std::string float_bytes(const std::vector<float>& values) {
  std::string bytes(values.size() * 4, '\0');
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

std::string open_error(const std::filesystem::path& path) {
  try {
    SafetensorsFile::open(path);
  } catch (const core::ConfigError& error) {
    return error.what();
  }
  return "no error";
}

TEST(SafetensorsTest, reads_a_file_written_byte_by_byte) {
  TempDir dir;
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]},)"
      R"("a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})";
  const auto path = write_raw(dir / "hand.safetensors", header, float_bytes({1.0f, -2.0f, 0.5f, 3.0f, 1.0f / 3}));
  const SafetensorsFile file = SafetensorsFile::open(path);
  ASSERT_EQ(file.tensors().size(), 2u);
  EXPECT_EQ(file.tensors()[0].name, "a");  // sorted by offset
  EXPECT_EQ(file.metadata().at("format"), "pt");
  EXPECT_EQ(file.data_offset(), 8 + static_cast<std::int64_t>(header.size()));
  const SafetensorsTensor* b = file.find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->shape, (std::vector<std::int64_t>{2}));
  std::vector<float> values(2);
  file.read(*b, core::DType::kFloat32, values.data());
  EXPECT_EQ(values[0], 3.0f);
  EXPECT_EQ(values[1], 1.0f / 3);
  // Converted on read: 1/3 in bf16 is 0x3EAB (round to nearest even of 0x3EAAAAAB).
  std::vector<std::uint16_t> bf16(2);
  file.read(*b, core::DType::kBFloat16, bf16.data());
  EXPECT_EQ(bf16[0], 0x4040);
  EXPECT_EQ(bf16[1], 0x3EAB);
  EXPECT_EQ(file.find("c"), nullptr);
}

TEST(SafetensorsTest, writer_round_trips_and_leaves_no_temporary_file) {
  TempDir dir;
  const std::vector<std::uint16_t> weights{0x3f80, 0x4000, 0xbf80, 0x0000, 0x4040, 0x7f80};
  const std::vector<float> bias{0.25f, -8.0f};
  write_safetensors(dir / "out.safetensors",
                    {{"layer.weight", core::DType::kBFloat16, {2, 3}, weights.data()},
                     {"layer.bias", core::DType::kFloat32, {2}, bias.data()}},
                    {{"format", "pt"}});
  const auto entries = std::distance(std::filesystem::directory_iterator(dir.path()), {});
  EXPECT_EQ(entries, 1);
  const SafetensorsFile file = SafetensorsFile::open(dir / "out.safetensors");
  EXPECT_EQ(file.data_offset() % 8, 0);
  const SafetensorsTensor* weight = file.find("layer.weight");
  ASSERT_NE(weight, nullptr);
  EXPECT_EQ(weight->dtype, core::DType::kBFloat16);
  EXPECT_EQ(weight->shape, (std::vector<std::int64_t>{2, 3}));
  std::vector<std::uint16_t> read_back(6);
  file.read(*weight, core::DType::kBFloat16, read_back.data());
  EXPECT_EQ(read_back, weights);
  std::vector<float> as_float(6);
  file.read(*weight, core::DType::kFloat32, as_float.data());
  EXPECT_EQ(as_float[1], 2.0f);
  EXPECT_EQ(as_float[2], -1.0f);
  std::vector<float> bias_back(2);
  file.read(*file.find("layer.bias"), core::DType::kFloat32, bias_back.data());
  EXPECT_EQ(bias_back, bias);
}

TEST(SafetensorsTest, writer_refuses_duplicate_names) {
  TempDir dir;
  const float value = 1.0f;
  EXPECT_THROW(write_safetensors(dir / "dup.safetensors", {{"x", core::DType::kFloat32, {1}, &value},
                                                           {"x", core::DType::kFloat32, {1}, &value}}),
               core::ConfigError);
  EXPECT_FALSE(std::filesystem::exists(dir / "dup.safetensors"));
}

struct MalformedCase {
  const char* name;
  std::string header;
  std::string data;
  std::uint64_t header_length;
  const char* expected;
};

TEST(SafetensorsTest, every_malformed_header_is_refused_with_a_clear_error) {
  const std::string eight = float_bytes({1.0f, 2.0f});
  const std::vector<MalformedCase> cases{
      {"claims_gigabytes", "{}", "", std::uint64_t{1} << 40, "the header claims 1099511627776 bytes"},
      {"longer_than_file", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", eight, 1000, "truncated file?"},
      {"not_json", "{\"a\": [", eight, 0, "header is not valid JSON"},
      {"not_object", "[1, 2]", eight, 0, "header is not a JSON object"},
      {"unknown_dtype", R"({"a":{"dtype":"I8","shape":[8],"data_offsets":[0,8]}})", eight, 0,
       "tensor 'a': unsupported dtype 'I8'; hybridshard reads BF16, F16 and F32"},
      {"size_mismatch", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight, 0,
       "tensor 'a': shape [3] of F32 needs 12 bytes but data_offsets [0, 8] hold 8"},
      {"beyond_file", R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", eight, 0,
       "tensor 'a': data_offsets end at byte 16 of the data but the file holds only 8 data bytes"},
      {"overlap",
       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
       eight, 0, "tensors 'a' and 'b' overlap"},
      {"negative_shape", R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", eight, 0,
       "holds something other than sizes"},
      {"reversed_offsets", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", eight, 0,
       "data_offsets must be [begin, end]"},
      {"huge_shape", R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", eight, 0,
       "needs more than 2^63 bytes"},
      {"missing_dtype", R"({"a":{"shape":[2],"data_offsets":[0,8]}})", eight, 0, "tensor 'a': missing dtype"},
      {"extra_field", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", eight, 0, "unknown field 'x'"},
      {"deep_nesting", std::string(500, '[') + std::string(500, ']'), eight, 0, "nested deeper than 8 levels"},
      {"bad_metadata", R"({"__metadata__":{"k":1}})", "", 0, "__metadata__ value 'k' is not a string"},
  };
  TempDir dir;
  for (const MalformedCase& test : cases) {
    const auto path =
        write_raw(dir / (std::string(test.name) + ".safetensors"), test.header, test.data, test.header_length);
    const std::string message = open_error(path);
    EXPECT_NE(message.find(test.expected), std::string::npos) << test.name << ": " << message;
    EXPECT_NE(message.find(path.string()), std::string::npos) << test.name << " does not name the file: " << message;
  }
}

TEST(SafetensorsTest, mutated_headers_are_refused_or_read_never_anything_else) {
  TempDir dir;
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
      R"("b":{"dtype":"BF16","shape":[4],"data_offsets":[16,24]}})";
  const std::string data(24, '\x01');
  std::mt19937 random(777);
  const std::string alphabet = "{}[]:,\"0123456789-eE.FBI ";
  for (int round = 0; round < 2000; ++round) {
    std::string text = header;
    for (int e = 0; e < 1 + static_cast<int>(random() % 4); ++e) {
      const std::size_t at = random() % text.size();
      if (random() % 2) {
        text[at] = alphabet[random() % alphabet.size()];
      } else {
        text.erase(at, 1 + random() % 4);
      }
    }
    const auto path = write_raw(dir / "mutated.safetensors", text, data);
    try {
      const SafetensorsFile file = SafetensorsFile::open(path);
      for (const SafetensorsTensor& tensor : file.tensors()) {
        ASSERT_LE(tensor.data_end, file.file_bytes() - file.data_offset()) << text;
        std::vector<float> values(static_cast<std::size_t>(tensor.numel()));
        file.read(tensor, core::DType::kFloat32, values.data());
      }
    } catch (const core::ConfigError& error) {
      EXPECT_NE(std::string(error.what()).find(path.string()), std::string::npos) << text;
    }
  }
}

TEST(SafetensorsTest, short_missing_and_empty_files_are_refused) {
  TempDir dir;
  std::ofstream(dir / "short.safetensors", std::ios::binary) << "abc";
  EXPECT_NE(open_error(dir / "short.safetensors").find("too short for a safetensors file"), std::string::npos);
  EXPECT_NE(open_error(dir / "absent.safetensors").find("cannot open"), std::string::npos);
  write_raw(dir / "zero.safetensors", "", "", 0);
  EXPECT_NE(open_error(dir / "zero.safetensors").find("the header claims 0 bytes"), std::string::npos);
}

TEST(SafetensorsTest, dtype_conversion_rounds_to_nearest_even_and_keeps_specials) {
  const std::vector<float> values{
      1.0f, -0.0f, 65504.0f, 1e-7f, 6.1035156e-05f, 70000.0f, std::numeric_limits<float>::infinity()};
  std::vector<std::uint16_t> half(values.size());
  convert_dtype(values.data(), core::DType::kFloat32, half.data(), core::DType::kFloat16,
                static_cast<std::int64_t>(values.size()));
  EXPECT_EQ(half[0], 0x3c00);
  EXPECT_EQ(half[1], 0x8000);
  EXPECT_EQ(half[2], 0x7bff);  // largest finite half
  EXPECT_EQ(half[3], 0x0002);  // subnormal: 1e-7 / 2^-24 = 1.68 -> 2
  EXPECT_EQ(half[4], 0x0400);  // smallest normal
  EXPECT_EQ(half[5], 0x7c00);  // overflows to inf
  EXPECT_EQ(half[6], 0x7c00);
  std::vector<float> back(values.size());
  convert_dtype(half.data(), core::DType::kFloat16, back.data(), core::DType::kFloat32,
                static_cast<std::int64_t>(values.size()));
  EXPECT_EQ(back[0], 1.0f);
  EXPECT_EQ(back[2], 65504.0f);
  EXPECT_FLOAT_EQ(back[3], 2.0f * 5.9604645e-08f);
  // bf16: 1 + 2^-8 is a tie between 1 and 1 + 2^-7: rounds to the even mantissa (1).
  const float tie = 1.0f + 1.0f / 256;
  std::uint16_t bf16 = 0;
  convert_dtype(&tie, core::DType::kFloat32, &bf16, core::DType::kBFloat16, 1);
  EXPECT_EQ(bf16, 0x3f80);
  // NaN stays NaN in both (a payload that would round up into the sign bit included).
  const std::vector<float> nans{std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN(),
                                std::bit_cast<float>(0x7fffffffu)};
  for (const core::DType dtype : {core::DType::kBFloat16, core::DType::kFloat16}) {
    std::vector<std::uint16_t> narrow(nans.size());
    convert_dtype(nans.data(), core::DType::kFloat32, narrow.data(), dtype, static_cast<std::int64_t>(nans.size()));
    std::vector<float> wide(nans.size());
    convert_dtype(narrow.data(), dtype, wide.data(), core::DType::kFloat32, static_cast<std::int64_t>(nans.size()));
    for (std::size_t i = 0; i < nans.size(); ++i) {
      EXPECT_TRUE(std::isnan(wide[i])) << core::dtype_name(dtype) << " " << i << ": " << narrow[i];
      EXPECT_EQ(std::signbit(wide[i]), std::signbit(nans[i])) << core::dtype_name(dtype) << " " << i;
    }
  }
}

}  // namespace
}  // namespace hybridshard::service
