// Raw request bytes against the job's HTTP server (HttpServer over civetweb, as the launcher and `serve` run it):
// each input is sent as is on a new connection to a server on 127.0.0.1, then the write side is closed and the
// answer read. The server must not crash or hang, and whatever it answers must be one well-formed status line with
// 200 (a served path), a 4xx or 503 (busy) - never a 5xx of civetweb's, never a websocket handshake (101).
// Every 256 inputs /healthz must still answer 200.
//
// The launcher's civetweb workers run on small stacks, about half of it taken by libtorch's static TLS (see
// http_server.h): the ballast below takes as much here, so that a path that needs more stack crashes here too.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "hybridshard/service/serve/http_server.h"

namespace {

using hybridshard::service::HttpRequest;
using hybridshard::service::HttpResponse;
using hybridshard::service::HttpServer;
using hybridshard::service::HttpServerOptions;

thread_local char g_static_tls_ballast[48 * 1024];

HttpServer& server() {
  static std::unique_ptr<HttpServer> instance = [] {
    HttpServerOptions options;
    options.listen = "127.0.0.1:0";
    options.num_threads = 4;
    options.request_timeout_ms = 500;
    options.max_requests_per_second = 0;  // no pacing: the fuzzer sends as fast as it can
    options.priority = hybridshard::service::ServePriority::kNormal;
    std::map<std::string, hybridshard::service::HttpHandler> routes;
    routes["/healthz"] = [](const HttpRequest&) {
      g_static_tls_ballast[0] = 1;  // the ballast is this thread's too
      return HttpResponse{200, "text/plain", "ok\n"};
    };
    routes["/status"] = [](const HttpRequest& request) {
      return HttpResponse{200, "application/json", "{\"query\":" + std::to_string(request.query.size()) + "}"};
    };
    return std::make_unique<HttpServer>(options, routes);
  }();
  return *instance;
}

// A connection to the server with 2 s send and receive timeouts. A refused connection means the server is gone.
// Anything else (no local port free while earlier connections sit in TIME_WAIT, a connect that timed out on a loaded
// machine) is the client's side: retried on a new socket for 10 s, then fatal.
int connect_to_server() {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(server().port()));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int attempt = 1;; ++attempt) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval timeout{2, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) return fd;
    const int error = errno;
    ::close(fd);
    if (error == ECONNREFUSED || attempt == 100) {
      std::fprintf(stderr, "fuzz_http_request: the server no longer accepts connections: %s (after %d attempts)\n",
                   std::strerror(error), attempt);
      std::abort();
    }
    ::usleep(100 * 1000);
  }
}

// Sends `data`, closes the write side, reads the answer (2 s at most).
std::string exchange(const std::uint8_t* data, std::size_t size) {
  const int fd = connect_to_server();
  std::size_t sent = 0;
  while (sent < size) {
    const ssize_t n = ::send(fd, data + sent, size - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server answered and closed before reading everything
    sent += static_cast<std::size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  std::string answer;
  char chunk[4096];
  while (answer.size() < (1 << 20)) {
    const ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
    if (n <= 0) break;
    answer.append(chunk, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return answer;
}

void check_answer(const std::string& answer) {
  if (answer.empty()) return;  // no complete request came: nothing to answer
  const bool status_line =
      answer.size() >= 12 && (answer.rfind("HTTP/1.1 ", 0) == 0 || answer.rfind("HTTP/1.0 ", 0) == 0);
  const int status = status_line ? std::atoi(answer.substr(9, 3).c_str()) : 0;
  if (!(status == 200 || status == 503 || (status >= 400 && status < 500))) {
    std::fprintf(stderr, "fuzz_http_request: unexpected answer: %.200s\n", answer.c_str());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static std::uint64_t inputs = 0;
  check_answer(exchange(data, size));
  if (++inputs % 256 == 0) {
    static const char kHealth[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    const std::string answer = exchange(reinterpret_cast<const std::uint8_t*>(kHealth), sizeof(kHealth) - 1);
    if (answer.rfind("HTTP/1.1 200", 0) != 0) {
      std::fprintf(stderr, "fuzz_http_request: /healthz no longer answers 200: %.200s\n", answer.c_str());
      std::abort();
    }
  }
  return 0;
}
