#include "hybridshard/service/serve/http_server.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "hybridshard/core/error.h"
#include "test_http_client.h"

namespace hybridshard::service {
namespace {

using testing::http_get;
using testing::raw_http;

HttpServerOptions loopback_any_port() {
  HttpServerOptions options;
  options.listen = "127.0.0.1:0";
  options.num_threads = 2;
  return options;
}

std::map<std::string, HttpHandler> routes(std::atomic<int>* calls = nullptr) {
  std::map<std::string, HttpHandler> table;
  table["/status"] = [calls](const HttpRequest&) {
    if (calls) ++*calls;
    return HttpResponse{200, "application/json", "{\"state\":\"running\"}"};
  };
  table["/fails"] = [](const HttpRequest&) -> HttpResponse { throw std::runtime_error("the handler broke"); };
  return table;
}

TEST(HttpServerTest, port_zero_binds_a_free_port_and_reads_it_back) {
  HttpServer server(loopback_any_port(), routes());
  EXPECT_GT(server.port(), 0);
  EXPECT_EQ(server.url(), "http://127.0.0.1:" + std::to_string(server.port()));
}

TEST(HttpServerTest, get_of_a_route_answers_its_body_and_type) {
  HttpServer server(loopback_any_port(), routes());
  auto response = http_get(server.port(), "/status?verbose=1");
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.body, "{\"state\":\"running\"}");
  EXPECT_NE(response.head.find("Content-Type: application/json"), std::string::npos) << response.head;
  EXPECT_NE(response.head.find("Content-Length: 19"), std::string::npos) << response.head;
}

TEST(HttpServerTest, head_answers_headers_without_body) {
  HttpServer server(loopback_any_port(), routes());
  auto response = raw_http(server.port(), "HEAD /status HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.body, "");
}

// The nice value (field 19) or the scheduling policy (field 41) of each thread of this process.
std::multiset<int> thread_stat_values(int wanted) {
  std::multiset<int> values;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream in(task.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::istringstream fields(stat.substr(stat.rfind(')') + 2));  // after "PID (COMM) "
    std::string field;
    for (int index = 3; index <= wanted && fields >> field; ++index) {
      if (index == wanted) values.insert(std::stoi(field));
    }
  }
  return values;
}

// Polls `condition` every 10 ms for up to 10 s.
template <typename Condition>
bool eventually(Condition condition) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

TEST(HttpServerTest, its_threads_run_at_the_priority_asked_for_and_answer) {
  constexpr int kNice = 19;
  constexpr int kPolicy = 41;
  HttpServerOptions options = loopback_any_port();
  options.priority = ServePriority::kIdle;
  const std::size_t idle_before = thread_stat_values(kPolicy).count(SCHED_IDLE);
  {
    HttpServer server(options, routes());
    EXPECT_EQ(http_get(server.port(), "/status").status, 200);
    // The listener and both workers (civetweb also starts a timer thread in some builds); a worker sets its
    // priority when it starts, which may come after the first answer (seen under ASan): wait for it, 10 s at most.
    EXPECT_TRUE(eventually([&] { return thread_stat_values(kPolicy).count(SCHED_IDLE) >= idle_before + 3; }));
    EXPECT_EQ(::sched_getscheduler(0), SCHED_OTHER) << "the calling thread keeps its own policy";
  }
  options.priority = ServePriority::kLow;
  const std::size_t low_before = thread_stat_values(kNice).count(10);
  {
    HttpServer server(options, routes());
    EXPECT_EQ(http_get(server.port(), "/status").status, 200);
    EXPECT_TRUE(eventually([&] { return thread_stat_values(kNice).count(10) >= low_before + 3; }));
    EXPECT_EQ(::getpriority(PRIO_PROCESS, 0), 0) << "the calling thread keeps its own nice value";
  }
  EXPECT_EQ(serve_priority_from_name("normal"), ServePriority::kNormal);
  EXPECT_THROW(serve_priority_from_name("realtime"), core::ConfigError);
}

TEST(HttpServerTest, requests_beyond_the_rate_wait_their_turn_and_too_long_a_wait_is_503) {
  HttpServerOptions options = loopback_any_port();
  options.max_requests_per_second = 20;
  std::atomic<int> calls{0};
  HttpServer server(options, routes(&calls));
  const auto started = std::chrono::steady_clock::now();
  for (int request = 0; request < 50; ++request) ASSERT_EQ(http_get(server.port(), "/status").status, 200);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  // One second's worth (20) at once, then one per 50 ms: the 30 others take at least 1.5 s.
  EXPECT_GE(seconds, 1.4);
  EXPECT_EQ(calls.load(), 50);

  options.max_requests_per_second = 1;
  options.max_queue_wait_ms = 1500;
  HttpServer slow(options, routes());
  // Six at once on two workers: the second's credit, then 1 s apart; a turn more than 1.5 s away is refused at once.
  std::vector<int> statuses(6, 0);
  std::vector<std::string> heads(6);
  std::vector<std::thread> clients;
  for (std::size_t client = 0; client < statuses.size(); ++client) {
    clients.emplace_back([&, client] {
      const testing::RawHttpResponse response = http_get(slow.port(), "/status");
      statuses[client] = response.status;
      heads[client] = response.head;
    });
  }
  for (std::thread& client : clients) client.join();
  EXPECT_EQ(std::count(statuses.begin(), statuses.end(), 200) + std::count(statuses.begin(), statuses.end(), 503), 6);
  EXPECT_GE(std::count(statuses.begin(), statuses.end(), 200), 1);
  EXPECT_GE(std::count(statuses.begin(), statuses.end(), 503), 1);
  for (std::size_t client = 0; client < statuses.size(); ++client) {
    if (statuses[client] == 503) {
      EXPECT_NE(heads[client].find("Retry-After: 1"), std::string::npos) << heads[client];
    }
  }

  options.max_requests_per_second = -1;
  EXPECT_THROW(HttpServer(options, routes()), core::ConfigError);
}

TEST(HttpServerTest, unknown_path_is_404) {
  HttpServer server(loopback_any_port(), routes());
  EXPECT_EQ(http_get(server.port(), "/").status, 404);
  EXPECT_EQ(http_get(server.port(), "/status/extra").status, 404);
  EXPECT_EQ(http_get(server.port(), "/../etc/passwd").status, 404);
}

TEST(HttpServerTest, other_methods_are_405_and_never_reach_the_handler) {
  std::atomic<int> calls{0};
  HttpServer server(loopback_any_port(), routes(&calls));
  for (const char* method : {"POST", "PUT", "DELETE", "PATCH"}) {
    auto response =
        raw_http(server.port(), std::string(method) + " /status HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
    EXPECT_EQ(response.status, 405) << method;
    EXPECT_NE(response.head.find("Allow: GET, HEAD"), std::string::npos) << response.head;
  }
  EXPECT_EQ(calls.load(), 0);
}

TEST(HttpServerTest, get_with_a_body_is_refused) {
  std::atomic<int> calls{0};
  HttpServer server(loopback_any_port(), routes(&calls));
  auto response = raw_http(server.port(), "GET /status HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
  EXPECT_EQ(response.status, 413);
  EXPECT_EQ(calls.load(), 0);
}

TEST(HttpServerTest, oversized_request_is_refused_and_the_server_keeps_serving) {
  std::atomic<int> calls{0};
  HttpServer server(loopback_any_port(), routes(&calls));
  const std::string huge_header(64 * 1024, 'a');
  auto response = raw_http(server.port(), "GET /status HTTP/1.1\r\nHost: x\r\nX-Padding: " + huge_header + "\r\n\r\n");
  EXPECT_NE(response.status, 200);
  EXPECT_EQ(calls.load(), 0);
  const std::string long_path(16 * 1024, 'p');
  EXPECT_NE(http_get(server.port(), "/" + long_path).status, 200);
  EXPECT_EQ(http_get(server.port(), "/status").status, 200);
}

// A websocket upgrade crashed the process inside civetweb (a segfault: no websocket handler is registered).
TEST(HttpServerTest, upgrade_requests_are_refused_and_the_server_keeps_serving) {
  std::atomic<int> calls{0};
  HttpServer server(loopback_any_port(), routes(&calls));
  for (const char* upgrade : {"websocket", "h2c", "WebSocket"}) {
    auto response = raw_http(server.port(), std::string("GET /status HTTP/1.1\r\nHost: x\r\nUpgrade: ") + upgrade +
                                                "\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
                                                "dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    EXPECT_GE(response.status, 400) << upgrade;
    EXPECT_LT(response.status, 500) << upgrade;
  }
  auto connection_only = raw_http(server.port(), "GET /status HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\r\n");
  EXPECT_EQ(connection_only.status, 400);
  EXPECT_EQ(calls.load(), 0);
  EXPECT_EQ(http_get(server.port(), "/status").status, 200);
}

// Connections that send part of a request and then nothing (a slow or hostile client) each held a worker for the
// whole request timeout: four of them kept every other client out for 10 s.
TEST(HttpServerTest, slow_partial_requests_do_not_starve_other_clients) {
  HttpServerOptions options;
  options.listen = "127.0.0.1:0";
  HttpServer server(options, routes());
  std::vector<int> slow;
  for (int client = 0; client < 8; ++client) {
    slow.push_back(testing::connect_loopback(server.port()));
    const std::string partial = "GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    ASSERT_EQ(::send(slow.back(), partial.data(), partial.size(), MSG_NOSIGNAL), static_cast<ssize_t>(partial.size()));
  }
  const auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(http_get(server.port(), "/status").status, 200);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(2));
  for (int fd : slow) ::close(fd);
}

// A GET announcing a huge body was answered 413 and then held its worker while civetweb waited for the body (10 s;
// now two reads of request_timeout_ms at most).
TEST(HttpServerTest, a_huge_content_length_is_refused_at_once_and_holds_no_worker_for_long) {
  HttpServerOptions options;
  options.listen = "127.0.0.1:0";
  options.request_timeout_ms = 1000;
  HttpServer server(options, routes());
  std::vector<int> clients;
  for (int client = 0; client < options.num_threads; ++client) {
    clients.push_back(testing::connect_loopback(server.port()));
    const std::string request = "GET /status HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999\r\n\r\nabc";
    const auto started = std::chrono::steady_clock::now();
    ASSERT_EQ(::send(clients.back(), request.data(), request.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(request.size()));
    char head[64] = {0};
    ASSERT_GT(::recv(clients.back(), head, sizeof(head) - 1, 0), 12);
    EXPECT_EQ(std::string(head).substr(0, 12), "HTTP/1.1 413") << head;
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(1));
  }
  // Every worker drains a body that never comes (civetweb does, after the answer); each gives up within two reads'
  // timeouts.
  const auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(http_get(server.port(), "/status").status, 200);
  EXPECT_LT(std::chrono::steady_clock::now() - started,
            std::chrono::milliseconds(2 * options.request_timeout_ms) + std::chrono::seconds(1));
  for (int fd : clients) ::close(fd);
}

// Requests the server does not serve are each a 4xx with a status line, never a closed connection without an
// answer (an absolute URI and "OPTIONS *" got nothing; a chunked GET was served; "HTTP/9.9" was a 505).
TEST(HttpServerTest, every_request_it_does_not_serve_is_a_4xx) {
  std::atomic<int> calls{0};
  HttpServer server(loopback_any_port(), routes(&calls));
  // The status each must get; 0: any 4xx (civetweb's own choice).
  const std::pair<const char*, int> cases[] = {
      {"GARBAGE\r\n\r\n", 400},
      {"GET /status HTTP/9.9\r\nHost: x\r\n\r\n", 400},
      {"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 0},
      {"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n", 0},
      {"GET http://example.com/status HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"GET /status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 413},
      {"GET /status HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 0},
  };
  for (const auto& [request, status] : cases) {
    const testing::RawHttpResponse response = raw_http(server.port(), request);
    EXPECT_GE(response.status, 400) << request;
    EXPECT_LT(response.status, 500) << request;
    if (status != 0) {
      EXPECT_EQ(response.status, status) << request;
    }
  }
  EXPECT_EQ(calls.load(), 0);
  EXPECT_EQ(http_get(server.port(), "/status").status, 200);
}

TEST(HttpServerTest, a_throwing_handler_answers_500_with_its_message) {
  HttpServer server(loopback_any_port(), routes());
  auto response = http_get(server.port(), "/fails");
  EXPECT_EQ(response.status, 500);
  EXPECT_NE(response.body.find("the handler broke"), std::string::npos);
}

TEST(HttpServerTest, a_port_in_use_is_an_error_naming_the_address) {
  HttpServer first(loopback_any_port(), routes());
  HttpServerOptions options = loopback_any_port();
  options.listen = "127.0.0.1:" + std::to_string(first.port());
  try {
    HttpServer second(options, routes());
    FAIL() << "no error";
  } catch (const core::Error& error) {
    EXPECT_NE(std::string(error.what()).find(options.listen), std::string::npos) << error.what();
  }
}

// The server binds what the address says: IPv6 in brackets where civetweb can ("[::1]:0" failed with "Failed to
// setup server ports"), a host name, never a
// mangled IPv4 ("256.0.0.0:P" bound 0.0.0.0 and printed 256.0.0.0).
TEST(HttpServerTest, listens_on_ipv6_loopback_and_on_a_host_name) {
  HttpServerOptions options = loopback_any_port();
  options.listen = "[::1]:0";
  if (http_server_supports_ipv6()) {
    HttpServer ipv6(options, routes());
    EXPECT_GT(ipv6.port(), 0);
    EXPECT_EQ(ipv6.url(), "http://[::1]:" + std::to_string(ipv6.port()));
  } else {
    // Debian's civetweb has no IPv6: said as such, not as "Failed to setup server ports".
    try {
      HttpServer ipv6(options, routes());
      FAIL() << "listened on [::1] without IPv6 support";
    } catch (const core::ConfigError& error) {
      EXPECT_NE(std::string(error.what()).find("has no IPv6"), std::string::npos) << error.what();
    }
  }
  options.listen = "localhost:0";
  HttpServer named(options, routes());
  EXPECT_GT(named.port(), 0);
  for (const char* bad : {"256.0.0.0:0", "999.1.1.1:0", "127.0.0.1:99999999999", "[::1]:65536", "::1:0"}) {
    options.listen = bad;
    EXPECT_THROW(HttpServer(options, routes()), core::ConfigError) << bad;
  }
}

// A port in use is said as such, naming the address and where it came from (was civetweb's "Failed to setup
// server ports").
TEST(HttpServerTest, a_busy_port_says_address_in_use_with_the_flag) {
  HttpServer first(loopback_any_port(), routes());
  HttpServerOptions options = loopback_any_port();
  options.listen = "127.0.0.1:" + std::to_string(first.port());
  options.listen_what = "--metrics-listen";
  try {
    HttpServer second(options, routes());
    FAIL() << "no error";
  } catch (const core::CommError& error) {
    EXPECT_NE(std::string(error.what()).find("address in use: " + options.listen + " (--metrics-listen)"),
              std::string::npos)
        << error.what();
  }
}

TEST(HttpServerTest, stop_is_idempotent_and_closes_the_port) {
  auto server = std::make_unique<HttpServer>(loopback_any_port(), routes());
  const int port = server->port();
  server->stop();
  server->stop();
  EXPECT_THROW(http_get(port, "/status"), std::runtime_error);
}

}  // namespace
}  // namespace hybridshard::service
