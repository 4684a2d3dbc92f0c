#include "hybridshard/core/plan_classes.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <tuple>

namespace hybridshard::core {
namespace {

// L of the header: the data-parallel period of a rank's plan away from the ends.
int replica_period(const TrainLayout& train, const InferenceLayout& inference) {
  const int inference_period = inference.tp / std::gcd(train.tp, inference.tp);
  return std::lcm(train.expert_period(), inference_period);
}

}  // namespace

int class_replica(const TrainLayout& train, const InferenceLayout& inference, int dp_rank) {
  const int reach = train.expert_period();  // offsets [0, reach) wrap near the ends
  const int first = reach - 1;              // the first replica whose window does not wrap below 0
  const int last = train.dp - reach;        // the last one whose window does not wrap above dp - 1
  if (dp_rank < first || dp_rank > last) return dp_rank;
  const int period = replica_period(train, inference);
  return first + (dp_rank - first) % period;
}

std::vector<int> representative_replicas(const TrainLayout& train, const InferenceLayout& inference) {
  const int reach = train.expert_period();
  const int span = reach + replica_period(train, inference);
  std::vector<int> replicas;
  for (int d = 0; d < std::min(train.dp, span); ++d) replicas.push_back(class_replica(train, inference, d));
  for (int d = std::max(0, train.dp - reach); d < train.dp; ++d) replicas.push_back(class_replica(train, inference, d));
  std::sort(replicas.begin(), replicas.end());
  replicas.erase(std::unique(replicas.begin(), replicas.end()), replicas.end());
  return replicas;
}

std::vector<PlanClass> plan_classes(const TrainLayout& train, const InferenceLayout& inference) {
  std::map<std::tuple<int, int, int>, std::size_t> index;  // (pp, class replica, tp) -> class
  std::vector<PlanClass> classes;
  for (int rank = 0; rank < train.world_size(); ++rank) {
    const TrainLayout::Coord coord = train.coord(rank);
    const auto key = std::make_tuple(coord.pp_rank, class_replica(train, inference, coord.dp_rank), coord.tp_rank);
    const auto [it, added] = index.emplace(key, classes.size());
    if (added) classes.push_back(PlanClass{rank, {}});
    classes[it->second].ranks.push_back(rank);
  }
  return classes;
}

std::string rank_ranges(const std::vector<int>& ranks) {
  std::string text;
  for (std::size_t i = 0; i < ranks.size();) {
    // The longest run from i with one step; a run of steps > 1 is written as one only from 3 ranks on.
    std::size_t j = i;
    const int step = i + 1 < ranks.size() ? ranks[i + 1] - ranks[i] : 1;
    while (j + 1 < ranks.size() && ranks[j + 1] - ranks[j] == step) ++j;
    if (step > 1 && j < i + 2) j = i;
    if (!text.empty()) text += ",";
    text += std::to_string(ranks[i]);
    if (j > i) text += "-" + std::to_string(ranks[j]);
    if (j > i && step > 1) text += " every " + std::to_string(step);
    i = j + 1;
  }
  return text;
}

}  // namespace hybridshard::core
