// A small read-only HTTP server (civetweb) for the job's endpoints: GET or HEAD of a fixed set of paths, everything
// else a 4xx: 404 (unknown path), 405 (other methods), 413 (a body), 400 (an upgrade to websockets or h2c, a target
// that is not a path, anything civetweb cannot parse). Bounded: a fixed number of worker threads, a limit on the
// request head, no request bodies, a timeout on every read and write. Listens on 127.0.0.1 unless told otherwise.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "hybridshard/service/events/host_port.h"

namespace hybridshard::service {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

struct HttpRequest {
  std::string query;  // the query string, without '?' ("" when none)
};

// The value of `name` in a query string ("job=a&x=1": "a" for job), percent-decoded; "" when absent.
std::string query_parameter(const std::string& query, const std::string& name);

// Called on one of the server's worker threads for each request of its path; must be thread-safe. An exception
// becomes a 500 answer carrying its message. The workers run on civetweb's small fixed stacks (100 KiB in Debian's
// build, less the static TLS of the libraries the process links: about half of it with libtorch): a handler that
// needs more (printf, a JSON dump of some depth) does that work on a thread of its own (see Observer).
using HttpHandler = std::function<HttpResponse(const HttpRequest& request)>;

// The CPU priority of the server's threads. kIdle (SCHED_IDLE): they run only on CPU time the job's processes leave
// (the default: a scrape load then does not slow the job; under a job that keeps every core busy all the time,
// answers wait for a gap). kLow: nice 10. kNormal: the launcher's own.
enum class ServePriority { kIdle, kLow, kNormal };
ServePriority serve_priority_from_name(const std::string& name);  // "idle", "low", "normal"; else core::ConfigError
void apply_serve_priority(ServePriority priority);                // to the calling thread

struct HttpServerOptions {
  std::string listen = "127.0.0.1:9464";       // HOST:PORT, [IPV6]:PORT (parse_host_port); port 0: a free port (port())
  std::string listen_what = "metrics.listen";  // the flag or key `listen` came from, for messages
  // Worker threads; further connections wait in the queue. A client that sends half a request holds a worker until
  // request_timeout_ms: enough workers that a few such clients leave the others served.
  int num_threads = 16;
  std::size_t max_request_bytes = 8192;  // request line plus headers; larger requests are refused
  // Each read or write of a request (the head; the answer to a slow reader; an announced body, which civetweb drains
  // after the 413, for two reads at most) gives up after this long.
  int request_timeout_ms = 3000;
  ServePriority priority = ServePriority::kIdle;
  // Requests beyond this rate wait their turn (one second's worth may come at once); 0: no limit. A request whose
  // turn is more than max_queue_wait_ms away is answered 503 with Retry-After at once.
  double max_requests_per_second = 50;
  int max_queue_wait_ms = 8000;
};

// Whether the HTTP server library can listen on IPv6 addresses (Debian 12's civetweb 1.15 cannot: an IPv6 listen
// address is then refused with a ConfigError that says so).
bool http_server_supports_ipv6();

class HttpServer {
 public:
  // Starts listening; throws core::ConfigError for an address that does not parse, core::CommError "address in
  // use: HOST:PORT (listen_what)" when it is taken, core::Error naming the address otherwise. Warns on stderr when
  // the address is 0.0.0.0 or [::] (every interface).
  // `routes` maps exact paths ("/metrics") to handlers; query strings are ignored.
  HttpServer(HttpServerOptions options, std::map<std::string, HttpHandler> routes);
  ~HttpServer();  // stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const { return port_; }          // the bound port (the real one when 0 was asked for)
  std::string host() const { return host_; }  // as given
  std::string url() const;                    // "http://HOST:PORT"

  // Stops accepting, waits for the requests in progress to finish. Idempotent.
  void stop();

 private:
  struct Context;
  std::unique_ptr<Context> context_;
  std::string host_;
  int port_ = 0;
};

}  // namespace hybridshard::service
