// Runs the benchmark: loopback in this thread, or every rank (Gloo on CPU devices, NCCL on GPUs) as a thread or a
// process (detail/ranks.h); then combines, prints and writes the JSON.
#include "hybridshard/service/bench/bench.h"

#include <exception>
#include <fstream>
#include <memory>
#include <ostream>
#include <vector>

#include "detail/measure.h"
#include "detail/ranks.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/error.h"
#include "hybridshard/service/rank/rank_setup.h"

namespace hybridshard::service::bench {

BenchReport run_bench_report(const BenchConfig& config) {
  detail::export_device_settings(config);
  std::vector<detail::RankResult> results;
  if (config.work_only) return detail::combine_ranks(config, results);  // the header and the work table alone
  if (config.backend == core::Backend::kLoopback) {
    const std::unique_ptr<core::Device> device = open_device(detail::device_of(config, 0));
    results.push_back(detail::run_rank(config, config.rank, *device, nullptr));
  } else if (config.rank_mode == RankMode::kProcess) {
    results = detail::run_ranks_as_processes(config);
  } else {
    results = detail::run_ranks_as_threads(config);
  }
  return detail::combine_ranks(config, results);
}

int run_bench(const BenchOptions& options, std::ostream& out) {
  if (options.run_rank >= 0) return detail::run_rank_process(options);  // a rank process of --ranks process
  BenchConfig config;
  try {
    config = resolve_bench_options(options);
  } catch (const core::ConfigError& error) {
    out << error.what() << '\n';
    return 2;
  }
  BenchReport report;
  try {
    report = run_bench_report(config);
  } catch (const std::exception& error) {  // core::Error's text begins with the file:line it was raised at
    out << "hybridshard bench: the run failed: " << error.what() << '\n';
    return 3;
  }
  print_bench_report(report, out);
  if (!config.json_file.empty()) {
    std::ofstream json(config.json_file);
    json << bench_report_json(report);
    json.close();
    if (!json) {
      out << "hybridshard bench: cannot write --json " << config.json_file << '\n';
      return 3;
    }
  }
  return report.total_wrong() == 0 ? 0 : 1;
}

}  // namespace hybridshard::service::bench
