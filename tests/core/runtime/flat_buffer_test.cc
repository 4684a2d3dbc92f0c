#include "hybridshard/core/flat_buffer.h"

#include <gtest/gtest.h>

#include <cstring>
#include <numeric>

#include "device_checks.h"
#include "hybridshard/core/error.h"

namespace hybridshard::core {
namespace {

FlatBufferInfo info(std::int64_t bytes) {
  FlatBufferInfo result;
  result.name = "train.params.pp0.vpp0";
  result.kind = BufferKind::kParams;
  result.dtype = DType::kBFloat16;
  result.bytes = bytes;
  result.shape = "2 tensors, 500 elems";
  return result;
}

std::vector<Event> of_type(const std::vector<Event>& events, EventType type) {
  std::vector<Event> selected;
  for (const Event& event : events) {
    if (event.type == type) selected.push_back(event);
  }
  return selected;
}

TEST(FlatBufferTest, starts_unallocated_and_announces_itself) {
  auto device = make_cpu_device(1 << 20);
  RecordingEventSink events;
  FlatBuffer buffer(info(1000), *device, &events, 3);
  EXPECT_EQ(buffer.residency(), Residency::kNone);
  EXPECT_EQ(buffer.data(), nullptr);
  EXPECT_EQ(device->bytes_in_use(Residency::kGpu), 0);
  const auto created = of_type(events.events(), EventType::kBufferCreated);
  ASSERT_EQ(created.size(), 1u);
  EXPECT_EQ(created[0].buffer, "train.params.pp0.vpp0");
  EXPECT_EQ(created[0].bytes, 1000);
  EXPECT_EQ(created[0].rank, 3);
  EXPECT_EQ(created[0].shape, "2 tensors, 500 elems");
  EXPECT_EQ(created[0].to, Residency::kNone);
}

TEST(FlatBufferTest, residency_moves_keep_accounting_exact_to_the_byte) {
  auto device = make_cpu_device(1 << 20);
  FlatBuffer buffer(info(1001), *device, nullptr, 0);
  buffer.move_to(Residency::kGpu);
  EXPECT_EQ(device->bytes_in_use(Residency::kGpu), 1001);
  EXPECT_EQ(device->bytes_in_use(Residency::kCpu), 0);
  buffer.move_to(Residency::kCpu);
  EXPECT_EQ(device->bytes_in_use(Residency::kGpu), 0);
  EXPECT_EQ(device->bytes_in_use(Residency::kCpu), 1001);
  buffer.release();
  EXPECT_EQ(device->bytes_in_use(Residency::kCpu), 0);
  EXPECT_EQ(buffer.residency(), Residency::kNone);
}

TEST(FlatBufferTest, keeps_contents_across_gpu_and_cpu_and_reports_each_copy) {
  auto device = make_cpu_device(1 << 20);
  RecordingEventSink events;
  FlatBuffer buffer(info(777), *device, &events, 1);
  buffer.set_iteration(4);
  buffer.move_to(Residency::kGpu);
  std::vector<std::uint8_t> pattern(777);
  std::iota(pattern.begin(), pattern.end(), std::uint8_t{5});
  std::memcpy(buffer.data(), pattern.data(), pattern.size());

  buffer.move_to(Residency::kCpu);
  buffer.move_to(Residency::kGpu);
  EXPECT_EQ(std::memcmp(buffer.data(), pattern.data(), pattern.size()), 0);

  const auto transfers = of_type(events.events(), EventType::kTransfer);
  ASSERT_EQ(transfers.size(), 2u);
  EXPECT_EQ(transfers[0].path, TransferPath::kDeviceToHost);
  EXPECT_EQ(transfers[1].path, TransferPath::kHostToDevice);
  for (const Event& transfer : transfers) {
    EXPECT_EQ(transfer.bytes, 777);
    EXPECT_EQ(transfer.rank, 1);
    EXPECT_EQ(transfer.iteration, 4);
    EXPECT_EQ(transfer.peer, -1);
    EXPECT_GE(transfer.seconds, 0.0);
    EXPECT_FALSE(transfer.operation.empty());
  }
  const auto residency = of_type(events.events(), EventType::kResidency);
  ASSERT_EQ(residency.size(), 3u);
  EXPECT_EQ(residency[0].from, Residency::kNone);
  EXPECT_EQ(residency[0].to, Residency::kGpu);
  EXPECT_EQ(residency[1].from, Residency::kGpu);
  EXPECT_EQ(residency[1].to, Residency::kCpu);
  EXPECT_EQ(residency[2].to, Residency::kGpu);
}

TEST(FlatBufferTest, moves_without_contents_copy_nothing) {
  auto device = make_cpu_device(1 << 20);
  RecordingEventSink events;
  FlatBuffer buffer(info(512), *device, &events, 0);
  buffer.move_to(Residency::kGpu, false);
  buffer.move_to(Residency::kCpu, false);
  EXPECT_TRUE(of_type(events.events(), EventType::kTransfer).empty());
  EXPECT_EQ(of_type(events.events(), EventType::kResidency).size(), 2u);
  EXPECT_EQ(device->bytes_in_use(Residency::kCpu), 512);
}

TEST(FlatBufferTest, moving_to_the_same_place_does_nothing) {
  auto device = make_cpu_device(1 << 20);
  RecordingEventSink events;
  FlatBuffer buffer(info(64), *device, &events, 0);
  buffer.move_to(Residency::kGpu);
  void* before = buffer.data();
  buffer.move_to(Residency::kGpu);
  EXPECT_EQ(buffer.data(), before);
  EXPECT_EQ(of_type(events.events(), EventType::kResidency).size(), 1u);
}

TEST(FlatBufferTest, failed_move_leaves_the_buffer_where_it_was) {
  auto device = make_cpu_device(1000);
  FlatBuffer big(info(800), *device, nullptr, 0);
  FlatBuffer other(info(300), *device, nullptr, 0);
  big.move_to(Residency::kGpu);
  other.move_to(Residency::kCpu);
  EXPECT_THROW(other.move_to(Residency::kGpu), OutOfMemoryError);
  EXPECT_EQ(other.residency(), Residency::kCpu);
  EXPECT_NE(other.data(), nullptr);
  EXPECT_EQ(device->bytes_in_use(Residency::kGpu), 800);
  EXPECT_EQ(device->bytes_in_use(Residency::kCpu), 300);
}

TEST(FlatBufferTest, destruction_frees_memory_and_announces_it) {
  auto device = make_cpu_device(1 << 20);
  RecordingEventSink events;
  {
    FlatBuffer buffer(info(4096), *device, &events, 2);
    buffer.move_to(Residency::kGpu);
    EXPECT_EQ(device->bytes_in_use(Residency::kGpu), 4096);
  }
  EXPECT_EQ(device->bytes_in_use(Residency::kGpu), 0);
  const std::vector<Event> all = events.events();
  ASSERT_GE(all.size(), 3u);
  EXPECT_EQ(all.back().type, EventType::kBufferDestroyed);
  EXPECT_EQ(all.back().bytes, 4096);
  EXPECT_EQ(all[all.size() - 2].type, EventType::kResidency);
  EXPECT_EQ(all[all.size() - 2].to, Residency::kNone);
}

TEST(FlatBufferTest, takes_name_dtype_and_size_from_a_layout) {
  auto device = make_cpu_device(1 << 20);
  const BufferLayout layout = testing::sample_layout(DType::kFloat32);
  FlatBuffer buffer(layout, BufferKind::kInferenceParams, *device, nullptr, 0);
  EXPECT_EQ(buffer.name(), "test.params");
  EXPECT_EQ(buffer.bytes(), layout.bytes);
  EXPECT_EQ(buffer.info().dtype, DType::kFloat32);
  EXPECT_EQ(buffer.info().kind, BufferKind::kInferenceParams);
  EXPECT_NE(buffer.info().shape.find("2 tensors"), std::string::npos);
}

TEST(FlatBufferTest, accounting_matches_the_sum_of_resident_buffers) {
  auto device = make_cpu_device(1 << 22);
  std::vector<std::unique_ptr<FlatBuffer>> buffers;
  std::int64_t expected_gpu = 0, expected_cpu = 0;
  for (int i = 0; i < 10; ++i) {
    FlatBufferInfo buffer_info = info(1000 + 37 * i);
    buffer_info.name = "buffer" + std::to_string(i);
    buffers.push_back(std::make_unique<FlatBuffer>(buffer_info, *device, nullptr, 0));
    const Residency where = i % 3 == 0 ? Residency::kNone : (i % 3 == 1 ? Residency::kGpu : Residency::kCpu);
    buffers.back()->move_to(where);
    if (where == Residency::kGpu) expected_gpu += buffer_info.bytes;
    if (where == Residency::kCpu) expected_cpu += buffer_info.bytes;
  }
  EXPECT_EQ(device->bytes_in_use(Residency::kGpu), expected_gpu);
  EXPECT_EQ(device->bytes_in_use(Residency::kCpu), expected_cpu);
}

}  // namespace
}  // namespace hybridshard::core
