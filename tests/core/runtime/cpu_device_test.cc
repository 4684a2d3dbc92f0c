#include <gtest/gtest.h>

#include "device_checks.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/error.h"

namespace hybridshard::core {
namespace {

using testing::check_accounting;
using testing::check_copy_pieces;
using testing::check_count_mismatches;
using testing::check_generate;

TEST(CpuDeviceTest, accounts_every_allocation_to_the_byte) {
  auto device = make_cpu_device(1 << 20);
  EXPECT_EQ(device->type(), DeviceType::kCpu);
  check_accounting(*device);
}

TEST(CpuDeviceTest, reports_capacity_as_total_and_device_bytes_with_the_cache_as_used) {
  auto device = make_cpu_device(5000);
  EXPECT_EQ(device->total_memory(), 5000);
  void* gpu = device->allocate(Residency::kGpu, 1200);
  void* cpu = device->allocate(Residency::kCpu, 800);
  EXPECT_EQ(device->used_memory(), 1200);
  device->deallocate(Residency::kGpu, gpu, 1200);
  device->deallocate(Residency::kCpu, cpu, 800);
  EXPECT_EQ(device->used_memory(), 1200);  // cached: still held
  device->empty_cache();
  EXPECT_EQ(device->used_memory(), 0);
}

TEST(CpuDeviceTest, a_freed_block_is_reused_by_the_next_allocation_of_its_size) {
  auto device = make_cpu_device(64 << 20);
  testing::check_cache_reuse(*device, 3 << 20);
}

TEST(CpuDeviceTest, empty_cache_hands_the_cached_blocks_of_one_residency_back) {
  auto device = make_cpu_device(64 << 20);
  testing::check_empty_cache(*device, 16 << 20, 2 << 20);
}

TEST(CpuDeviceTest, one_memory_reading_adds_up_with_nothing_untracked) {
  auto device = make_cpu_device(64 << 20);
  testing::check_memory_reading(*device);
}

TEST(CpuDeviceTest, an_allocation_that_does_not_fit_beside_the_cache_releases_it) {
  auto device = make_cpu_device(4096);
  void* first = device->allocate(Residency::kGpu, 3000);
  device->deallocate(Residency::kGpu, first, 3000);
  EXPECT_EQ(device->bytes_cached(Residency::kGpu), 3000);
  void* second = device->allocate(Residency::kGpu, 2000);  // too small for the cached block, too large beside it
  EXPECT_EQ(device->bytes_cached(Residency::kGpu), 0);
  EXPECT_EQ(device->used_memory(), 2000);
  device->deallocate(Residency::kGpu, second, 2000);
}

TEST(CpuDeviceTest, release_on_exit_driver_empties_the_device_cache_and_cache_keeps_it) {
  auto device = make_cpu_device(1 << 20);
  void* block = device->allocate(Residency::kGpu, 4096);
  device->deallocate(Residency::kGpu, block, 4096);
  void* host = device->allocate(Residency::kCpu, 512);
  device->deallocate(Residency::kCpu, host, 512);
  release_after_exit(*device, ReleaseOnExit::kCache);
  EXPECT_EQ(device->bytes_cached(Residency::kGpu), 4096);
  release_after_exit(*device, ReleaseOnExit::kDriver);
  EXPECT_EQ(device->bytes_cached(Residency::kGpu), 0);
  EXPECT_EQ(device->bytes_cached(Residency::kCpu), 512);  // pinned host blocks stay cached either way
  EXPECT_EQ(release_on_exit_name(ReleaseOnExit::kDriver), "driver");
  EXPECT_EQ(parse_release_on_exit("cache"), ReleaseOnExit::kCache);
  EXPECT_EQ(parse_release_on_exit("free"), std::nullopt);
}

TEST(CpuDeviceTest, refuses_device_allocations_beyond_capacity_and_keeps_accounting) {
  auto device = make_cpu_device(4096);
  void* first = device->allocate(Residency::kGpu, 4000);
  EXPECT_THROW(device->allocate(Residency::kGpu, 97), OutOfMemoryError);
  EXPECT_EQ(device->bytes_in_use(Residency::kGpu), 4000);
  // Host ("pinned") memory is not limited by the device capacity.
  void* host = device->allocate(Residency::kCpu, 100000);
  EXPECT_EQ(device->bytes_in_use(Residency::kCpu), 100000);
  device->deallocate(Residency::kCpu, host, 100000);
  device->deallocate(Residency::kGpu, first, 4000);
}

TEST(CpuDeviceTest, rejects_deallocation_with_other_size_or_residency) {
  auto device = make_cpu_device(4096);
  void* pointer = device->allocate(Residency::kGpu, 64);
  EXPECT_THROW(device->deallocate(Residency::kGpu, pointer, 65), Error);
  EXPECT_THROW(device->deallocate(Residency::kCpu, pointer, 64), Error);
  int not_allocated_here = 0;
  EXPECT_THROW(device->deallocate(Residency::kGpu, &not_allocated_here, 4), Error);
  EXPECT_EQ(device->bytes_in_use(Residency::kGpu), 64);
  EXPECT_EQ(device->bytes_cached(Residency::kGpu), 0);  // a refused deallocate caches nothing
  device->deallocate(Residency::kGpu, pointer, 64);
  EXPECT_EQ(device->bytes_in_use(Residency::kGpu), 0);
}

TEST(CpuDeviceTest, allocations_are_aligned_for_vector_loads) {
  auto device = make_cpu_device(1 << 20);
  for (std::int64_t bytes : {1, 17, 256, 1000}) {
    void* pointer = device->allocate(Residency::kGpu, bytes);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(pointer) % 256, 0u) << bytes;
    device->deallocate(Residency::kGpu, pointer, bytes);
  }
}

TEST(CpuDeviceTest, copy_pieces_matches_a_byte_by_byte_reference) {
  auto device = make_cpu_device(1 << 24);
  for (std::uint32_t seed = 1; seed <= 4; ++seed) {
    check_copy_pieces(*device, seed, 16);
    check_copy_pieces(*device, seed, 1);
  }
}

TEST(CpuDeviceTest, copy_pieces_rejects_an_unknown_source_buffer) {
  auto device = make_cpu_device(1 << 20);
  std::vector<std::uint8_t> src(64), dst(64);
  std::vector<void*> bases{src.data()};
  const std::vector<Piece> pieces{Piece{1, 0, 0, 1, 8, 8, 8}};
  EXPECT_THROW(device->copy_pieces(pieces, bases, nullptr, dst.data()), Error);
}

TEST(CpuDeviceTest, generate_writes_weight_values_in_bf16) {
  check_generate(*make_cpu_device(1 << 20), DType::kBFloat16, 1);
}
TEST(CpuDeviceTest, generate_writes_weight_values_in_fp16) {
  check_generate(*make_cpu_device(1 << 20), DType::kFloat16, 2);
}
TEST(CpuDeviceTest, generate_writes_weight_values_in_fp32) {
  check_generate(*make_cpu_device(1 << 20), DType::kFloat32, 3);
}

TEST(CpuDeviceTest, generate_differs_between_versions) {
  auto device = make_cpu_device(1 << 20);
  const BufferLayout layout = testing::sample_layout(DType::kBFloat16);
  std::vector<std::uint8_t> a(static_cast<std::size_t>(layout.bytes)), b(a.size());
  device->generate(layout, 1, a.data());
  device->generate(layout, 2, b.data());
  EXPECT_GT(device->count_mismatches(a.data(), b.data(), layout.bytes, 2), 0);
}

TEST(CpuDeviceTest, generate_rejects_a_block_outside_its_tensor) {
  auto device = make_cpu_device(1 << 20);
  BufferLayout layout = testing::sample_layout(DType::kFloat32);
  layout.tensors[0].blocks[0].rows = 8;  // the tensor has 7 rows
  std::vector<std::uint8_t> buffer(static_cast<std::size_t>(layout.bytes));
  EXPECT_THROW(device->generate(layout, 1, buffer.data()), Error);
}

TEST(CpuDeviceTest, counts_mismatches_by_element_size) { check_count_mismatches(*make_cpu_device(1 << 20)); }

TEST(CpuDeviceTest, count_mismatches_rejects_partial_elements) {
  auto device = make_cpu_device(1 << 20);
  std::vector<std::uint8_t> a(10), b(10);
  EXPECT_THROW(device->count_mismatches(a.data(), b.data(), 10, 4), Error);
  EXPECT_THROW(device->count_mismatches(a.data(), b.data(), 10, 3), Error);
}

TEST(CpuDeviceTest, copy_and_fill_zero_move_exact_bytes) {
  auto device = make_cpu_device(1 << 20);
  std::vector<std::uint8_t> src{1, 2, 3, 4, 5}, dst{9, 9, 9, 9, 9, 9};
  device->copy(dst.data(), Residency::kGpu, src.data(), Residency::kCpu, 5);
  EXPECT_EQ(dst, (std::vector<std::uint8_t>{1, 2, 3, 4, 5, 9}));
  device->fill_zero(dst.data() + 1, 3);
  EXPECT_EQ(dst, (std::vector<std::uint8_t>{1, 0, 0, 0, 5, 9}));
}

}  // namespace
}  // namespace hybridshard::core
