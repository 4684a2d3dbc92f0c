#include "hybridshard/service/checkpoint/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <utility>

#include "hybridshard/core/dtype_bits.h"
#include "hybridshard/core/error.h"
#include "hybridshard/service/files/input_file.h"
#include "hybridshard/service/files/output_file.h"
#include "safetensors_detail.h"

namespace hybridshard::service {
namespace {

using core::DType;
using nlohmann::json;

std::optional<DType> parse_safetensors_dtype(std::string_view name) {
  if (name == "BF16") return DType::kBFloat16;
  if (name == "F16") return DType::kFloat16;
  if (name == "F32") return DType::kFloat32;
  return std::nullopt;
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

// Deepest nesting of [ and { outside strings; stops early past `limit`.
int nesting_depth(std::string_view text, int limit) {
  int depth = 0;
  int deepest = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') in_string = true;
    if (c == '[' || c == '{') deepest = std::max(deepest, ++depth);
    if (c == ']' || c == '}') --depth;
    if (deepest > limit) break;
  }
  return deepest;
}

// A non-negative JSON integer that fits int64.
std::optional<std::int64_t> json_count(const json& value) {
  if (value.is_number_unsigned()) {
    const auto v = value.get<std::uint64_t>();
    if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return std::nullopt;
    return static_cast<std::int64_t>(v);
  }
  if (value.is_number_integer()) {
    const auto v = value.get<std::int64_t>();
    if (v < 0) return std::nullopt;
    return v;
  }
  return std::nullopt;
}

void read_exact(int fd, std::int64_t offset, std::int64_t count, void* destination, const std::string& what) {
  auto* out = static_cast<char*>(destination);
  while (count > 0) {
    const std::size_t step = static_cast<std::size_t>(std::min<std::int64_t>(count, std::int64_t{1} << 30));
    const ssize_t got = ::pread(fd, out, step, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) HS_THROW(core::Error, what + ": read failed: " + std::strerror(errno));
    if (got == 0) HS_THROW(core::Error, what + ": the file ended early (truncated while in use?)");
    out += got;
    offset += got;
    count -= got;
  }
}

// One element of `dtype` as a float (exact), and back (rounded to nearest even): core's dtype bits.
float load(const unsigned char* source, DType dtype) {
  if (dtype == DType::kFloat32) {
    float value;
    std::memcpy(&value, source, sizeof value);
    return value;
  }
  std::uint16_t half;
  std::memcpy(&half, source, sizeof half);
  return dtype == DType::kBFloat16 ? core::bf16_bits_to_float(half) : core::fp16_bits_to_float(half);
}

void store(float value, DType dtype, unsigned char* destination) {
  if (dtype == DType::kFloat32) {
    std::memcpy(destination, &value, sizeof value);
    return;
  }
  const std::uint16_t half =
      dtype == DType::kBFloat16 ? core::float_to_bf16_bits(value) : core::float_to_fp16_bits(value);
  std::memcpy(destination, &half, sizeof half);
}

}  // namespace

std::int64_t SafetensorsTensor::numel() const {
  std::int64_t count = 1;
  for (std::int64_t dim : shape) count *= dim;
  return count;
}

std::string_view safetensors_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kBFloat16:
      return "BF16";
    case DType::kFloat16:
      return "F16";
    case DType::kFloat32:
      return "F32";
  }
  return "?";
}

void convert_dtype(const void* source, DType source_dtype, void* destination, DType destination_dtype,
                   std::int64_t count) {
  if (count <= 0) return;
  if (source_dtype == destination_dtype) {
    std::memmove(destination, source, static_cast<std::size_t>(count) * core::dtype_size(source_dtype));
    return;
  }
  const auto* in = static_cast<const unsigned char*>(source);
  auto* out = static_cast<unsigned char*>(destination);
  const std::size_t in_size = core::dtype_size(source_dtype);
  const std::size_t out_size = core::dtype_size(destination_dtype);
  for (std::int64_t i = 0; i < count; ++i) {
    store(load(in + static_cast<std::size_t>(i) * in_size, source_dtype), destination_dtype,
          out + static_cast<std::size_t>(i) * out_size);
  }
}

