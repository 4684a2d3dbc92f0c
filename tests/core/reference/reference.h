// An independent reference for the layouts: the expected contents of every vLLM inference tensor and every
// Megatron-Core train tensor, built by slicing and concatenating full Hugging Face tensors the way vLLM's weight
// loaders and Megatron's checkpoint converters do. It does not use the engine's layout or plan code (only ModelSpec's
// list of full tensors and core::weight_value), so that a mistake in the engine cannot hide in its own checks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "hybridshard/core/buffer_layout.h"
#include "hybridshard/core/dtype.h"
#include "hybridshard/core/inference_layout.h"
#include "hybridshard/core/model_spec.h"
#include "hybridshard/core/train_layout.h"

namespace hybridshard::reference {

// A row-major tensor of floats. 1-D tensors have shape {n} and cols == 1.
struct ExpectedTensor {
  std::vector<std::int64_t> shape;
  std::int64_t rows = 0;
  std::int64_t cols = 1;
  std::vector<float> values;  // rows * cols
};

using ExpectedTensors = std::map<std::string, ExpectedTensor>;

// The full Hugging Face tensor `name` ("model.layers.0.self_attn.q_proj.weight") at `version`; throws if unknown.
ExpectedTensor full_tensor(const core::ModelSpec& spec, const std::string& name, std::uint32_t version);

// Every vLLM tensor of inference tensor-parallel rank `tp_rank` (uses inference.tp, inference.pad_vocab_to and
// inference.expert_parallel). Experts are read by their Hugging Face per-expert names.
ExpectedTensors expected_inference_tensors(const core::ModelSpec& spec, const core::InferenceLayout& inference,
                                           int tp_rank, std::uint32_t version);

// Every Megatron-Core tensor of train rank (tp_rank, dp_rank, pp_rank), virtual-pipeline chunk `vpp_chunk` (uses
// train.tp, train.pp, train.vpp, train.ep, train.etp and train.make_vocab_size_divisible_by; dp_rank matters only to
// the experts).
ExpectedTensors expected_train_tensors(const core::ModelSpec& spec, const core::TrainLayout& train, int tp_rank,
                                       int pp_rank, int vpp_chunk, std::uint32_t version, int dp_rank = 0);

// A flat buffer of `layout.bytes` bytes in `layout.dtype`, every tensor of `layout` filled from `expected` by name,
// all other bytes zero. Throws core::Error if a name is unknown, a shape differs, or an expected tensor is missing.
std::vector<std::uint8_t> fill_buffer(const ExpectedTensors& expected, const core::BufferLayout& layout);

std::vector<std::uint8_t> expected_inference_buffer(const core::ModelSpec& spec, const core::InferenceLayout& inference,
                                                    int tp_rank, std::uint32_t version,
                                                    const core::BufferLayout& layout);
std::vector<std::uint8_t> expected_train_buffer(const core::ModelSpec& spec, const core::TrainLayout& train,
                                                int tp_rank, int pp_rank, int vpp_chunk, std::uint32_t version,
                                                const core::BufferLayout& layout, int dp_rank = 0);

// "" when `actual` equals `expected`; else the first differing tensor, element and values, for test messages.
std::string first_difference(const core::BufferLayout& layout, const std::vector<std::uint8_t>& expected,
                             const std::uint8_t* actual, std::size_t actual_bytes);

// Bit conversions (round to nearest even).
std::uint16_t float_to_bf16(float value);
float bf16_to_float(std::uint16_t bits);
std::uint16_t float_to_fp16(float value);
float fp16_to_float(std::uint16_t bits);

// One value in `dtype`, written to / read from `bytes` (little-endian, dtype_size(dtype) bytes).
void encode(float value, core::DType dtype, std::uint8_t* bytes);
float decode(const std::uint8_t* bytes, core::DType dtype);

}  // namespace hybridshard::reference
