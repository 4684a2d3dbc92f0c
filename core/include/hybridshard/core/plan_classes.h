// Classes of ranks whose reshard plans have one shape: the same train shards (tp and pp rank, expert coordinates),
// the same inference tensor-parallel rank, and the same messages to and from peers up to the data-parallel replica
// index of every peer. Planning one rank per class plans the job.
//
// Why a class needs only a few replica indices: a rank (t, d, p) receives from ranks (t', d + o, p') and sends to
// ranks (t', d - o, p') with offsets o in [0, expert_period). Its inference tensor-parallel rank is
// (p * dp * tp + d * tp + t) mod tp', a function of d mod tp' / gcd(tp, tp'). So away from the ends of [0, dp), where
// the offsets wrap around, data-parallel ranks d and d + L with L = lcm(expert_period, tp' / gcd(tp, tp')) plan alike.
#pragma once

#include <string>
#include <vector>

#include "hybridshard/core/inference_layout.h"
#include "hybridshard/core/train_layout.h"

namespace hybridshard::core {

struct PlanClass {
  int representative = 0;  // the smallest rank of the class; plan this one
  std::vector<int> ranks;  // ascending
};

// The data-parallel rank whose ranks plan as those of `dp_rank` do (itself near the ends of [0, dp)).
int class_replica(const TrainLayout& train, const InferenceLayout& inference, int dp_rank);

// Every distinct class_replica(), ascending: at most 2 * expert_period + L of them, whatever dp is.
std::vector<int> representative_replicas(const TrainLayout& train, const InferenceLayout& inference);

// The classes of all ranks, by ascending representative. Time and memory linear in the world size.
std::vector<PlanClass> plan_classes(const TrainLayout& train, const InferenceLayout& inference);

// Ascending ranks as ranges: {0,1,2,3,8,9,10} -> "0-3,8-10"; runs of one larger step from 3 ranks on:
// {0,8,16,24,1000} -> "0-24 every 8,1000".
std::string rank_ranges(const std::vector<int>& ranks);

}  // namespace hybridshard::core
