// One-rank NCCL: every operation runs for real on the GPU (NCCL cannot put two ranks on one GPU).
#include <gtest/gtest.h>

#include "device_checks.h"
#include "hybridshard/core/communicator.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/error.h"
#include "hybridshard/core/store.h"

namespace hybridshard::core {
namespace {

using testing::DeviceBytes;

class NcclCommunicatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    device_ = make_cuda_device(0);
    StoreOptions options;
    options.port = 0;
    options.is_server = true;
    options.timeout = std::chrono::milliseconds(20000);
    store_ = Store::open(options);
    comm_ = make_nccl_communicator(*store_, 0, 1, 0, std::chrono::milliseconds(20000));
  }
  std::unique_ptr<Device> device_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Communicator> comm_;
};

TEST_F(NcclCommunicatorTest, one_rank_all_gather_copies_its_own_bytes) {
  EXPECT_EQ(comm_->backend(), Backend::kNccl);
  EXPECT_EQ(comm_->size(), 1);
  std::mt19937 random(1);
  const auto data = testing::random_bytes(random, 12345);
  DeviceBytes send(*device_, 12345), recv(*device_, 12345);
  send.upload(data);
  comm_->all_gather(send.data, recv.data, 12345);
  EXPECT_TRUE(recv.download() == data);
}

TEST_F(NcclCommunicatorTest, one_rank_exchange_with_itself_and_broadcast_and_all_reduce) {
  std::mt19937 random(2);
  const auto data = testing::random_bytes(random, 1000);
  DeviceBytes send(*device_, 1000), recv(*device_, 1000);
  send.upload(data);
  const SendSpec sends[] = {{0, send.data, 1000}};
  const RecvSpec recvs[] = {{0, recv.data, 1000}};
  comm_->exchange(sends, recvs);
  EXPECT_TRUE(recv.download() == data);

  comm_->broadcast(recv.data, 1000, 0);
  EXPECT_TRUE(recv.download() == data);

  std::vector<std::uint8_t> floats(4 * sizeof(float));
  const float values[4] = {1.0f, -2.5f, 3.0f, 0.125f};
  std::memcpy(floats.data(), values, sizeof values);
  DeviceBytes reduce(*device_, sizeof values);
  reduce.upload(floats);
  comm_->all_reduce_sum(static_cast<float*>(reduce.data), 4);
  EXPECT_TRUE(reduce.download() == floats);
  comm_->barrier();
}

TEST_F(NcclCommunicatorTest, one_rank_subgroup_and_abort) {
  auto group = comm_->subgroup({0});
  ASSERT_NE(group, nullptr);
  EXPECT_EQ(group->size(), 1);
  group->barrier();
  comm_->abort();
  EXPECT_THROW(comm_->barrier(), CommError);
}

}  // namespace
}  // namespace hybridshard::core
