// hybridshard-bench: the same benchmark as `hybridshard bench`, as a program of its own (for scripts/bench-gpu and
// machines where the `hybridshard` command's HTTP dependencies are not built).
#include <CLI/CLI.hpp>
#include <csignal>
#include <iostream>

#include "hybridshard/service/bench/bench_cli.h"

int main(int argc, char** argv) {
  // A peer that closes its socket first (a failed rank, a scraper, a watcher) must surface as an error on the write,
  // never as a death by SIGPIPE: that rank would then be named as the cause. Inherited by the ranks we start.
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"hybridshard-bench: enter, exit and batch re-distribution, side by side with the seed and the bounds"};
  hybridshard::service::bench::BenchOptions options;
  hybridshard::service::bench::add_bench_flags(app, options);
  CLI11_PARSE(app, argc, argv);
  return hybridshard::service::bench::run_bench(options, std::cout);
}