namespace detail {

void throw_problems(const std::vector<std::string>& problems) {
  std::string message;
  for (const std::string& problem : problems) message += (message.empty() ? "" : "\n") + problem;
  HS_THROW(core::ConfigError, message);
}

std::vector<SafetensorsTensor> check_safetensors_header(std::string_view header_json, std::int64_t data_bytes,
                                                        const std::string& file_name,
                                                        std::map<std::string, std::string>* metadata,
                                                        std::vector<std::string>& problems) {
  const std::size_t problems_before = problems.size();
  const auto problem = [&](const std::string& message) { problems.push_back(file_name + ": " + message); };
  std::vector<SafetensorsTensor> tensors;
  // A safetensors header nests three deep ({name: {shape: [..]}}); refuse deep nesting before parsing.
  if (nesting_depth(header_json, 8) > 8) {
    problem("header is not a safetensors header (JSON nested deeper than 8 levels)");
    return tensors;
  }
  json header;
  try {
    header = json::parse(header_json.begin(), header_json.end());
  } catch (const json::exception& error) {
    problem(std::string("header is not valid JSON: ") + error.what());
    return tensors;
  }
  if (!header.is_object()) {
    problem("header is not a JSON object");
    return tensors;
  }
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) {
        problem("__metadata__ is not an object of strings");
        continue;
      }
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) {
          problem("__metadata__ value '" + key + "' is not a string");
        } else if (metadata != nullptr) {
          (*metadata)[key] = value.get<std::string>();
        }
      }
      continue;
    }
    const std::string where = "tensor '" + name + "'";
    if (name.empty()) {
      problem("a tensor has an empty name");
      continue;
    }
    if (!entry.is_object()) {
      problem(where + ": entry is not an object");
      continue;
    }
    for (const auto& [key, value] : entry.items()) {
      if (key != "dtype" && key != "shape" && key != "data_offsets") problem(where + ": unknown field '" + key + "'");
    }
    SafetensorsTensor tensor;
    tensor.name = name;
    bool ok = true;
    const auto dtype = entry.find("dtype");
    if (dtype == entry.end() || !dtype->is_string()) {
      problem(where + ": missing dtype");
      ok = false;
    } else if (auto parsed = parse_safetensors_dtype(dtype->get<std::string>())) {
      tensor.dtype = *parsed;
    } else {
      problem(where + ": unsupported dtype '" + dtype->get<std::string>() + "'; hybridshard reads BF16, F16 and F32");
      ok = false;
    }
    const auto shape = entry.find("shape");
    if (shape == entry.end() || !shape->is_array() || shape->size() > 8) {
      problem(where + ": missing or bad shape (a list of at most 8 sizes)");
      ok = false;
    } else {
      for (const json& dim : *shape) {
        const auto size = json_count(dim);
        if (!size) {
          problem(where + ": shape " + shape->dump() + " holds something other than sizes");
          ok = false;
          break;
        }
        tensor.shape.push_back(*size);
      }
    }
    const auto offsets = entry.find("data_offsets");
    std::optional<std::int64_t> begin;
    std::optional<std::int64_t> end;
    if (offsets != entry.end() && offsets->is_array() && offsets->size() == 2) {
      begin = json_count((*offsets)[0]);
      end = json_count((*offsets)[1]);
    }
    if (!begin || !end || *begin > *end) {
      problem(where + ": data_offsets must be [begin, end] with 0 <= begin <= end");
      ok = false;
    }
    if (!ok) continue;
    tensor.data_begin = *begin;
    tensor.data_end = *end;
    // numel * element size must equal the byte range, without overflowing on the way.
    std::int64_t expected = static_cast<std::int64_t>(core::dtype_size(tensor.dtype));
    bool overflow = false;
    for (std::int64_t dim : tensor.shape) {
      if (dim != 0 && expected > std::numeric_limits<std::int64_t>::max() / dim) overflow = true;
      expected = overflow ? 0 : expected * dim;
    }
    if (overflow || expected != tensor.bytes()) {
      problem(where + ": shape " + shape_text(tensor.shape) + " of " +
              std::string(safetensors_dtype_name(tensor.dtype)) + " needs " +
              (overflow ? std::string("more than 2^63") : std::to_string(expected)) + " bytes but data_offsets [" +
              std::to_string(tensor.data_begin) + ", " + std::to_string(tensor.data_end) + "] hold " +
              std::to_string(tensor.bytes()));
      continue;
    }
    if (tensor.data_end > data_bytes) {
      problem(where + ": data_offsets end at byte " + std::to_string(tensor.data_end) + " of the data but the file " +
              "holds only " + std::to_string(data_bytes) + " data bytes (truncated file?)");
      continue;
    }
    tensors.push_back(std::move(tensor));
  }
  std::sort(tensors.begin(), tensors.end(), [](const SafetensorsTensor& a, const SafetensorsTensor& b) {
    return std::tie(a.data_begin, a.data_end) < std::tie(b.data_begin, b.data_end);
  });
  for (std::size_t i = 1; i < tensors.size(); ++i) {
    if (tensors[i].data_begin < tensors[i - 1].data_end) {
      problem("tensors '" + tensors[i - 1].name + "' and '" + tensors[i].name + "' overlap in the data");
    }
  }
  if (problems.size() != problems_before) tensors.clear();
  return tensors;
}

