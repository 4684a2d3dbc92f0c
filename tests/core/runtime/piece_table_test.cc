// The CUDA device's copy_pieces tables, built without a GPU (detail::make_piece_table), and the per-enter counts a
// plan gives (core::enter_work), which use the same function.
#include "detail/piece_table.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "hybridshard/core/enter_work.h"
#include "hybridshard/core/error.h"

namespace hybridshard::core {
namespace {

void* at(std::uintptr_t address) { return reinterpret_cast<void*>(address); }

Piece contiguous(int src_buffer, std::int64_t src, std::int64_t dst, std::int64_t bytes) {
  return Piece{src_buffer, src, dst, 1, bytes, bytes, bytes};
}

TEST(PieceTableTest, peer_pieces_go_to_the_copy_engines_unless_small_or_narrow_and_own_pieces_to_the_kernel) {
  const detail::PieceRouting routing;  // the defaults: engine, 256-byte rows
  const std::vector<Piece> pieces = {
      contiguous(1, 0, 0, 1 << 20),                       // peer, contiguous 1 MiB: copy engines
      Piece{1, 1 << 20, 1 << 20, 6144, 128, 256, 128},    // peer, 128-byte rows: kernel
      Piece{1, 4 << 20, 4 << 20, 256, 4096, 8192, 4096},  // peer, 4 KiB rows, 1 MiB: copy engines (2-D)
      contiguous(1, 8 << 20, 8 << 20, 100 << 10),         // peer, 100 KiB: kernel
      contiguous(0, 0, 16 << 20, 1 << 20),                // own buffer: kernel
  };
  const std::vector<void*> bases = {at(1ull << 40), at(2ull << 40)};
  const detail::PieceTable table =
      detail::make_piece_table(pieces, bases, nullptr, at(3ull << 40), {false, true}, routing);
  ASSERT_EQ(table.engine_copies.size(), 2u);
  EXPECT_EQ(table.engine_copies[0].rows, 1);
  EXPECT_EQ(table.engine_copies[1].rows, 256);
  EXPECT_EQ(table.engine_copies[1].src_stride, 8192);
  EXPECT_EQ(table.max_blocks, routing.kernel_blocks_beside_engines);
  ASSERT_EQ(table.entries.size(), 3u);
  // 768 KiB, 100 KiB and 1 MiB in 64 KiB chunks: 12 + 2 + 16; the 14 reading the peer spread through the grid,
  // starting with one.
  EXPECT_EQ(table.chunks.size(), 30u);
  EXPECT_EQ(table.chunks.front().piece, 0);
  EXPECT_EQ(table.entries[0].vector_bytes, 16);
  EXPECT_EQ(table.device_bytes(),
            static_cast<std::int64_t>(3 * sizeof(detail::DevicePiece) + 30 * sizeof(detail::DeviceChunk)));

  detail::PieceRouting kernel_only;
  kernel_only.peer_copy = detail::PieceRouting::PeerCopy::kKernel;
  kernel_only.kernel_blocks_beside_engines = 66;
  const detail::PieceTable alone =
      detail::make_piece_table(pieces, bases, nullptr, at(3ull << 40), {false, true}, kernel_only);
  EXPECT_TRUE(alone.engine_copies.empty());
  EXPECT_EQ(alone.max_blocks, 0);  // the kernel alone: one block per chunk
  detail::PieceRouting capped = routing;
  capped.kernel_blocks_beside_engines = 66;
  EXPECT_EQ(detail::make_piece_table(pieces, bases, nullptr, at(3ull << 40), {false, true}, capped).max_blocks, 66);
  detail::PieceRouting narrow_rows_too;
  narrow_rows_too.engine_min_row_bytes = 0;
  EXPECT_EQ(detail::make_piece_table(pieces, bases, nullptr, at(3ull << 40), {false, true}, narrow_rows_too)
                .engine_copies.size(),
            3u);
}

// A table follows its buffers: the same call with moved bases has the same shape key, and the kept table moved to
// them is the table built against them, copy for copy and entry for entry; an alignment or a side of the link that
// changes gives another shape (the vector widths and the routing differ).
TEST(PieceTableTest, a_table_moved_to_new_bases_is_the_one_built_there_and_alignment_or_link_change_the_shape) {
  const detail::PieceRouting routing;
  const std::vector<Piece> pieces = {
      contiguous(1, 0, 0, 1 << 20),
      Piece{1, 1 << 20, 1 << 20, 6144, 128, 256, 128},
      Piece{1, 4 << 20, 4 << 20, 256, 4096, 8192, 4096},
      contiguous(0, 0, 16 << 20, 1 << 20),
      contiguous(-1, 4096, 18 << 20, 64 << 10),  // from the message
  };
  const std::vector<bool> remote = {false, true};
  const std::vector<void*> before = {at(1ull << 40), at(2ull << 40)};
  const std::vector<void*> after = {at((1ull << 40) + (6ull << 30)), at((2ull << 40) - (10ull << 21))};
  const auto key = [&](const std::vector<void*>& bases, const void* message, const void* dst,
                       const std::vector<bool>& on) {
    return detail::piece_table_shape_key(pieces, bases, message, dst, on);
  };
  EXPECT_EQ(key(before, at(4ull << 40), at(3ull << 40), remote), key(after, at(5ull << 40), at(7ull << 40), remote));
  EXPECT_NE(key(before, at(4ull << 40), at(3ull << 40), remote),
            key(before, at(4ull << 40), at((3ull << 40) + 2), remote));
  EXPECT_NE(key(before, at(4ull << 40), at(3ull << 40), remote),
            key(before, at(4ull << 40), at(3ull << 40), {false, false}));

  detail::PieceTable moved = detail::make_piece_table(pieces, before, at(4ull << 40), at(3ull << 40), remote, routing);
  detail::rebase_piece_table(moved, before, at(4ull << 40), at(3ull << 40), after, at(5ull << 40), at(7ull << 40));
  const detail::PieceTable built =
      detail::make_piece_table(pieces, after, at(5ull << 40), at(7ull << 40), remote, routing);
  const auto same = [](const std::vector<detail::DevicePiece>& a, const std::vector<detail::DevicePiece>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (a[i].src != b[i].src || a[i].dst != b[i].dst || a[i].rows != b[i].rows || a[i].row_bytes != b[i].row_bytes ||
          a[i].src_stride != b[i].src_stride || a[i].dst_stride != b[i].dst_stride ||
          a[i].vector_bytes != b[i].vector_bytes) {
        return false;
      }
    }
    return true;
  };
  ASSERT_EQ(built.engine_copies.size(), 2u);
  ASSERT_EQ(built.entries.size(), 3u);
  EXPECT_TRUE(same(moved.engine_copies, built.engine_copies));
  EXPECT_TRUE(same(moved.entries, built.entries));
  EXPECT_EQ(built.entries.back().src, static_cast<const unsigned char*>(at(5ull << 40)) + 4096);
  const std::vector<void*> one = {at(1ull << 40)};
  EXPECT_THROW(detail::rebase_piece_table(moved, before, nullptr, at(3ull << 40), one, nullptr, at(3ull << 40)), Error);
}

// The measuring knobs: read from the environment, each checked against its range with an error naming it.
TEST(PieceTableTest, routing_knobs_come_from_the_environment_and_bad_values_name_the_variable) {
  const auto with = [](const char* name, const char* value) {
    setenv(name, value, 1);
    try {
      const detail::PieceRouting routing = detail::PieceRouting::from_environment();
      unsetenv(name);
      return routing;
    } catch (...) {
      unsetenv(name);
      throw;
    }
  };
  EXPECT_EQ(with("HYBRIDSHARD_PEER_COPY_STREAMS", "8").engine_streams, 8);
  EXPECT_EQ(with("HYBRIDSHARD_PEER_COPY_MIN_ROW", "1024").engine_min_row_bytes, 1024);
  EXPECT_EQ(with("HYBRIDSHARD_PEER_KERNEL_BLOCKS", "33").kernel_blocks_beside_engines, 33);
  EXPECT_EQ(with("HYBRIDSHARD_PEER_KERNEL_BLOCKS", "").kernel_blocks_beside_engines, 0);  // empty: the default
  for (const auto& [name, value] :
       std::vector<std::pair<const char*, const char*>>{{"HYBRIDSHARD_PEER_COPY_STREAMS", "0"},
                                                        {"HYBRIDSHARD_PEER_COPY_STREAMS", "65"},
                                                        {"HYBRIDSHARD_PEER_COPY_MIN_ROW", "-1"},
                                                        {"HYBRIDSHARD_PEER_KERNEL_BLOCKS", "12x"}}) {
    try {
      with(name, value);
      ADD_FAILURE() << name << "=" << value << ": no error";
    } catch (const ConfigError& error) {
      EXPECT_NE(std::string(error.what()).find(std::string(name) + ": '" + value + "'"), std::string::npos)
          << error.what();
    }
  }
}

TEST(PieceTableTest, a_source_buffer_out_of_range_is_an_error_naming_the_piece) {
  const std::vector<Piece> pieces = {contiguous(0, 0, 0, 64), contiguous(2, 0, 64, 64)};
  const std::vector<void*> bases = {at(1ull << 40)};
  try {
    detail::make_piece_table(pieces, bases, nullptr, at(2ull << 40), {false}, {});
    FAIL() << "no error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("piece 1 reads source buffer 2 of 1"), std::string::npos) << error.what();
  }
}

// Qwen3-30B-A3B, train tp 1 dp 2 EP 2 -> rollout tp' 2 (vLLM's tensor-parallel experts), rank 0, peer on another
// GPU: it reads the w13 halves and the w2 halves of the peer's 64 experts per layer. One piece per w13 half is 6144
// copy-engine calls per enter (64 experts x gate and up x 48 layers); coalesced, each layer's 128 halves are one 2-D
// piece at one stride: 48. The w2 halves (768-byte rows, wide enough for the copy engines) are one 2-D piece per
// layer either way (the experts' fc2 rows lie at one stride): 48 more.
TEST(EnterWorkTest, coalescing_makes_one_copy_per_layer_of_the_experts_halves) {
  const ModelSpec spec = *model_preset("qwen3-30b-a3b");
  const TrainLayout train{.tp = 1, .dp = 2, .ep = 2};
  const InferenceLayout inference{.tp = 2, .world_size = 2};
  const RankPlan per_transfer = make_rank_plan(spec, train, inference, 0, PlanOptions{.coalesce_rows = false});
  const RankPlan coalesced = make_rank_plan(spec, train, inference, 0);
  const EnterWork before = enter_work(per_transfer, EnterPath::kPeerOtherDevices);
  const EnterWork after = enter_work(coalesced, EnterPath::kPeerOtherDevices);
  EXPECT_EQ(before.copy_engine_calls, (64 * 2 + 1) * spec.num_hidden_layers);
  EXPECT_EQ(after.copy_engine_calls, 2 * spec.num_hidden_layers);
  EXPECT_EQ(before.kernel_launches, 1);
  EXPECT_EQ(after.kernel_launches, 1);
  EXPECT_EQ(after.pieces.bytes, before.pieces.bytes);
  EXPECT_EQ(after.pieces.bytes, coalesced.bytes_local() + coalesced.bytes_received());
  EXPECT_LT(after.pieces.count * 20, before.pieces.count);
  // The same bytes through the kernel in the same 64 KiB blocks.
  EXPECT_EQ(after.kernel_blocks, before.kernel_blocks);
  // One GPU (loopback): no copy engines, everything in one launch.
  const EnterWork one_gpu = enter_work(coalesced, EnterPath::kPeerSameDevice);
  EXPECT_EQ(one_gpu.copy_engine_calls, 0);
  EXPECT_EQ(one_gpu.kernel_launches, 1);
  EXPECT_GE(one_gpu.kernel_blocks * detail::kCopyChunkBytes, one_gpu.pieces.bytes);
}

}  // namespace
}  // namespace hybridshard::core
