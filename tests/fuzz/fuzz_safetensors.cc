// Safetensors files: any bytes, as a whole file or as a header alone, are refused with a ConfigError naming the file,
// or opened so that reading every tensor stays inside the file. Nothing else may happen: no crash, no other exception,
// no allocation the size a header merely claims.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_io.h"
#include "hybridshard/core/error.h"
#include "hybridshard/service/checkpoint/safetensors.h"
#include "safetensors_detail.h"

namespace {

using namespace hybridshard;
using namespace hybridshard::service;

// Reads every tensor of an opened file (the small ones whole, converted to F32; all of them in raw 64-byte pieces at
// both ends), checking what the reader promises.
void read_all(const SafetensorsFile& file) {
  std::int64_t previous_end = 0;
  for (const SafetensorsTensor& tensor : file.tensors()) {
    if (tensor.data_begin < previous_end || tensor.data_end < tensor.data_begin) std::abort();  // sorted, disjoint
    if (file.data_offset() + tensor.data_end > file.file_bytes()) std::abort();                 // inside the file
    if (tensor.bytes() != tensor.numel() * static_cast<std::int64_t>(core::dtype_size(tensor.dtype))) std::abort();
    previous_end = tensor.data_end;
    const std::int64_t piece = std::min<std::int64_t>(64, tensor.bytes());
    std::vector<std::uint8_t> raw(static_cast<std::size_t>(piece));
    file.read_raw(tensor, 0, piece, raw.data());
    file.read_raw(tensor, tensor.bytes() - piece, piece, raw.data());
    if (tensor.numel() <= 4096) {
      std::vector<float> values(static_cast<std::size_t>(tensor.numel()));
      file.read(tensor, core::DType::kFloat32, values.data());
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const fuzz::ScratchDirectory scratch;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);

  // The whole input as a file.
  const auto path = scratch.write("model.safetensors", bytes);
  try {
    const SafetensorsFile file = SafetensorsFile::open(path);
    read_all(file);
  } catch (const core::ConfigError& error) {
    if (std::string_view(error.what()).find("model.safetensors") == std::string_view::npos) std::abort();
  }

  // The input as a header text alone, with a data section of its own length: every problem listed, never thrown.
  std::vector<std::string> problems;
  std::map<std::string, std::string> metadata;
  const std::vector<SafetensorsTensor> tensors = detail::check_safetensors_header(
      bytes, static_cast<std::int64_t>(size), "header.safetensors", &metadata, problems);
  if (!problems.empty() && !tensors.empty()) std::abort();
  for (const std::string& problem : problems) {
    if (problem.rfind("header.safetensors", 0) != 0) std::abort();
  }
  for (const SafetensorsTensor& tensor : tensors) {
    if (tensor.data_begin < 0 || tensor.data_end > static_cast<std::int64_t>(size)) std::abort();
  }
  return 0;
}
