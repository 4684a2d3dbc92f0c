// Checks every Device must pass, written against the interface so that the CPU and the CUDA device run the same ones.
// Data is staged through Device::copy from and to host vectors.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "hybridshard/core/buffer_layout.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/error.h"
#include "hybridshard/core/weight_generator.h"
#include "piece_reference.h"

namespace hybridshard::core::testing {

struct DeviceBytes {
  Device& device;
  void* data = nullptr;
  std::int64_t bytes = 0;
  DeviceBytes(Device& dev, std::int64_t size) : device(dev), data(dev.allocate(Residency::kGpu, size)), bytes(size) {}
  ~DeviceBytes() { device.deallocate(Residency::kGpu, data, bytes); }
  DeviceBytes(const DeviceBytes&) = delete;
  DeviceBytes& operator=(const DeviceBytes&) = delete;

  void upload(const std::vector<std::uint8_t>& host) {
    device.copy(data, Residency::kGpu, host.data(), Residency::kCpu, static_cast<std::int64_t>(host.size()));
    device.synchronize();
  }
  std::vector<std::uint8_t> download() {
    std::vector<std::uint8_t> host(static_cast<std::size_t>(bytes));
    device.copy(host.data(), Residency::kCpu, data, Residency::kGpu, bytes);
    device.synchronize();
    return host;
  }
};

inline std::vector<std::uint8_t> random_bytes(std::mt19937& random, std::int64_t bytes) {
  std::vector<std::uint8_t> data(static_cast<std::size_t>(bytes));
  for (auto& byte : data) byte = static_cast<std::uint8_t>(random() & 0xFF);
  return data;
}

// copy_pieces over a random table equals the byte-by-byte reference; bytes no piece covers are left alone.
inline void check_copy_pieces(Device& device, std::uint32_t seed, std::int64_t granule) {
  std::mt19937 random(seed);
  constexpr int kNumSrc = 3;
  constexpr std::int64_t kSrcBytes = 8192;
  constexpr std::int64_t kBand = 1536;
  constexpr int kNumPieces = 40;
  const std::vector<Piece> pieces = random_pieces(random, kNumPieces, kNumSrc, kSrcBytes, kBand, granule);

  std::vector<std::vector<std::uint8_t>> host_srcs;
  std::vector<std::unique_ptr<DeviceBytes>> srcs;
  std::vector<void*> src_bases;
  std::vector<const std::uint8_t*> reference_srcs;
  for (int i = 0; i < kNumSrc; ++i) {
    host_srcs.push_back(random_bytes(random, kSrcBytes));
    srcs.push_back(std::make_unique<DeviceBytes>(device, kSrcBytes));
    srcs.back()->upload(host_srcs.back());
    src_bases.push_back(srcs.back()->data);
  }
  const std::vector<std::uint8_t> host_message = random_bytes(random, kSrcBytes);
  DeviceBytes message(device, kSrcBytes);
  message.upload(host_message);
  for (const auto& host : host_srcs) reference_srcs.push_back(host.data());

  std::vector<std::uint8_t> expected = random_bytes(random, kBand * kNumPieces);
  DeviceBytes dst(device, kBand * kNumPieces);
  dst.upload(expected);
  reference_copy_pieces(pieces, reference_srcs, host_message.data(), expected.data());

  device.copy_pieces(pieces, src_bases, message.data, dst.data);
  device.synchronize();
  const std::vector<std::uint8_t> actual = dst.download();
  std::int64_t wrong = 0;
  for (std::size_t i = 0; i < actual.size(); ++i) wrong += actual[i] != expected[i] ? 1 : 0;
  EXPECT_EQ(wrong, 0) << "seed " << seed << " granule " << granule;
}

// A buffer with two tensors: a 2-D one with two blocks and two padding rows, and a 1-D one; alignment gaps between.
inline BufferLayout sample_layout(DType dtype) {
  BufferLayout layout;
  layout.name = "test.params";
  layout.dtype = dtype;
  LocalTensor matrix;
  matrix.name = "matrix";
  matrix.rows = 7;
  matrix.cols = 13;
  matrix.shape = {7, 13};
  // Rows 0..2 from tensor 3 rows 10..12; rows 3..4 from tensor 5 rows 0..1 cols 4..16; rows 5..6 are padding.
  matrix.blocks.push_back(Block{3, 10, 0, 0, 0, 3, 13});
  matrix.blocks.push_back(Block{5, 0, 4, 3, 0, 2, 13});
  append_tensor(layout, matrix);
  LocalTensor vector;
  vector.name = "vector";
  vector.rows = 9;
  vector.cols = 1;
  vector.shape = {9};
  vector.blocks.push_back(Block{8, 2, 0, 0, 0, 9, 1});
  append_tensor(layout, vector);
  return layout;
}

inline float decode(DType dtype, const std::uint8_t* element) {
  if (dtype == DType::kFloat32) {
    float value;
    std::memcpy(&value, element, sizeof value);
    return value;
  }
  std::uint16_t bits;
  std::memcpy(&bits, element, sizeof bits);
  return dtype == DType::kBFloat16 ? decode_bf16(bits) : decode_fp16(bits);
}

// generate() writes weight_value for every block element, zero for padding rows and alignment gaps.
inline void check_generate(Device& device, DType dtype, std::uint32_t version) {
  const BufferLayout layout = sample_layout(dtype);
  DeviceBytes buffer(device, layout.bytes);
  std::mt19937 random(version);
  buffer.upload(random_bytes(random, layout.bytes));  // garbage that generate must overwrite
  device.generate(layout, version, buffer.data);
  device.synchronize();
  const std::vector<std::uint8_t> host = buffer.download();
  const auto element_bytes = static_cast<std::int64_t>(dtype_size(dtype));

  std::vector<bool> covered(host.size(), false);
  for (const LocalTensor& tensor : layout.tensors) {
    for (const Block& block : tensor.blocks) {
      for (std::int64_t r = 0; r < block.rows; ++r) {
        for (std::int64_t c = 0; c < block.cols; ++c) {
          const std::int64_t offset =
              tensor.offset_bytes + ((block.local_row + r) * tensor.cols + block.local_col + c) * element_bytes;
          const float expected = weight_value(block.hf_tensor, block.hf_row + r, block.hf_col + c, version);
          ASSERT_EQ(decode(dtype, host.data() + offset), expected)
              << tensor.name << " row " << block.local_row + r << " col " << block.local_col + c;
          for (std::int64_t b = 0; b < element_bytes; ++b) covered[static_cast<std::size_t>(offset + b)] = true;
        }
      }
    }
  }
  std::int64_t nonzero_uncovered = 0;
  for (std::size_t i = 0; i < host.size(); ++i) nonzero_uncovered += (!covered[i] && host[i] != 0) ? 1 : 0;
  EXPECT_EQ(nonzero_uncovered, 0);
}

// Flipping k chosen elements is counted as k mismatches at the element size given.
inline void check_count_mismatches(Device& device) {
  std::mt19937 random(7);
  constexpr std::int64_t kBytes = 4096 + 4;
  const std::vector<std::uint8_t> original = random_bytes(random, kBytes);
  std::vector<std::uint8_t> changed = original;
  // Bytes 0 and 1 (one 2-byte element, one 4-byte element), byte 9 (element 4 / 2), byte 4099 (last word).
  for (std::size_t i : {0u, 1u, 9u, 4099u}) changed[i] ^= 0x5A;
  DeviceBytes a(device, kBytes);
  DeviceBytes b(device, kBytes);
  a.upload(original);
  b.upload(changed);
  EXPECT_EQ(device.count_mismatches(a.data, a.data, kBytes, 2), 0);
  EXPECT_EQ(device.count_mismatches(a.data, b.data, kBytes, 1), 4);
  EXPECT_EQ(device.count_mismatches(a.data, b.data, kBytes, 2), 3);
  EXPECT_EQ(device.count_mismatches(a.data, b.data, kBytes, 4), 3);
  // The arguments are checked the same on every device.
  EXPECT_THROW(device.count_mismatches(a.data, b.data, kBytes, 3), Error);
  EXPECT_THROW(device.count_mismatches(a.data, b.data, kBytes - 2, 4), Error);
  EXPECT_THROW(device.count_mismatches(a.data, b.data, -4, 4), Error);
}

// What allocate and deallocate do to bytes_in_use, per residency, to the byte.
inline void check_accounting(Device& device) {
  const std::int64_t gpu_before = device.bytes_in_use(Residency::kGpu);
  const std::int64_t cpu_before = device.bytes_in_use(Residency::kCpu);
  void* a = device.allocate(Residency::kGpu, 1000);
  void* b = device.allocate(Residency::kGpu, 24);
  void* c = device.allocate(Residency::kCpu, 333);
  EXPECT_EQ(device.bytes_in_use(Residency::kGpu), gpu_before + 1024);
  EXPECT_EQ(device.bytes_in_use(Residency::kCpu), cpu_before + 333);
  device.deallocate(Residency::kGpu, a, 1000);
  EXPECT_EQ(device.bytes_in_use(Residency::kGpu), gpu_before + 24);
  device.deallocate(Residency::kGpu, b, 24);
  device.deallocate(Residency::kCpu, c, 333);
  EXPECT_EQ(device.bytes_in_use(Residency::kGpu), gpu_before);
  EXPECT_EQ(device.bytes_in_use(Residency::kCpu), cpu_before);
  EXPECT_EQ(device.bytes_in_use(Residency::kNone), 0);
}

// The cache: a freed block is kept (bytes_cached grows by its size, used_memory does not drop) and taken again by the
// next allocation of a like size, not by a much smaller one. `bytes`: a block size the device does not round.
inline void check_cache_reuse(Device& device, std::int64_t bytes) {
  for (Residency where : {Residency::kGpu, Residency::kCpu}) {
    SCOPED_TRACE(std::string(residency_name(where)));
    const std::int64_t in_use = device.bytes_in_use(where);
    void* first = device.allocate(where, bytes + 5);
    const std::int64_t cached_while_live = device.bytes_cached(where);
    const std::int64_t used_while_live = device.used_memory();
    device.deallocate(where, first, bytes + 5);
    EXPECT_EQ(device.bytes_in_use(where), in_use);
    EXPECT_EQ(device.bytes_cached(where), cached_while_live + bytes + 5);
    if (where == Residency::kGpu && device.type() == DeviceType::kCpu) {
      EXPECT_EQ(device.used_memory(), used_while_live);
    }
    void* second = device.allocate(where, bytes);
    EXPECT_EQ(second, first);
    EXPECT_EQ(device.bytes_in_use(where), in_use + bytes);
    void* small = device.allocate(where, 4096);  // a much smaller request does not take the large block
    EXPECT_NE(small, first);
    device.deallocate(where, small, 4096);
    device.deallocate(where, second, bytes);
  }
}

// empty_cache(where) hands every cached block of `where` back (and only those); used_memory drops by the device ones.
inline void check_empty_cache(Device& device, std::int64_t device_bytes, std::int64_t host_bytes) {
  device.empty_cache();
  void* block = device.allocate(Residency::kGpu, device_bytes);
  device.deallocate(Residency::kGpu, block, device_bytes);
  void* pinned = device.allocate(Residency::kCpu, host_bytes);
  device.deallocate(Residency::kCpu, pinned, host_bytes);
  EXPECT_EQ(device.bytes_cached(Residency::kGpu), device_bytes);
  EXPECT_EQ(device.bytes_cached(Residency::kCpu), host_bytes);
  const std::int64_t used = device.used_memory();
  device.empty_cache(Residency::kGpu);
  EXPECT_EQ(device.bytes_cached(Residency::kGpu), 0);
  EXPECT_EQ(device.bytes_cached(Residency::kCpu), host_bytes);  // pinned host blocks stay
  EXPECT_LE(device.used_memory(), used - device_bytes);
  device.empty_cache(Residency::kCpu);
  EXPECT_EQ(device.bytes_cached(Residency::kCpu), 0);
}

// One memory() reading agrees with the separate accessors and adds up: used = tracked + cached + untracked, with
// untracked >= 0 (exactly 0 on a CPU device, which holds nothing it did not allocate itself).
inline void check_memory_reading(Device& device) {
  void* live = device.allocate(Residency::kGpu, 3 << 20);
  void* freed = device.allocate(Residency::kGpu, 5 << 20);
  void* pinned = device.allocate(Residency::kCpu, 1 << 20);
  device.deallocate(Residency::kGpu, freed, 5 << 20);
  device.deallocate(Residency::kCpu, pinned, 1 << 20);
  const DeviceMemory memory = device.memory();
  EXPECT_EQ(memory.total, device.total_memory());
  EXPECT_EQ(memory.tracked, device.bytes_in_use(Residency::kGpu));
  EXPECT_EQ(memory.cached, device.bytes_cached(Residency::kGpu));
  EXPECT_EQ(memory.cached_host, device.bytes_cached(Residency::kCpu));
  EXPECT_GE(memory.cached, 5 << 20);
  EXPECT_GE(memory.cached_host, 1 << 20);
  EXPECT_EQ(memory.used, memory.tracked + memory.cached + memory.untracked());
  EXPECT_GE(memory.untracked(), 0);
  if (device.type() == DeviceType::kCpu) {
    EXPECT_EQ(memory.untracked(), 0);
  }
  device.deallocate(Residency::kGpu, live, 3 << 20);
  device.empty_cache();
}

}  // namespace hybridshard::core::testing
