// The safetensors format (https://huggingface.co/docs/safetensors): 8 bytes little-endian header length N, N bytes
// of JSON {"name": {"dtype": "BF16", "shape": [r, c], "data_offsets": [begin, end]}, "__metadata__": {...}}, then
// the data; offsets are relative to the end of the header. Headers are checked strictly before any byte is trusted:
// bounded length, valid JSON, known dtypes (BF16, F16, F32), sizes that match the shape, offsets inside the file
// and not overlapping. Every error names the file and the tensor.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hybridshard/core/dtype.h"

namespace hybridshard::service {

// Headers above this size are refused (Hugging Face's own reader allows 100 MB).
inline constexpr std::int64_t kMaxSafetensorsHeaderBytes = std::int64_t{100} << 20;

struct SafetensorsTensor {
  std::string name;
  core::DType dtype = core::DType::kBFloat16;
  std::vector<std::int64_t> shape;
  std::int64_t data_begin = 0;  // relative to the start of the data section
  std::int64_t data_end = 0;
  std::int64_t numel() const;
  std::int64_t bytes() const { return data_end - data_begin; }
};

// "BF16", "F16", "F32" and back.
std::string_view safetensors_dtype_name(core::DType dtype);

// Parses and checks a header (the JSON text) for a file whose data section has `data_bytes` bytes. Throws
// core::ConfigError listing every problem, each naming `file_name` and the tensor. Tensors sorted by data_begin.
std::vector<SafetensorsTensor> parse_safetensors_header(std::string_view header_json, std::int64_t data_bytes,
                                                        const std::string& file_name,
                                                        std::map<std::string, std::string>* metadata = nullptr);

// Converts `count` elements between the model dtypes (round to nearest even when narrowing).
void convert_dtype(const void* source, core::DType source_dtype, void* destination, core::DType destination_dtype,
                   std::int64_t count);

class SafetensorsFile;
namespace detail {
std::optional<SafetensorsFile> try_open_safetensors(const std::filesystem::path& path,
                                                    std::vector<std::string>& problems);
}  // namespace detail

class SafetensorsFile {
 public:
  // Opens the file and checks its header against its size. Throws core::ConfigError naming the file.
  static SafetensorsFile open(const std::filesystem::path& path);

  SafetensorsFile(SafetensorsFile&& other) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::filesystem::path& path() const { return path_; }
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const SafetensorsTensor* find(std::string_view name) const;  // nullptr when absent
  std::int64_t data_offset() const { return data_offset_; }    // 8 + header length
  std::int64_t file_bytes() const { return file_bytes_; }

  // Reads bytes [offset, offset + count) of the tensor's stored data. Throws core::Error on a short read.
  void read_raw(const SafetensorsTensor& tensor, std::int64_t offset, std::int64_t count, void* destination) const;
  // The whole tensor converted to `dtype`: numel() * dtype_size(dtype) bytes at `destination`.
  void read(const SafetensorsTensor& tensor, core::DType dtype, void* destination) const;

 private:
  friend std::optional<SafetensorsFile> detail::try_open_safetensors(const std::filesystem::path& path,
                                                                     std::vector<std::string>& problems);
  SafetensorsFile() = default;
  std::filesystem::path path_;
  int fd_ = -1;
  std::int64_t file_bytes_ = 0;
  std::int64_t data_offset_ = 0;
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// One tensor to write: `data` holds product(shape) * dtype_size(dtype) bytes, row-major.
struct SafetensorsEntry {
  std::string name;
  core::DType dtype = core::DType::kBFloat16;
  std::vector<std::int64_t> shape;
  const void* data = nullptr;
};

// Writes a safetensors file: to "<path>.tmp.<pid>" first, fsync, then rename, so that a crash never leaves a file
// that looks complete. Tensors are stored in the order given, each 8-byte aligned. Throws core::Error naming the path.
void write_safetensors(const std::filesystem::path& path, const std::vector<SafetensorsEntry>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace hybridshard::service
