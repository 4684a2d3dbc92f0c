#include "serve_command.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <thread>

#include "hybridshard/core/error.h"
#include "hybridshard/service/events/event_stream.h"
#include "hybridshard/service/launch/launcher.h"
#include "hybridshard/service/serve/endpoints.h"
#include "hybridshard/service/serve/job_directory.h"

namespace hybridshard::service {
namespace {

std::chrono::seconds whole_seconds(double seconds, const char* flag) {
  if (!std::isfinite(seconds) || seconds < 1 || seconds > 1e7) {
    HS_THROW(core::ConfigError, std::string(flag) + " " + std::to_string(seconds) + ": expected seconds in [1, 1e7]");
  }
  return std::chrono::seconds(static_cast<long long>(seconds));
}

}  // namespace

int run_serve(const ServeFlags& flags) {
  JobDirectoryOptions options;
  options.retention = whole_seconds(flags.retention_seconds, "--retention");
  options.timeout = whole_seconds(flags.timeout_seconds, "--timeout");
  if (!flags.record_dir.empty()) {
    std::error_code error;
    std::filesystem::create_directories(flags.record_dir, error);
    if (!std::filesystem::is_directory(flags.record_dir)) {
      HS_THROW(core::ConfigError,
               "--record " + flags.record_dir + ": not a directory" + (error ? " (" + error.message() + ")" : ""));
    }
    options.record_dir = flags.record_dir;
  }
  if (!flags.quiet) {
    options.log = [](const std::string& line) { std::cout << "hybridshard serve: " << line << std::endl; };
  }
  JobDirectory directory(options);

  EventReceiverHandlers handlers;
  handlers.accept = [&](const StreamHello& hello) { return directory.admit(hello); };
  handlers.on_event = [&](const StreamHello& hello, JobEvent&& event) { directory.deliver(hello, std::move(event)); };
  handlers.on_alive = [&](const StreamHello& hello) { directory.alive(hello); };
  handlers.on_close = [&](const StreamHello& hello) { directory.left(hello); };
  const HostPort events = parse_host_port(flags.events, "--events");
  EventReceiver receiver(events.host, events.port, std::move(handlers), "--events");

  EndpointOptions endpoint_options;
  endpoint_options.http.listen = flags.listen;
  endpoint_options.http.listen_what = "--listen";
  WatchedJobs watched;
  watched.list = [&] { return directory.jobs(); };
  watched.generation = [&] { return directory.generation(); };
  watched.describe = [&](const ObservedJob& job) { return directory.describe(job); };
  Endpoints endpoints(endpoint_options, std::move(watched));

  if (!flags.quiet) {
    std::cout << "hybridshard serve: metrics " << endpoints.url() << "/metrics, status " << endpoints.url()
              << "/status?job=NAME, jobs " << endpoints.url() << "/jobs\n"
              << "hybridshard serve: ranks report with HYBRIDSHARD_SERVE=" << receiver.address()
              << " HYBRIDSHARD_JOB=NAME\n";
    if (!options.record_dir.empty()) std::cout << "hybridshard serve: recording to " << options.record_dir << "/\n";
    std::cout << std::flush;
  }
  install_launcher_signal_handlers();
  while (launcher_interrupt_count() == 0) {
    directory.sweep();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  if (!flags.quiet) std::cout << "hybridshard serve: stopping" << std::endl;
  endpoints.stop();
  return 0;
}

}  // namespace hybridshard::service
