#include "hybridshard/service/serve/http_server.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <netdb.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>
#include <iostream>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>

#include "hybridshard/core/error.h"
#include "hybridshard/core/tcp_listener.h"

namespace hybridshard::service {
namespace {

const char* reason_phrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 411:
      return "Length Required";
    case 413:
      return "Payload Too Large";
    case 414:
      return "URI Too Long";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Unknown";
  }
}

// Marks a connection whose request was answered (the connection's user data; see Context::unanswered).
int g_answered_marker = 0;

void send(mg_connection* connection, const HttpResponse& response, bool head, const char* extra_headers = "") {
  mg_set_user_connection_data(connection, &g_answered_marker);
  // Built with std::string, not mg_printf: civetweb's workers run on small fixed stacks (100 KiB in Debian's build,
  // less the static TLS of the libraries the process links), and glibc's printf needs more than is left there.
  std::string header = "HTTP/1.1 " + std::to_string(response.status) + " " + reason_phrase(response.status) +
                       "\r\nContent-Type: " + response.content_type +
                       "\r\nContent-Length: " + std::to_string(response.body.size()) +
                       "\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n" + extra_headers +
                       "Connection: close\r\n\r\n";
  mg_write(connection, header.data(), header.size());
  if (head) return;
  // In slices: each write is one system call, and on a kernel that does not preempt (PREEMPT_NONE, common on servers
  // and VMs) a rank that wakes up waits for the call in progress; a /status answer is ~230 KB.
  constexpr std::size_t kSlice = 16 * 1024;
  for (std::size_t offset = 0; offset < response.body.size(); offset += kSlice) {
    const std::size_t bytes = std::min(kSlice, response.body.size() - offset);
    if (mg_write(connection, response.body.data() + offset, bytes) <= 0) return;  // the client went away
  }
}

// Whether header `name` lists `token` (case-insensitive, comma-separated: "keep-alive, Upgrade").
bool header_has_token(mg_connection* connection, const char* name, std::string_view token) {
  const char* value = mg_get_header(connection, name);
  if (value == nullptr) return false;
  std::string lowered(value);
  std::transform(lowered.begin(), lowered.end(), lowered.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::size_t start = 0;
  while (start <= lowered.size()) {
    std::size_t end = lowered.find(',', start);
    if (end == std::string::npos) end = lowered.size();
    std::string_view item(lowered.data() + start, end - start);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (item == token) return true;
    start = end + 1;
  }
  return false;
}

// The address as civetweb's listening_ports takes it: "127.0.0.1:9464", "[::1]:0"; a host name resolved to its
// first address.
std::string numeric_listen_address(const HostPort& address) {
  if (address.ipv6 || address.host.find_first_not_of("0123456789.") == std::string::npos) return address.text();
  addrinfo hints{};
  hints.ai_family = http_server_supports_ipv6() ? AF_UNSPEC : AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  if (::getaddrinfo(address.host.c_str(), nullptr, &hints, &result) != 0 || result == nullptr) {
    HS_THROW(core::ConfigError, "http server: cannot resolve host name '" + address.host + "'");
  }
  char text[INET6_ADDRSTRLEN] = {0};
  const bool v6 = result->ai_family == AF_INET6;
  if (v6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(result->ai_addr)->sin6_addr, text, sizeof(text));
  } else {
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(result->ai_addr)->sin_addr, text, sizeof(text));
  }
  ::freeaddrinfo(result);
  return HostPort{text, address.port, v6}.text();
}

HttpResponse text_response(int status, std::string body) {
  HttpResponse response;
  response.status = status;
  response.body = std::move(body);
  return response;
}

// Spaces requests at least 1 / rate apart, with a credit of one second's worth after a quiet spell: a client that
// asks as fast as it can waits in the queue instead of taking the job's CPU (on 2 cores, ~1000 requests/s cost the
// job's enter ~20 % even at idle priority: the connections' kernel work runs at any priority). Thread-safe.
class RequestPacer {
 public:
  using Clock = std::chrono::steady_clock;
  explicit RequestPacer(double per_second)
      : interval_(per_second > 0
                      ? std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(1.0 / per_second))
                      : Clock::duration::zero()) {}

  // Waits for this request's turn; false (without waiting) when that is further away than `limit`.
  bool wait(std::chrono::milliseconds limit) {
    if (interval_ == Clock::duration::zero()) return true;
    Clock::time_point slot;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const Clock::time_point now = Clock::now();
      slot = std::max(next_, now - std::chrono::seconds(1)) + interval_;
      if (slot - now > limit) return false;
      next_ = slot;
    }
    std::this_thread::sleep_until(slot);
    return true;
  }

 private:
  Clock::duration interval_;
  std::mutex mutex_;
  Clock::time_point next_{};
};

}  // namespace

struct HttpServer::Context {
  std::map<std::string, HttpHandler> routes;
  mg_context* civetweb = nullptr;
  ServePriority priority = ServePriority::kNormal;
  std::unique_ptr<RequestPacer> pacer;
  std::chrono::milliseconds max_queue_wait{0};
  std::mutex stop_mutex;

