// The JSON document of a BenchReport (nlohmann::json, keys in the tables' order). Times and bandwidths that are not
// finite become null; #wrong is null where nothing was checked.
#include <nlohmann/json.hpp>

#include "hybridshard/service/bench/bench.h"

namespace hybridshard::service::bench {

using Json = nlohmann::ordered_json;

void to_json(Json& json, const PhaseRow& row) {
  json = Json{{"phase", row.phase},
              {"strategy", row.strategy},
              {"policy", row.policy},
              {"release", row.release},
              {"bytes", row.bytes},
              {"time_us", row.time_us},
              {"algbw_gbps", row.algbw_gbps},
              {"busbw_gbps", row.busbw_gbps},
              {"extra_bytes", row.peak_extra_bytes},
              {"driver_bytes", row.driver_bytes},
              {"host_bytes", row.host_bytes},
              {"wrong", row.checked ? Json(row.wrong) : Json(nullptr)}};
}

void to_json(Json& json, const BoundRow& bound) {
  json = Json{{"name", bound.name},
              {"what", bound.what},
              {"bytes", bound.bytes},
              {"time_us", bound.time_us},
              {"algbw_gbps", bound.algbw_gbps},
              {"busbw_gbps", bound.busbw_gbps}};
}

void to_json(Json& json, const RatioRow& ratio) {
  json = Json{
      {"name", ratio.name}, {"value", ratio.value}, {"op", ratio.op}, {"target", ratio.target}, {"met", ratio.met}};
}

void to_json(Json& json, const StepRow& step) {
  json = Json{{"strategy", step.strategy}, {"phase", step.phase}, {"operation", step.operation},
              {"path", step.path},         {"bytes", step.bytes}, {"time_us", step.time_us}};
}

void to_json(Json& json, const WorkRow& row) {
  const core::EnterWork& work = row.work;
  json = Json{{"path", core::enter_path_name(work.path)},
              {"coalesced", row.coalesced},
              {"measured", row.measured},
              {"pieces", work.pieces.count},
              {"piece_bytes", work.pieces.bytes},
              {"pieces_under_4k", work.pieces.under_4k},
              {"pieces_under_64k", work.pieces.under_64k},
              {"pieces_under_1m", work.pieces.under_1m},
              {"strided_pieces", work.pieces.strided},
              {"copy_engine_calls", work.copy_engine_calls},
              {"kernel_launches", work.kernel_launches},
              {"kernel_blocks", work.kernel_blocks},
              {"table_bytes", work.table_bytes},
              {"fills", work.fills},
              {"rounds", work.rounds},
              {"messages", work.messages},
              {"build_seconds", work.build_seconds},
              {"per_enter_seconds", work.per_enter_seconds}};
}

std::string bench_report_json(const BenchReport& report) {
  const Json json{{"header", report.header},     {"world_size", report.world_size},
                  {"ranks_as", report.ranks_as}, {"rows", report.rows},
                  {"bounds", report.bounds},     {"ratios", report.ratios},
                  {"steps", report.steps},       {"work", report.work},
                  {"notes", report.notes},       {"wrong", report.total_wrong()}};
  return json.dump(2) + "\n";
}

}  // namespace hybridshard::service::bench