std::optional<SafetensorsFile> try_open_safetensors(const std::filesystem::path& path,
                                                    std::vector<std::string>& problems) {
  const std::string name = path.string();
  SafetensorsFile file;
  file.path_ = path;
  std::string problem;
  file.fd_ = open_input_file(path, problem);  // a FIFO or device is refused, not opened
  if (file.fd_ < 0) {
    problems.push_back(name + ": cannot open: it " + problem);
    return std::nullopt;
  }
  struct stat info {};
  if (::fstat(file.fd_, &info) != 0) {
    problems.push_back(name + ": cannot read: " + std::strerror(errno));
    return std::nullopt;
  }
  file.file_bytes_ = info.st_size;
  if (file.file_bytes_ < 8) {
    problems.push_back(name + ": " + std::to_string(file.file_bytes_) +
                       " bytes, too short for a safetensors file (truncated?)");
    return std::nullopt;
  }
  unsigned char length_bytes[8];
  try {
    read_exact(file.fd_, 0, 8, length_bytes, name);
  } catch (const core::Error&) {
    problems.push_back(name + ": cannot read the header length");
    return std::nullopt;
  }
  std::uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | length_bytes[i];
  if (header_bytes == 0 || header_bytes > static_cast<std::uint64_t>(kMaxSafetensorsHeaderBytes)) {
    problems.push_back(name + ": the header claims " + std::to_string(header_bytes) +
                       " bytes; a safetensors header has 1 to " + std::to_string(kMaxSafetensorsHeaderBytes) +
                       " bytes (not a safetensors file?)");
    return std::nullopt;
  }
  if (static_cast<std::int64_t>(header_bytes) > file.file_bytes_ - 8) {
    problems.push_back(name + ": the header claims " + std::to_string(header_bytes) + " bytes but the file has " +
                       std::to_string(file.file_bytes_ - 8) + " after the length (truncated file?)");
    return std::nullopt;
  }
  std::string header(static_cast<std::size_t>(header_bytes), '\0');
  try {
    read_exact(file.fd_, 8, static_cast<std::int64_t>(header_bytes), header.data(), name);
  } catch (const core::Error&) {
    problems.push_back(name + ": cannot read the header");
    return std::nullopt;
  }
  file.data_offset_ = 8 + static_cast<std::int64_t>(header_bytes);
  const std::size_t before = problems.size();
  file.tensors_ =
      check_safetensors_header(header, file.file_bytes_ - file.data_offset_, name, &file.metadata_, problems);
  if (problems.size() != before) return std::nullopt;
  return file;
}

std::optional<std::string> read_small_file(const std::filesystem::path& path, std::int64_t max_bytes,
                                           std::vector<std::string>& problems) {
  std::string problem;
  std::optional<std::string> text = read_input_file(path, max_bytes, problem);  // a FIFO or device: refused
  if (!text) problems.push_back(path.string() + ": " + problem);
  return text;
}

}  // namespace detail

std::vector<SafetensorsTensor> parse_safetensors_header(std::string_view header_json, std::int64_t data_bytes,
                                                        const std::string& file_name,
                                                        std::map<std::string, std::string>* metadata) {
  std::vector<std::string> problems;
  auto tensors = detail::check_safetensors_header(header_json, data_bytes, file_name, metadata, problems);
  if (!problems.empty()) detail::throw_problems(problems);
  return tensors;
}

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path) {
  std::vector<std::string> problems;
  auto file = detail::try_open_safetensors(path, problems);
  if (!file) detail::throw_problems(problems);
  return std::move(*file);
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& other) noexcept
    : path_(std::move(other.path_)),
      fd_(std::exchange(other.fd_, -1)),
      file_bytes_(other.file_bytes_),
      data_offset_(other.data_offset_),
      tensors_(std::move(other.tensors_)),
      metadata_(std::move(other.metadata_)) {}

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
    file_bytes_ = other.file_bytes_;
    data_offset_ = other.data_offset_;
    tensors_ = std::move(other.tensors_);
    metadata_ = std::move(other.metadata_);
  }
  return *this;
}

SafetensorsFile::~SafetensorsFile() {
  if (fd_ >= 0) ::close(fd_);
}

const SafetensorsTensor* SafetensorsFile::find(std::string_view name) const {
  for (const SafetensorsTensor& tensor : tensors_) {
    if (tensor.name == name) return &tensor;
  }
  return nullptr;
}

