// Batch re-distribution on Gloo ranks (threads on 127.0.0.1): preprocess gives each inference group its rows of the
// global batch, postprocess gives every rank of a train replica its replica's outputs, for several layout pairs.
// Built a second time as batch_nccl_test (HYBRIDSHARD_TEST_NCCL): on NCCL ranks, one GPU each (test_backend.h).
#include "hybridshard/core/batch.h"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "hybridshard/core/communicator.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/error.h"
#include "hybridshard/core/store.h"
#include "rank_threads.h"
#include "test_backend.h"

namespace hybridshard::core {
namespace {

using std::chrono::milliseconds;
constexpr milliseconds kTimeout{20000};

struct BatchCase {
  std::string name;
  TrainLayout train;
  int inference_tp = 1;
  std::int64_t rows_per_replica = 0;
};

TrainLayout train_layout(int tp, int pp, int dp) {
  TrainLayout layout;
  layout.tp = tp;
  layout.pp = pp;
  layout.dp = dp;
  return layout;
}

// Token (row, col) of the global prompt batch, and what the "rollout" makes of a row.
std::int32_t prompt_token(std::int64_t row, std::int64_t col) { return static_cast<std::int32_t>(row * 1000 + col); }
std::int32_t output_token(std::int64_t row, std::int64_t col) {
  return static_cast<std::int32_t>(-(row * 1000 + col) - 7);
}

class BatchTest : public ::testing::TestWithParam<BatchCase> {
 protected:
  void SetUp() override {
    if (const std::string why = testing::why_not_runnable(GetParam().train.world_size()); !why.empty()) {
      GTEST_SKIP() << why;
    }
    StoreOptions options;
    options.port = 0;
    options.is_server = true;
    options.timeout = kTimeout;
    server_ = Store::open(options);
  }
  std::unique_ptr<Store> server_;
};

TEST_P(BatchTest, round_trip_gives_groups_their_rows_and_replicas_their_outputs) {
  const BatchCase& c = GetParam();
  InferenceLayout inference;
  inference.tp = c.inference_tp;
  inference.world_size = c.train.world_size();
  constexpr std::int64_t kCols = 5;
  constexpr std::int64_t kOutputCols = 3;
  const std::int64_t total = c.train.dp * c.rows_per_replica;
  const std::int64_t groups = inference.dp();
  testing::run_ranks(c.train.world_size(), [&](int rank) {
    StoreOptions options;
    options.port = server_->port();
    options.timeout = kTimeout;
    auto store = Store::open(options);
    auto device = testing::make_rank_device(rank, std::int64_t{1} << 26);
    auto world = testing::make_rank_communicator(*store, rank, c.train.world_size(), kTimeout);
    BatchRedistribution batches(c.train, inference, *world, *device);

    // Only the train source ranks hold their replica's prompts; the others pass an empty batch.
    const TrainLayout::Coord coord = c.train.coord(rank);
    TokenBatch replica;
    if (coord.tp_rank == 0 && coord.pp_rank == 0) {
      replica.rows = c.rows_per_replica;
      replica.cols = kCols;
      for (std::int64_t r = 0; r < c.rows_per_replica; ++r) {
        for (std::int64_t col = 0; col < kCols; ++col) {
          replica.tokens.push_back(prompt_token(coord.dp_rank * c.rows_per_replica + r, col));
        }
      }
    }
    const TokenBatch mine = batches.preprocess(replica, c.rows_per_replica, kCols);
    const std::int64_t group = inference.coord(rank).dp_rank;
    const std::int64_t begin = group * total / groups;
    const std::int64_t end = (group + 1) * total / groups;
    ASSERT_EQ(mine.rows, end - begin);
    ASSERT_EQ(mine.cols, kCols);
    for (std::int64_t r = 0; r < mine.rows; ++r) {
      for (std::int64_t col = 0; col < kCols; ++col) {
        ASSERT_EQ(mine.tokens[static_cast<std::size_t>(r * kCols + col)], prompt_token(begin + r, col))
            << "rank " << rank << " row " << r;
      }
    }

    // Every member of the group produces the same outputs (here: a function of the global row), other width.
    TokenBatch outputs;
    outputs.rows = mine.rows;
    outputs.cols = kOutputCols;
    for (std::int64_t r = 0; r < mine.rows; ++r) {
      for (std::int64_t col = 0; col < kOutputCols; ++col) outputs.tokens.push_back(output_token(begin + r, col));
    }
    const TokenBatch back = batches.postprocess(outputs, c.rows_per_replica);
    ASSERT_EQ(back.rows, c.rows_per_replica);
    ASSERT_EQ(back.cols, kOutputCols);
    for (std::int64_t r = 0; r < back.rows; ++r) {
      for (std::int64_t col = 0; col < kOutputCols; ++col) {
        ASSERT_EQ(back.tokens[static_cast<std::size_t>(r * kOutputCols + col)],
                  output_token(coord.dp_rank * c.rows_per_replica + r, col))
            << "rank " << rank << " row " << r;
      }
    }
  });
}

INSTANTIATE_TEST_SUITE_P(Layouts, BatchTest,
                         ::testing::Values(BatchCase{"tp2_to_tp1", train_layout(2, 1, 1), 1, 3},
                                           BatchCase{"pp2_to_tp2", train_layout(1, 2, 1), 2, 4},
                                           BatchCase{"tp2_dp2_to_tp1", train_layout(2, 1, 2), 1, 4},
                                           BatchCase{"tp2_pp2_to_tp1", train_layout(2, 2, 1), 1, 8},
                                           BatchCase{"tp1_dp2_to_tp2", train_layout(1, 1, 2), 2, 3},
                                           BatchCase{"tp4_to_tp2", train_layout(4, 1, 1), 2, 6},
                                           BatchCase{"tp1_pp2_dp2_to_tp4", train_layout(1, 2, 2), 4, 5},
                                           BatchCase{"tp2_pp3_to_tp3_uneven", train_layout(2, 3, 1), 3, 7},
                                           BatchCase{"tp2_dp3_to_tp2_uneven", train_layout(2, 1, 3), 2, 5}),
                         [](const ::testing::TestParamInfo<BatchCase>& case_info) { return case_info.param.name; });

PeerDataProvider unused_peers() {
  return [](int, std::uint64_t, void*, std::size_t) { ADD_FAILURE() << "no peer should be asked"; };
}

TEST(BatchRedistributionTest, single_rank_round_trip_and_shape_checks) {
  auto device = make_cpu_device(1 << 20);
  auto world = make_loopback_communicator(0, 1, *device, unused_peers());
  InferenceLayout inference;
  BatchRedistribution batches(train_layout(1, 1, 1), inference, *world, *device);
  TokenBatch batch{2, 3, {1, 2, 3, 4, 5, 6}};
  const TokenBatch mine = batches.preprocess(batch, 2, 3);
  EXPECT_EQ(mine.tokens, batch.tokens);
  const TokenBatch back = batches.postprocess(TokenBatch{2, 1, {9, 8}}, 2);
  EXPECT_EQ(back.tokens, (std::vector<std::int32_t>{9, 8}));
  EXPECT_THROW(batches.preprocess(TokenBatch{1, 3, {1, 2, 3}}, 2, 3), Error);
  EXPECT_THROW(batches.postprocess(TokenBatch{3, 1, {1, 2, 3}}, 2), Error);
  // Device-memory communicators need a device to stage through.
  BatchRedistribution without_device(train_layout(1, 1, 1), inference, *world);
  EXPECT_THROW(without_device.preprocess(batch, 2, 3), ConfigError);
}

TEST(BatchRedistributionTest, layouts_of_different_worlds_are_rejected) {
  auto device = make_cpu_device(1 << 20);
  auto world = make_loopback_communicator(0, 2, *device, unused_peers());
  InferenceLayout inference;
  inference.world_size = 1;
  EXPECT_THROW(BatchRedistribution(train_layout(2, 1, 1), inference, *world), ConfigError);
}

}  // namespace
}  // namespace hybridshard::core