  // Every request, before civetweb looks at it further: what this server does not serve is answered here with a
  // 4xx, so that none of civetweb's other paths (websocket upgrades, which crashed the launcher; request bodies;
  // proxy requests) is ever taken. 0 lets the request go on to handle().
  static int screen(mg_connection* connection) {
    const mg_request_info* request = mg_get_request_info(connection);
    const std::string_view method = request->request_method ? request->request_method : "";
    const bool head = method == "HEAD";
    if (method != "GET" && !head) {
      send(connection, text_response(405, "only GET and HEAD are allowed\n"), false, "Allow: GET, HEAD\r\n");
      return 405;
    }
    if (mg_get_header(connection, "Upgrade") != nullptr || header_has_token(connection, "Connection", "upgrade")) {
      send(connection, text_response(400, "this server does not upgrade connections (no websockets, no h2c)\n"), head);
      return 400;
    }
    if (request->content_length > 0 || mg_get_header(connection, "Transfer-Encoding") != nullptr) {
      send(connection, text_response(413, "requests to this server carry no body\n"), head);
      return 413;
    }
    if (request->local_uri == nullptr || request->local_uri[0] != '/') {
      send(connection, text_response(400, "the request target must be a path (/metrics, /status, /healthz)\n"), head);
      return 400;
    }
    return 0;
  }

  // civetweb's own refusals (a request it cannot parse, a head over max_request_bytes), answered like ours: without
  // printf on the worker's small stack, and a 4xx whatever civetweb chose (505 for an unknown HTTP version).
  static int refuse(mg_connection* connection, int status, const char* message) {
    const int answered = status >= 400 && status < 500 ? status : 400;
    send(connection, text_response(answered, std::string(message ? message : "bad request") + "\n"), false);
    return 0;
  }

  // A connection about to close whose request head was read but never answered: civetweb drops requests for
  // another host ("GET http://example.com/ HTTP/1.1") and "OPTIONS *" without a word. Each gets a 400 here; the
  // socket is still open (civetweb calls this before closing it).
  static void unanswered(const mg_connection* closing) {
    auto* connection = const_cast<mg_connection*>(closing);  // civetweb's callback is const; the write is safe here
    const mg_request_info* request = mg_get_request_info(connection);
    if (request == nullptr || request->request_method == nullptr) return;  // no request came
    if (mg_get_user_connection_data(connection) == &g_answered_marker) return;
    send(connection, text_response(400, "the request target must be a path (/metrics, /status, /healthz)\n"), false);
  }

  static int handle(mg_connection* connection, void* data) {
    auto* self = static_cast<Context*>(data);
    const mg_request_info* request = mg_get_request_info(connection);
    const std::string_view method = request->request_method ? request->request_method : "";
    const bool head = method == "HEAD";
    if (!self->pacer->wait(self->max_queue_wait)) {
      send(connection, text_response(503, "busy: more requests than metrics.max_requests_per_second\n"), head,
           "Retry-After: 1\r\n");
      return 503;
    }
    const char* uri = request->local_uri ? request->local_uri : "";
    auto route = self->routes.find(uri);
    if (route == self->routes.end()) {
      send(connection, text_response(404, "not found; try /metrics, /status or /healthz\n"), head);
      return 404;
    }
    HttpResponse response;
    try {
      response = route->second(HttpRequest{request->query_string ? request->query_string : ""});
    } catch (const std::exception& error) {
      response = text_response(500, std::string("error: ") + error.what() + "\n");
    }
    send(connection, response, head);
    return response.status;
  }

  // Every thread of the server (listener, workers) runs at the priority asked for: serving yields to the job.
  static void* init_thread(const mg_context* civetweb, int /*thread_type*/) {
    const auto* self = static_cast<const Context*>(mg_get_user_data(civetweb));
    if (self != nullptr) apply_serve_priority(self->priority);
    return nullptr;
  }

  static int log_message(const mg_connection*, const char*) {
    return 1;  // civetweb's own logging off: failures to start are reported through mg_start2's error text
  }
};

void apply_serve_priority(ServePriority priority) {
  // Linux keeps the policy and the nice value per thread; failing to lower them (a seccomp filter, say) is not an
  // error: the thread then runs at the priority it has.
  if (priority == ServePriority::kIdle) {
    sched_param param{};
    (void)::sched_setscheduler(0, SCHED_IDLE, &param);
  } else if (priority == ServePriority::kLow) {
    (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 10);
  }
}

bool http_server_supports_ipv6() {
  constexpr unsigned kIpv6 = 8;  // civetweb's feature bit (mg_check_feature)
  return mg_check_feature(kIpv6) != 0;
}

ServePriority serve_priority_from_name(const std::string& name) {
  if (name == "idle") return ServePriority::kIdle;
  if (name == "low") return ServePriority::kLow;
  if (name == "normal") return ServePriority::kNormal;
  HS_THROW(core::ConfigError, "serve priority '" + name + "' is not one of idle, low or normal");
}