void SafetensorsFile::read_raw(const SafetensorsTensor& tensor, std::int64_t offset, std::int64_t count,
                               void* destination) const {
  if (offset < 0 || count < 0 || offset > tensor.bytes() - count) {
    HS_THROW(core::Error, path_.string() + ": tensor '" + tensor.name + "': bytes [" + std::to_string(offset) + ", " +
                              std::to_string(offset + count) + ") lie outside its " + std::to_string(tensor.bytes()) +
                              " bytes");
  }
  read_exact(fd_, data_offset_ + tensor.data_begin + offset, count, destination,
             path_.string() + ": tensor '" + tensor.name + "'");
}

void SafetensorsFile::read(const SafetensorsTensor& tensor, DType dtype, void* destination) const {
  if (dtype == tensor.dtype) {
    read_raw(tensor, 0, tensor.bytes(), destination);
    return;
  }
  // Convert through a bounded staging buffer.
  constexpr std::int64_t kChunkElements = std::int64_t{1} << 20;
  const std::int64_t element = static_cast<std::int64_t>(core::dtype_size(tensor.dtype));
  std::vector<unsigned char> staging(static_cast<std::size_t>(std::min(tensor.numel(), kChunkElements) * element));
  auto* out = static_cast<unsigned char*>(destination);
  for (std::int64_t first = 0; first < tensor.numel(); first += kChunkElements) {
    const std::int64_t count = std::min(kChunkElements, tensor.numel() - first);
    read_raw(tensor, first * element, count * element, staging.data());
    convert_dtype(staging.data(), tensor.dtype, out + first * static_cast<std::int64_t>(core::dtype_size(dtype)), dtype,
                  count);
  }
}

void write_safetensors(const std::filesystem::path& path, const std::vector<SafetensorsEntry>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::int64_t offset = 0;
  std::vector<std::int64_t> sizes;
  for (const SafetensorsEntry& tensor : tensors) {
    if (tensor.name.empty() || tensor.name == "__metadata__" || header.contains(tensor.name)) {
      HS_THROW(core::ConfigError,
               path.string() + ": cannot write tensor named '" + tensor.name + "' (empty, reserved or given twice)");
    }
    std::int64_t bytes = static_cast<std::int64_t>(core::dtype_size(tensor.dtype));
    for (std::int64_t dim : tensor.shape) {
      if (dim < 0) HS_THROW(core::ConfigError, path.string() + ": tensor '" + tensor.name + "' has a negative size");
      bytes *= dim;
    }
    if (bytes > 0 && tensor.data == nullptr) {
      HS_THROW(core::ConfigError, path.string() + ": tensor '" + tensor.name + "' has no data");
    }
    header[tensor.name] = {{"dtype", std::string(safetensors_dtype_name(tensor.dtype))},
                           {"shape", tensor.shape},
                           {"data_offsets", {offset, offset + bytes}}};
    sizes.push_back(bytes);
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - (text.size() + 8) % 8) % 8, ' ');  // data starts 8-byte aligned

  const std::filesystem::path temporary = path.string() + ".tmp." + std::to_string(::getpid());
  const int fd = create_exclusive(temporary, 0644);  // never through a planted link, never an existing file
  if (fd < 0) HS_THROW(core::Error, temporary.string() + ": cannot create: " + std::strerror(errno));
  const auto fail = [&](const std::string& what) {
    const int saved = errno;
    ::close(fd);
    ::unlink(temporary.c_str());
    HS_THROW(core::Error, temporary.string() + ": " + what + ": " + std::strerror(saved));
  };
  const auto write_all = [&](const void* data, std::int64_t count) {
    const auto* in = static_cast<const char*>(data);
    while (count > 0) {
      const ssize_t wrote =
          ::write(fd, in, static_cast<std::size_t>(std::min<std::int64_t>(count, std::int64_t{1} << 30)));
      if (wrote < 0 && errno == EINTR) continue;
      if (wrote <= 0) fail("write failed");
      in += wrote;
      count -= wrote;
    }
  };
  unsigned char length[8];
  std::uint64_t header_bytes = text.size();
  for (unsigned char& byte : length) {
    byte = static_cast<unsigned char>(header_bytes & 0xffu);
    header_bytes >>= 8;
  }
  write_all(length, 8);
  write_all(text.data(), static_cast<std::int64_t>(text.size()));
  for (std::size_t i = 0; i < tensors.size(); ++i) write_all(tensors[i].data, sizes[i]);
  if (::fsync(fd) != 0) fail("fsync failed");
  if (::close(fd) != 0) {
    ::unlink(temporary.c_str());
    HS_THROW(core::Error, temporary.string() + ": close failed: " + std::strerror(errno));
  }
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    const int saved = errno;
    ::unlink(temporary.c_str());
    HS_THROW(core::Error, path.string() + ": cannot rename the finished file into place: " + std::strerror(saved));
  }
}

}  // namespace hybridshard::service
