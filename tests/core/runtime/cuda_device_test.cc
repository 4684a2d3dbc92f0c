// The CPU device's checks on the CUDA device, plus bit-exact agreement of its kernels with the CPU device.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "device_checks.h"
#include "hybridshard/core/communicator.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/error.h"
#include "hybridshard/core/flat_buffer.h"

namespace hybridshard::core {
namespace {

using testing::DeviceBytes;

class CudaDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override { device_ = make_cuda_device(0); }
  std::unique_ptr<Device> device_;
};

TEST_F(CudaDeviceTest, describes_itself_and_its_memory) {
  EXPECT_EQ(device_->type(), DeviceType::kCuda);
  EXPECT_NE(device_->description().find("cuda:0"), std::string::npos) << device_->description();
  EXPECT_GT(device_->total_memory(), 0);
  EXPECT_GT(device_->used_memory(), 0);
  EXPECT_NE(device_->stream(), nullptr);
}

TEST_F(CudaDeviceTest, accounts_every_allocation_to_the_byte) { testing::check_accounting(*device_); }

TEST_F(CudaDeviceTest, an_impossible_allocation_throws_out_of_memory_and_keeps_accounting) {
  const std::int64_t before = device_->bytes_in_use(Residency::kGpu);
  EXPECT_THROW(device_->allocate(Residency::kGpu, std::int64_t{1} << 50), OutOfMemoryError);
  EXPECT_EQ(device_->bytes_in_use(Residency::kGpu), before);
}

TEST_F(CudaDeviceTest, a_freed_block_is_reused_by_the_next_allocation_of_its_size) {
  testing::check_cache_reuse(*device_, 3 << 20);
}

TEST_F(CudaDeviceTest, empty_cache_hands_the_cached_blocks_of_one_residency_back) {
  testing::check_empty_cache(*device_, 256 << 20, 8 << 20);
}

TEST_F(CudaDeviceTest, one_memory_reading_adds_up) { testing::check_memory_reading(*device_); }

TEST_F(CudaDeviceTest, a_reused_pinned_block_holds_what_work_queued_before_its_free_wrote) {
  constexpr std::int64_t kBytes = 64 << 20;
  std::mt19937 random(11);
  const auto pattern = testing::random_bytes(random, kBytes);
  DeviceBytes source(*device_, kBytes);
  source.upload(pattern);
  void* pinned = device_->allocate(Residency::kCpu, kBytes);
  std::memset(pinned, 0, kBytes);
  // Queued, not waited for: the free must not let the next owner see the block before the copy lands.
  device_->copy(pinned, Residency::kCpu, source.data, Residency::kGpu, kBytes);
  device_->deallocate(Residency::kCpu, pinned, kBytes);
  void* reused = device_->allocate(Residency::kCpu, kBytes);
  ASSERT_EQ(reused, pinned);
  EXPECT_EQ(std::memcmp(reused, pattern.data(), pattern.size()), 0);
  device_->deallocate(Residency::kCpu, reused, kBytes);
}

TEST_F(CudaDeviceTest, memory_freed_into_the_cache_serves_a_larger_allocation_that_needs_it) {
  const std::int64_t free_bytes = device_->total_memory() - device_->used_memory();
  // Together the two do not fit, and the second is too large to take the first's block.
  const std::int64_t first_bytes = free_bytes / 100 * 55;
  const std::int64_t second_bytes = free_bytes / 100 * 75;
  void* first = device_->allocate(Residency::kGpu, first_bytes);
  device_->deallocate(Residency::kGpu, first, first_bytes);
  EXPECT_GE(device_->bytes_cached(Residency::kGpu), first_bytes);
  void* second = device_->allocate(Residency::kGpu, second_bytes);
  EXPECT_EQ(device_->bytes_in_use(Residency::kGpu), second_bytes);
  EXPECT_LT(device_->bytes_cached(Residency::kGpu), first_bytes);  // the first block went back to the driver
  device_->deallocate(Residency::kGpu, second, second_bytes);
}

TEST_F(CudaDeviceTest, copy_pieces_matches_the_reference_for_aligned_and_unaligned_tables) {
  for (std::uint32_t seed = 1; seed <= 8; ++seed) {
    for (std::int64_t granule : {16, 8, 4, 2, 1}) testing::check_copy_pieces(*device_, seed, granule);
  }
}

TEST_F(CudaDeviceTest, copy_pieces_agrees_with_the_cpu_device_on_large_pieces) {
  // Pieces of many chunks each, so that chunk boundaries inside rows are exercised.
  auto cpu = make_cpu_device(std::int64_t{1} << 30);
  std::mt19937 random(99);
  constexpr std::int64_t kSrc = 8 << 20;
  std::vector<Piece> pieces;
  std::int64_t dst_bytes = 0;
  for (int i = 0; i < 24; ++i) {
    Piece piece;
    piece.src_buffer = i % 2 == 0 ? 0 : -1;
    piece.row_bytes = 16 * (1 + static_cast<std::int64_t>(random() % 4096)) + (i % 3 == 0 ? 2 : 0);
    piece.rows = 1 + static_cast<std::int64_t>(random() % 64);
    piece.src_stride = piece.row_bytes + 16 * static_cast<std::int64_t>(random() % 4);
    piece.dst_stride = piece.row_bytes;
    piece.src_offset = 0;
    piece.dst_offset = dst_bytes;
    ASSERT_LE((piece.rows - 1) * piece.src_stride + piece.row_bytes, kSrc);
    dst_bytes += piece.rows * piece.row_bytes;
    dst_bytes = (dst_bytes + 15) / 16 * 16;
    pieces.push_back(piece);
  }
  const auto host_src = testing::random_bytes(random, kSrc);
  const auto host_message = testing::random_bytes(random, kSrc);
  std::vector<std::uint8_t> expected(static_cast<std::size_t>(dst_bytes), 0);
  std::vector<void*> cpu_bases{const_cast<std::uint8_t*>(host_src.data())};
  cpu->copy_pieces(pieces, cpu_bases, host_message.data(), expected.data());

  DeviceBytes src(*device_, kSrc), message(*device_, kSrc), dst(*device_, dst_bytes);
  src.upload(host_src);
  message.upload(host_message);
  dst.upload(std::vector<std::uint8_t>(static_cast<std::size_t>(dst_bytes), 0));
  std::vector<void*> bases{src.data};
  device_->copy_pieces(pieces, bases, message.data, dst.data);
  EXPECT_TRUE(dst.download() == expected);
}

// The peer path: pieces read from another GPU's memory go to the copy engines (1-D and 2-D copies, 256 KiB and up)
// or, smaller, to the kernel, spread among the local chunks; a second call with the same table reuses the uploaded
// table and must still copy the sources' current bytes.
TEST_F(CudaDeviceTest, copy_pieces_reads_another_gpus_memory_like_the_cpu_device) {
  if (cuda_device_count() < 2) GTEST_SKIP() << "needs 2 GPUs, this machine has " << cuda_device_count();
  int can = 0;
  ASSERT_EQ(cudaDeviceCanAccessPeer(&can, 0, 1), cudaSuccess);
  if (can == 0) GTEST_SKIP() << "cuda:0 cannot access cuda:1";
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  const cudaError_t enabled = cudaDeviceEnablePeerAccess(1, 0);
  ASSERT_TRUE(enabled == cudaSuccess || enabled == cudaErrorPeerAccessAlreadyEnabled);
  cudaGetLastError();
  auto peer = make_cuda_device(1);
  auto cpu = make_cpu_device(std::int64_t{1} << 30);
  std::mt19937 random(7);
  constexpr std::int64_t kSrc = 16 << 20;
  std::vector<Piece> pieces;
  std::int64_t dst_bytes = 0;
  const auto add = [&](int src_buffer, std::int64_t rows, std::int64_t row_bytes, std::int64_t src_stride) {
    Piece piece;
    piece.src_buffer = src_buffer;
    piece.rows = rows;
    piece.row_bytes = row_bytes;
    piece.src_stride = src_stride;
    piece.dst_stride = row_bytes + 32;
    piece.src_offset = 16 * static_cast<std::int64_t>(random() % 64);
    piece.dst_offset = dst_bytes;
    ASSERT_LE(piece.src_offset + (rows - 1) * src_stride + row_bytes, kSrc);
    dst_bytes += rows * piece.dst_stride;
    pieces.push_back(piece);
  };
  add(0, 1, 3 << 20, 3 << 20);  // peer, contiguous: copy engine, 1-D
  add(0, 512, 4096, 8192);      // peer, strided 2 MiB: copy engine, 2-D
  add(0, 64, 1000, 2048);       // peer, small: kernel
  add(1, 300, 4096, 6000);      // local: kernel
  add(0, 1, 4 << 10, 4 << 10);  // peer, small contiguous: kernel
  add(1, 1, 5 << 20, 5 << 20);  // local, large contiguous: kernel
  add(-1, 200, 2000, 2000);     // message: kernel
  add(0, 2048, 768, 1536);      // peer, strided 1.5 MiB of 768-byte rows: copy engine, 2-D
  add(0, 4096, 128, 256);       // peer, strided 512 KiB of 128-byte rows: kernel (narrower than 256 bytes)
  // The same buffers both rounds: the second call reuses the uploaded table.
  DeviceBytes peer_src(*peer, kSrc), local_src(*device_, kSrc), message(*device_, kSrc), dst(*device_, dst_bytes);
  for (int round = 0; round < 2; ++round) {
    const auto host_peer = testing::random_bytes(random, kSrc);
    const auto host_local = testing::random_bytes(random, kSrc);
    const auto host_message = testing::random_bytes(random, kSrc);
    std::vector<std::uint8_t> expected(static_cast<std::size_t>(dst_bytes), 0);
    std::vector<void*> cpu_bases{const_cast<std::uint8_t*>(host_peer.data()),
                                 const_cast<std::uint8_t*>(host_local.data())};
    cpu->copy_pieces(pieces, cpu_bases, host_message.data(), expected.data());
    peer_src.upload(host_peer);
    local_src.upload(host_local);
    message.upload(host_message);
    dst.upload(std::vector<std::uint8_t>(static_cast<std::size_t>(dst_bytes), 0));
    std::vector<void*> bases{peer_src.data, local_src.data};
    device_->copy_pieces(pieces, bases, message.data, dst.data);
    EXPECT_TRUE(dst.download() == expected) << "round " << round;
  }
}

// The aside lane (the send/recv path lands a bucket there while the next round moves): it starts after the main
// lane's earlier work, and await_aside makes later main-lane work wait for it. Many distinct tables on both lanes,
// more than the device caches, so that tables are evicted and rebuilt while the other lane may still run.
TEST_F(CudaDeviceTest, the_aside_lane_is_ordered_by_its_marks) {
  std::mt19937 random(11);
  constexpr std::int64_t kBytes = 4 << 20;
  const auto host = testing::random_bytes(random, kBytes);
  DeviceBytes a(*device_, kBytes), b(*device_, kBytes), c(*device_, kBytes), d(*device_, kBytes);
  a.upload(host);
  for (int round = 0; round < 400; ++round) {
    // Two pieces split at a point that moves every round: a table of its own each round.
    const std::int64_t split = 16 * (round + 1);
    const std::vector<Piece> main_piece{{0, 0, 0, 1, split, split, split},
                                        {0, split, split, 1, kBytes - split, kBytes - split, kBytes - split}};
    const std::vector<Piece> aside_piece{{-1, 0, 0, 1, split, split, split},
                                         {-1, split, split, 1, kBytes - split, kBytes - split, kBytes - split}};
    b.upload(std::vector<std::uint8_t>(static_cast<std::size_t>(kBytes), 0));
    std::vector<void*> from_a{a.data};
    device_->copy_pieces(main_piece, from_a, nullptr, b.data);    // main: a -> b
    device_->copy_pieces_aside(aside_piece, {}, b.data, c.data);  // aside, after it: b -> c
    device_->mark_aside(round % 2);
    device_->await_aside(round % 2);
    std::vector<void*> from_c{c.data};
    device_->copy_pieces(main_piece, from_c, nullptr, d.data);  // main, after the mark: c -> d
    device_->synchronize();
    ASSERT_TRUE(d.download() == host) << "round " << round;
    d.upload(std::vector<std::uint8_t>(static_cast<std::size_t>(kBytes), 0));
    c.upload(std::vector<std::uint8_t>(static_cast<std::size_t>(kBytes), 0));
  }
}

// A kept table follows its buffers: the same call with the source and the destination moved (an enter after a release
// to the driver gets its shard elsewhere) moves the table instead of building another (no device memory for a second
// table of about 5.6 MB), through empty_cache too, and copies right every time; a destination of another alignment
// gets a table of its own (narrower vectors) and copies right too. Fails on the code before session 8: each pair of
// buffers got its own table, and empty_cache threw them away.
TEST_F(CudaDeviceTest, a_kept_table_follows_moved_buffers_and_copies_right) {
  constexpr std::int64_t kPieces = 100000;
  constexpr std::int64_t kRow = 256;
  std::mt19937 random(5);
  const std::vector<std::vector<std::uint8_t>> hosts = {testing::random_bytes(random, kPieces * kRow),
                                                        testing::random_bytes(random, kPieces * kRow)};
  DeviceBytes src_a(*device_, kPieces * kRow), src_b(*device_, kPieces * kRow);
  DeviceBytes dst_a(*device_, kPieces * kRow + 16), dst_b(*device_, kPieces * kRow + 16);
  src_a.upload(hosts[0]);
  src_b.upload(hosts[1]);
  // Piece i: source row i to destination row kPieces - 1 - i.
  std::vector<Piece> pieces;
  for (std::int64_t i = 0; i < kPieces; ++i)
    pieces.push_back(Piece{0, i * kRow, (kPieces - 1 - i) * kRow, 1, kRow, kRow, kRow});
  const auto expected_from = [&](const std::vector<std::uint8_t>& host) {
    std::vector<std::uint8_t> reversed(host.size());
    for (std::int64_t i = 0; i < kPieces; ++i) {
      std::copy_n(host.begin() + i * kRow, kRow, reversed.begin() + (kPieces - 1 - i) * kRow);
    }
    return reversed;
  };
  const auto copy_and_check = [&](int source, DeviceBytes& dst, std::int64_t offset, const std::string& what) {
    std::vector<void*> bases{source == 0 ? src_a.data : src_b.data};
    device_->copy_pieces(pieces, bases, nullptr, static_cast<char*>(dst.data) + offset);
    const auto copied = dst.download();
    const auto expected = expected_from(hosts[static_cast<std::size_t>(source)]);
    EXPECT_TRUE(std::equal(expected.begin(), expected.end(), copied.begin() + offset)) << what;
  };
  copy_and_check(0, dst_a, 0, "first call");
  const std::int64_t before = device_->memory().used;
  for (int call = 0; call < 8; ++call) {
    if (call == 4) device_->empty_cache(Residency::kGpu);
    copy_and_check(call % 2, (call / 2) % 2 == 0 ? dst_b : dst_a, 0, "call " + std::to_string(call));
  }
  const std::int64_t after = device_->memory().used;
  EXPECT_LE(after - before, std::int64_t{2} << 20) << "the kept table should have moved, not been built again";
  copy_and_check(1, dst_b, 2, "a destination aligned to 2 bytes");
}

TEST_F(CudaDeviceTest, generate_agrees_with_the_cpu_device_bit_for_bit) {
  auto cpu = make_cpu_device(1 << 20);
  for (DType dtype : {DType::kBFloat16, DType::kFloat16, DType::kFloat32}) {
    testing::check_generate(*device_, dtype, 5);
    const BufferLayout layout = testing::sample_layout(dtype);
    std::vector<std::uint8_t> expected(static_cast<std::size_t>(layout.bytes));
    cpu->generate(layout, 5, expected.data());
    DeviceBytes actual(*device_, layout.bytes);
    device_->generate(layout, 5, actual.data);
    EXPECT_TRUE(actual.download() == expected) << dtype_name(dtype);
  }
}

TEST_F(CudaDeviceTest, counts_mismatches_by_element_size) { testing::check_count_mismatches(*device_); }

TEST_F(CudaDeviceTest, flat_buffer_moves_through_pinned_memory_keep_contents) {
  RecordingEventSink events;
  const std::int64_t gpu_before = device_->bytes_in_use(Residency::kGpu);
  FlatBufferInfo info;
  info.name = "train.params.pp1.vpp0";
  info.bytes = (3 << 20) + 6;
  FlatBuffer buffer(info, *device_, &events, 0);
  buffer.move_to(Residency::kGpu);
  std::mt19937 random(3);
  const auto pattern = testing::random_bytes(random, info.bytes);
  device_->copy(buffer.data(), Residency::kGpu, pattern.data(), Residency::kCpu, info.bytes);
  device_->synchronize();
  buffer.move_to(Residency::kCpu);
  EXPECT_EQ(device_->bytes_in_use(Residency::kGpu), gpu_before);
  EXPECT_EQ(device_->bytes_in_use(Residency::kCpu), info.bytes);
  EXPECT_EQ(std::memcmp(buffer.data(), pattern.data(), pattern.size()), 0);  // pinned memory is host-readable
  buffer.move_to(Residency::kGpu);
  std::vector<std::uint8_t> back(pattern.size());
  device_->copy(back.data(), Residency::kCpu, buffer.data(), Residency::kGpu, info.bytes);
  device_->synchronize();
  EXPECT_TRUE(back == pattern);
  int transfers = 0;
  for (const Event& event : events.events()) transfers += event.type == EventType::kTransfer ? 1 : 0;
  EXPECT_EQ(transfers, 2);
}

TEST_F(CudaDeviceTest, loopback_replays_peer_data_in_device_memory) {
  int asked = 0;
  auto comm =
      make_loopback_communicator(0, 2, *device_, [&](int peer, std::uint64_t sequence, void* dst, std::size_t bytes) {
        ++asked;
        std::vector<std::uint8_t> host(bytes);
        for (std::size_t i = 0; i < bytes; ++i) host[i] = static_cast<std::uint8_t>(peer + sequence + i);
        device_->copy(dst, Residency::kGpu, host.data(), Residency::kCpu, static_cast<std::int64_t>(bytes));
        device_->synchronize();
      });
  DeviceBytes send(*device_, 4096), recv(*device_, 8192);
  std::mt19937 random(4);
  const auto mine = testing::random_bytes(random, 4096);
  send.upload(mine);
  for (int iteration = 0; iteration < 3; ++iteration) {
    comm->reset_sequence();
    comm->all_gather(send.data, recv.data, 4096);
    device_->synchronize();
    const auto got = recv.download();
    for (std::size_t i = 0; i < 4096; ++i) {
      ASSERT_EQ(got[i], mine[i]);
      ASSERT_EQ(got[4096 + i], static_cast<std::uint8_t>(1 + i));
    }
  }
  EXPECT_EQ(asked, 1);
}

}  // namespace
}  // namespace hybridshard::core