std::string query_parameter(const std::string& query, const std::string& name) {
  std::size_t start = 0;
  while (start <= query.size()) {
    std::size_t end = query.find('&', start);
    if (end == std::string::npos) end = query.size();
    const std::string pair = query.substr(start, end - start);
    const auto equals = pair.find('=');
    if (pair.substr(0, equals) == name) {
      const std::string raw = equals == std::string::npos ? "" : pair.substr(equals + 1);
      std::string value(raw.size() + 1, '\0');
      const int length = mg_url_decode(raw.c_str(), static_cast<int>(raw.size()), value.data(),
                                       static_cast<int>(value.size()), /*is_form_url_encoded=*/1);
      value.resize(length < 0 ? 0 : static_cast<std::size_t>(length));
      return value;
    }
    start = end + 1;
  }
  return "";
}

HttpServer::HttpServer(HttpServerOptions options, std::map<std::string, HttpHandler> routes)
    : context_(std::make_unique<Context>()) {
  const HostPort address = parse_host_port(options.listen, options.listen_what);
  if (address.ipv6 && !http_server_supports_ipv6()) {
    HS_THROW(core::ConfigError, options.listen_what + " '" + options.listen +
                                    "': this build's HTTP server library (civetweb) has no IPv6; listen on an IPv4 "
                                    "address (127.0.0.1:PORT) or a host name with one");
  }
  if (options.num_threads < 1 || options.num_threads > 256) {
    HS_THROW(core::ConfigError,
             "http server: num_threads " + std::to_string(options.num_threads) + " is not in 1..256");
  }
  if (options.max_request_bytes < 1024) {
    HS_THROW(core::ConfigError, "http server: max_request_bytes must be at least 1024");
  }
  host_ = address.ipv6 ? "[" + address.host + "]" : address.host;
  context_->routes = std::move(routes);
  context_->priority = options.priority;
  if (!(options.max_requests_per_second >= 0)) {
    HS_THROW(core::ConfigError, "http server: max_requests_per_second must be 0 (no limit) or positive");
  }
  context_->pacer = std::make_unique<RequestPacer>(options.max_requests_per_second);
  context_->max_queue_wait = std::chrono::milliseconds(options.max_queue_wait_ms);

  static std::once_flag init_once;
  std::call_once(init_once, [] { mg_init_library(0); });

  // civetweb takes numeric addresses only: a host name is resolved here (its first address).
  const std::string ports = numeric_listen_address(address);
  const std::string threads = std::to_string(options.num_threads);
  const std::string max_request = std::to_string(options.max_request_bytes);
  const std::string timeout = std::to_string(options.request_timeout_ms);
  const char* config[] = {"listening_ports",
                          ports.c_str(),
                          "num_threads",
                          threads.c_str(),
                          "max_request_size",
                          max_request.c_str(),
                          "request_timeout_ms",
                          timeout.c_str(),
                          "enable_keep_alive",
                          "no",
                          "enable_directory_listing",
                          "no",
                          nullptr};
  mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof(callbacks));
  callbacks.log_message = &Context::log_message;
  callbacks.begin_request = &Context::screen;
  callbacks.http_error = &Context::refuse;
  callbacks.connection_close = &Context::unanswered;
  callbacks.init_thread = &Context::init_thread;
  mg_init_data init;
  init.callbacks = &callbacks;
  init.user_data = context_.get();
  init.configuration_options = config;
  char error_text[256] = {0};
  unsigned error_code = 0;
  mg_error_data error;
  error.code = &error_code;
  error.text = error_text;
  error.text_buffer_size = sizeof(error_text);
  context_->civetweb = mg_start2(&init, &error);
  if (context_->civetweb == nullptr) {
    // civetweb says "Failed to setup server ports" whatever the cause: a bind of our own names it (the address is
    // taken, or cannot be bound here).
    ::close(core::listen_tcp(address.host, address.port, options.listen_what));
    HS_THROW(core::Error, "http server: cannot listen on " + address.text() + " (" + options.listen_what +
                              "): " + (error_text[0] ? error_text : "civetweb did not start"));
  }
  if (const std::string warning = all_interfaces_warning(address, options.listen_what); !warning.empty()) {
    std::cerr << "hybridshard: " << warning << std::endl;
  }
  mg_set_request_handler(context_->civetweb, "/", &Context::handle, context_.get());

  mg_server_port bound[4];
  std::memset(bound, 0, sizeof(bound));
  int count = mg_get_server_ports(context_->civetweb, 4, bound);
  if (count < 1 || bound[0].port <= 0) {
    stop();
    HS_THROW(core::Error, "http server: listening on " + address.text() + " but cannot read back the port");
  }
  port_ = bound[0].port;
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::stop() {
  std::lock_guard<std::mutex> lock(context_->stop_mutex);
  if (context_->civetweb != nullptr) {
    mg_stop(context_->civetweb);
    context_->civetweb = nullptr;
  }
}

std::string HttpServer::url() const { return "http://" + host_ + ":" + std::to_string(port_); }

}  // namespace hybridshard::service
