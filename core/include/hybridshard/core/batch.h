// Batch re-distribution around the rollout, generalised from the seed's to any layout pair.
//
// The global batch is the concatenation of the train data-parallel replicas' batches (rows of token ids, equal
// counts). Before rollout, inference data-parallel group g (ranks g*tp'..) gets rows [g*N/G, (g+1)*N/G) of it, where
// G = world / tp', taken from the tensor-parallel source ranks (tp rank 0, stage 0) of the replicas holding them.
// After rollout, every rank of train replica d gets the outputs for its replica's rows, from the inference groups'
// tp-rank-0 members. For tp' <= tp and pp = 1 this is the seed's broadcast-from-tp-source, chunk over micro-dp,
// all-gather over micro-dp; pipeline stages count as extra data parallelism, as in the seed.
#pragma once

#include <cstdint>
#include <vector>

#include "hybridshard/core/communicator.h"
#include "hybridshard/core/inference_layout.h"
#include "hybridshard/core/train_layout.h"

namespace hybridshard::core {

struct TokenBatch {
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::vector<std::int32_t> tokens;  // rows * cols, row-major
};

class BatchRedistribution {
 public:
  // `world` is the job's communicator on host memory (Gloo) or device memory (NCCL); batches live in host memory and
  // are staged as needed.
  BatchRedistribution(TrainLayout train, InferenceLayout inference, Communicator& world);
  // For communicators on device memory (NCCL, loopback): messages are staged through `device`. Required for them;
  // with Gloo the device is not used.
  BatchRedistribution(TrainLayout train, InferenceLayout inference, Communicator& world, Device& device);

  // On train source ranks (tp rank 0, stage 0) `replica_batch` is the replica's batch; elsewhere it is ignored
  // (rows/cols must still be given: every replica has `rows_per_replica` rows of `cols` tokens).
  TokenBatch preprocess(const TokenBatch& replica_batch, std::int64_t rows_per_replica, std::int64_t cols);

  // `outputs` are this rank's inference group's outputs for the rows preprocess gave it (identical on every member
  // of the group). Returns the replica's outputs, in the replica's row order, on every rank of the replica.
  TokenBatch postprocess(const TokenBatch& outputs, std::int64_t rows_per_replica);

 private:
  TrainLayout train_;
  InferenceLayout inference_;
  Communicator& world_;
  Device* device_ = nullptr;
};

}  // namespace hybridshard::core
