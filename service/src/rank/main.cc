// hybridshard-rank: one rank of a job. Started by `hybridshard run` (one per rank), or by torchrun / Slurm / mpirun
// with their environment variables:  hybridshard-rank --job JOB.yaml
#include <CLI/CLI.hpp>
#include <csignal>
#include <iostream>
#include <string>

#include "hybridshard/core/error.h"
#include "hybridshard/service/config/job_config.h"
#include "hybridshard/service/launch/child_process.h"
#include "hybridshard/service/launch/launcher.h"
#include "hybridshard/service/launch/rank_environment.h"
#include "rank_program.h"

int main(int argc, char** argv) {
  // A peer that closes its socket first (a failed rank, a scraper, a watcher) must surface as an error on the write,
  // never as a death by SIGPIPE: that rank would then be named as the cause. Inherited by the ranks we start.
  std::signal(SIGPIPE, SIG_IGN);
  using namespace hybridshard;
  CLI::App app{
      "hybridshard-rank: one rank of a job (rank and world from RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT, "
      "SLURM_* or OMPI_COMM_WORLD_*)"};
  std::string job_file;
  app.add_option("--job", job_file, "Job file (YAML); none: the embedded default job");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& help) {
    return app.exit(help);
  } catch (const CLI::ParseError& error) {
    std::cerr << "hybridshard-rank: " << error.what() << " (usage: hybridshard-rank --job JOB.yaml)\n";
    return 2;
  }
  int rank = -1;
  try {
    std::optional<service::RankEnvironment> environment = service::rank_environment_from_env();
    if (!environment) {
      std::cerr << "hybridshard-rank: no rank environment (RANK and WORLD_SIZE, SLURM_PROCID and SLURM_NTASKS, or "
                   "OMPI_COMM_WORLD_RANK and OMPI_COMM_WORLD_SIZE); to run a whole job on this host use "
                   "`hybridshard run JOB.yaml`\n";
      return 2;
    }
    rank = environment->rank;
    service::LoadResult loaded =
        job_file.empty() ? service::load_job_config_from_string(service::default_job_yaml(), "<embedded default job>")
                         : service::load_job_config(job_file);
    if (!loaded.job) {
      for (const service::Diagnostic& diagnostic : loaded.diagnostics) std::cerr << diagnostic.format() << "\n";
      return 2;
    }
    return service::run_rank(*loaded.job, *environment, std::cout);
  } catch (const core::CommError& error) {
    // A collective or the store failed: usually the consequence of a peer that died or stopped first. A distinct
    // code lets the launcher name that peer rather than this rank.
    std::cerr << "[rank " << rank << "] error: " << error.what() << std::endl;
    return service::kExitCommFailure;
  } catch (const std::exception& error) {
    std::cerr << "[rank " << rank << "] error: " << error.what() << std::endl;
    return 1;
  }
}
