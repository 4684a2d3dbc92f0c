// Job files: any bytes given to load_job_config_from_string end in a job or in diagnostics, never in a crash, an
// exception, a hang or unbounded memory (alias bombs, huge numbers, duplicate keys, binary garbage).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "hybridshard/service/config/job_config.h"
#include "hybridshard/service/config/memory_plan.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace hybridshard::service;
  const std::string text(reinterpret_cast<const char*>(data), size);
  const LoadResult loaded = load_job_config_from_string(text, "fuzz.yaml");
  // The contract: a job, or at least one diagnostic that says where and what.
  if (!loaded.job && loaded.diagnostics.empty()) std::abort();
  for (const Diagnostic& diagnostic : loaded.diagnostics) {
    if (diagnostic.format().empty() || diagnostic.message.empty()) std::abort();
  }
  if (loaded.job) {
    // A job that loads is valid, and the memory plan `hybridshard plan` prints for it can be made (small worlds only:
    // the plan is per rank, and throughput matters more here than the size of the world).
    if (!loaded.job->validate().empty()) std::abort();
    // Large models too: a 70B plan takes seconds under ASan, and slow inputs starve the search.
    if (loaded.job->runtime.world_size > 8 || loaded.job->model.spec.num_parameters() > (std::int64_t{2} << 30)) {
      return 0;
    }
    const MemoryPlan plan = make_memory_plan(*loaded.job);
    (void)plan;
  }
  return 0;
}
