// `hybridshard export JOB.yaml --out DIR`: builds the train layout (from the checkpoint, or the seeded weights),
// runs enter with every rank as a thread on CPU devices over Gloo (127.0.0.1), and writes DIR/rank-<r>.safetensors
// for each rank r of the first inference tensor-parallel group, with vLLM names, shapes and the model's dtype.
#pragma once

#include <filesystem>
#include <iosfwd>

#include "hybridshard/service/config/job_config.h"

namespace hybridshard::service {

// Returns the number of files written; throws core::Error (naming the rank) on failure, leaving no partial file.
int export_inference_shards(const JobConfig& job, const std::filesystem::path& out_dir, std::ostream& log);

}  // namespace hybridshard::service
