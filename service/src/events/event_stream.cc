#include "hybridshard/service/events/event_stream.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>

#include "hybridshard/core/error.h"
#include "hybridshard/core/events.h"
#include "hybridshard/core/tcp_listener.h"
#include "hybridshard/service/events/event_json.h"

namespace hybridshard::service {
namespace {

using Clock = std::chrono::steady_clock;

int connect_once(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &result) != 0) return -1;
  int fd = -1;
  for (addrinfo* it = result; it != nullptr; it = it->ai_next) {
    fd = ::socket(it->ai_family, it->ai_socktype | SOCK_CLOEXEC, it->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, it->ai_addr, it->ai_addrlen) == 0) break;
    ::close(fd);
    fd = -1;
  }
  freeaddrinfo(result);
  if (fd >= 0) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  return fd;
}

bool write_all(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

// Reads one line (without its newline) within `timeout`; false on timeout, a closed connection or an overlong line.
bool read_line(int fd, std::chrono::milliseconds timeout, std::string& line) {
  const auto deadline = Clock::now() + timeout;
  line.clear();
  while (line.size() <= kMaxEventLineBytes) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd pfd{fd, POLLIN, 0};
    const int ready = ::poll(&pfd, 1, static_cast<int>(std::min<long long>(left, 100)));
    if (ready < 0 && errno != EINTR) return false;
    if (ready <= 0) continue;
    char c = 0;
    const ssize_t n = ::recv(fd, &c, 1, 0);
    if (n <= 0) return false;
    if (c == '\n') return true;
    line.push_back(c);
  }
  return false;
}

const char* kWelcome = R"({"type":"welcome"})";

}  // namespace

std::string hello_line(const StreamHello& hello) {
  return event_line(nlohmann::json{{"type", "hello"},
                                   {"rank", hello.rank},
                                   {"pid", hello.pid},
                                   {"job", hello.job},
                                   {"world_size", hello.world_size},
                                   {"instance", hello.instance},
                                   {"secret", hello.secret}});
}

StreamHello decode_hello(std::string_view line) {
  const nlohmann::json json = parse_event_line(line);
  auto field = [&](const char* key) -> const nlohmann::json& {
    auto it = json.find(key);
    if (it == json.end()) HS_THROW(core::Error, std::string("hello: missing field '") + key + "'");
    return *it;
  };
  auto wrong = [](const char* key, const char* wanted) {
    HS_THROW(core::Error, std::string("hello: field '") + key + "' must be " + wanted);
  };
  if (field("type") != "hello") HS_THROW(core::Error, "expected a hello first, got " + field("type").dump());
  StreamHello hello;
  const nlohmann::json& rank = field("rank");
  if (!rank.is_number_integer() || rank.get<std::int64_t>() < 0 || rank.get<std::int64_t>() >= kMaxWorldSize) {
    wrong("rank", "an integer in [0, 65536)");
  }
  hello.rank = rank.get<int>();
  const nlohmann::json& pid = field("pid");
  if (!pid.is_number_integer()) wrong("pid", "an integer");
  hello.pid = pid.get<long>();
  // Optional: job, world_size, instance.
  if (json.contains("job")) {
    if (!json["job"].is_string()) wrong("job", "a string");
    hello.job = json["job"].get<std::string>();
  }
  if (json.contains("world_size")) {
    const nlohmann::json& world = json["world_size"];
    if (!world.is_number_integer() || world.get<std::int64_t>() < 0 || world.get<std::int64_t>() > kMaxWorldSize) {
      wrong("world_size", "an integer in [0, 65536]");
    }
    hello.world_size = world.get<int>();
    if (hello.world_size > 0 && hello.rank >= hello.world_size) wrong("rank", "below world_size");
  }
  if (json.contains("instance")) {
    if (!json["instance"].is_string()) wrong("instance", "a string");
    hello.instance = json["instance"].get<std::string>();
  }
  if (json.contains("secret")) {
    if (!json["secret"].is_string() || json["secret"].get<std::string>().size() > 256) {
      wrong("secret", "a string of at most 256 characters");
    }
    hello.secret = json["secret"].get<std::string>();
  }
  return hello;
}

std::string new_stream_secret() {
  unsigned char bytes[16];
  std::size_t filled = 0;
  while (filled < sizeof(bytes)) {
    const ssize_t n = ::getrandom(bytes + filled, sizeof(bytes) - filled, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) HS_THROW(core::Error, std::string("getrandom failed: ") + std::strerror(errno));
    filled += static_cast<std::size_t>(n);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string secret;
  for (unsigned char byte : bytes) {
    secret.push_back(kHex[byte >> 4]);
    secret.push_back(kHex[byte & 15]);
  }
  return secret;
}

bool secrets_match(const std::string& expected, const std::string& given) {
  unsigned char differ = expected.size() == given.size() ? 0 : 1;
  for (std::size_t i = 0; i < given.size(); ++i) {
    differ |= static_cast<unsigned char>(given[i] ^ (i < expected.size() ? expected[i] : 0));
  }
  return differ == 0;
}

EventStreamClient::EventStreamClient(const std::string& address, StreamHello hello, std::chrono::milliseconds timeout,
                                     std::chrono::milliseconds heartbeat_interval)
    : rank_(hello.rank), address_(address) {
  const HostPort target = parse_host_port(address, "event stream address");
  const auto deadline = Clock::now() + timeout;
  const std::string who = "rank " + std::to_string(rank_) + (hello.job.empty() ? "" : " of job '" + hello.job + "'");
  while ((fd_ = connect_once(target.host, target.port)) < 0) {
    if (Clock::now() > deadline) {
      HS_THROW(core::CommError, who + " could not connect to the event stream at " + address + " within " +
                                    std::to_string(timeout.count()) + " ms");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::string answer;
  const std::string line = hello_line(hello) + "\n";
  if (!write_all(fd_, line.data(), line.size()) ||
      !read_line(fd_, std::max(std::chrono::milliseconds(1), timeout), answer)) {
    ::close(fd_);
    fd_ = -1;
    HS_THROW(core::CommError, who + ": the event stream at " + address + " did not answer the hello");
  }
  if (answer != kWelcome) {
    ::close(fd_);
    fd_ = -1;
    const nlohmann::json reply = nlohmann::json::parse(answer, nullptr, false);
    const std::string reason = reply.is_object() && reply.contains("reason") && reply["reason"].is_string()
                                   ? reply["reason"].get<std::string>()
                                   : answer.substr(0, 200);
    HS_THROW(StreamRefusedError, "the event stream at " + address + " refused " + who + ": " + reason);
  }
  heartbeat_ = std::thread([this, heartbeat_interval] { heartbeat_loop(heartbeat_interval); });
}

EventStreamClient::~EventStreamClient() {
  stop_ = true;
  if (heartbeat_.joinable()) heartbeat_.join();
  if (fd_ >= 0) {
    ::shutdown(fd_, SHUT_WR);
    ::close(fd_);
  }
}

void EventStreamClient::send_line(const std::string& json_line) {
  std::lock_guard lock(mutex_);
  if (broken_) return;
  std::string line = json_line;
  line.push_back('\n');
  if (line.size() > kMaxEventLineBytes || !write_all(fd_, line.data(), line.size())) {
    broken_ = true;
    std::cerr << "[rank " << rank_ << "] warning: the event stream to " << address_ << " broke ("
              << std::strerror(errno) << "); events are no longer reported\n";
  }
}

void EventStreamClient::heartbeat_loop(std::chrono::milliseconds interval) {
  auto next = Clock::now();
  while (!stop_) {
    if (Clock::now() >= next) {
      send_line(event_line(heartbeat_event(rank_, core::wall_time_now())));
      next += interval;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

EventStreamServer::EventStreamServer(const std::string& host, int port, EventStreamHandlers handlers,
                                     const std::string& what)
    : host_(host), handlers_(std::move(handlers)) {
  const HostPort address{host, port, host.find(':') != std::string::npos};
  if (const std::string warning = all_interfaces_warning(address, what); !warning.empty()) {
    std::cerr << "hybridshard: " << warning << std::endl;
  }
  listen_fd_ = core::listen_tcp(host, port, what);
  port_ = core::bound_port(listen_fd_);
  acceptor_ = std::thread([this] { accept_loop(); });
}

EventStreamServer::~EventStreamServer() {
  stop_ = true;  // every reader notices within its 100 ms poll and closes its own connection
  if (acceptor_.joinable()) acceptor_.join();
  reap(/*all=*/true);
  ::close(listen_fd_);
}

std::string EventStreamServer::address() const {
  return (host_.find(':') != std::string::npos ? "[" + host_ + "]" : host_) + ":" + std::to_string(port_);
}

void EventStreamServer::reap(bool all) {
  std::list<Reader> finished;
  {
    std::lock_guard lock(mutex_);
    for (auto it = readers_.begin(); it != readers_.end();) {
      auto next = std::next(it);
      if (all || it->done) finished.splice(finished.end(), readers_, it);
      it = next;
    }
  }
  for (Reader& reader : finished) {
    if (reader.thread.joinable()) reader.thread.join();
  }
}

void EventStreamServer::accept_loop() {
  int next_connection = 0;
  while (!stop_) {
    reap(/*all=*/false);
    pollfd pfd{listen_fd_, POLLIN, 0};
    if (::poll(&pfd, 1, 100) <= 0) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    std::lock_guard lock(mutex_);
    Reader& reader = readers_.emplace_back();
    reader.connection = next_connection++;
    reader.fd = fd;
    reader.thread = std::thread([this, &reader] { read_loop(reader); });
  }
}

void EventStreamServer::read_loop(Reader& reader) {
  const int connection = reader.connection;
  const int fd = reader.fd;
  std::string pending;
  char buffer[65536];
  bool hello_done = false;
  std::string failure;
  // One line: the hello first (answered), then the handler's lines. Returns false to end the connection.
  auto take = [&](const std::string& line) {
    try {
      if (hello_done) {
        handlers_.on_line(connection, line);
        return true;
      }
      const StreamHello hello = decode_hello(line);
      const std::string refusal = handlers_.on_hello ? handlers_.on_hello(connection, hello) : "";
      const std::string answer =
          refusal.empty() ? kWelcome : event_line(nlohmann::json{{"type", "refused"}, {"reason", refusal}});
      const std::string reply = answer + "\n";
      write_all(fd, reply.data(), reply.size());
      if (!refusal.empty()) {
        failure = "refused rank " + std::to_string(hello.rank) + ": " + refusal;
        return false;
      }
      hello_done = true;
      return true;
    } catch (const core::Error& error) {
      failure = error_message(error);
    } catch (const std::exception& error) {
      failure = error.what();
    }
    return false;
  };
  bool open = true;
  while (open && !stop_) {
    pollfd pfd{fd, POLLIN, 0};
    const int ready = ::poll(&pfd, 1, 100);
    if (ready == 0) continue;
    if (ready < 0 && errno == EINTR) continue;
    const ssize_t n = ready < 0 ? -1 : ::recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) break;
    pending.append(buffer, static_cast<std::size_t>(n));
    std::size_t start = 0;
    for (std::size_t newline; open && (newline = pending.find('\n', start)) != std::string::npos; start = newline + 1) {
      if (newline > start) open = take(pending.substr(start, newline - start));
    }
    pending.erase(0, start);
    if (pending.size() > kMaxEventLineBytes) {
      failure = "a line exceeds " + std::to_string(kMaxEventLineBytes) + " bytes";
      open = false;
    }
  }
  if (!failure.empty()) {
    std::cerr << "hybridshard: event stream: closing connection " << connection << ": " << failure << "\n";
  }
  ::shutdown(fd, SHUT_RDWR);
  ::close(fd);
  if (handlers_.on_close) handlers_.on_close(connection);
  reader.done = true;
}

EventReceiver::EventReceiver(const std::string& host, int port, EventReceiverHandlers handlers, const std::string& what)
    : handlers_(std::move(handlers)) {
  EventStreamHandlers transport;
  transport.on_hello = [this](int connection, const StreamHello& hello) {
    std::string refusal = handlers_.accept ? handlers_.accept(hello) : "";
    if (refusal.empty()) {
      std::lock_guard lock(mutex_);
      hellos_[connection] = hello;
    }
    return refusal;
  };
  transport.on_line = [this](int connection, const std::string& line) {
    const StreamHello hello = hello_of(connection);
    JobEvent event;
    try {
      event = decode_event_line(line);
    } catch (const core::Error& error) {
      HS_THROW(core::Error, "rank " + std::to_string(hello.rank) + ": " + error_message(error));
    }
    const bool job_from_rank0 = event.type == JobEventType::kJob && hello.rank == 0;
    if (!job_from_rank0 && (!event.has_rank() || event.type == JobEventType::kRankDown)) {
      HS_THROW(core::Error, "rank " + std::to_string(hello.rank) + " may not send '" +
                                event_to_json(event)["type"].get<std::string>() + "' events");
    }
    if (event.has_rank() && event.rank() != hello.rank) {
      HS_THROW(core::Error, "the connection of rank " + std::to_string(hello.rank) + " sent an event of rank " +
                                std::to_string(event.rank()));
    }
    if (handlers_.on_alive) handlers_.on_alive(hello);
    if (event.type != JobEventType::kHeartbeat && handlers_.on_event) handlers_.on_event(hello, std::move(event));
  };
  transport.on_close = [this](int connection) {
    std::optional<StreamHello> hello;
    {
      std::lock_guard lock(mutex_);
      auto it = hellos_.find(connection);
      if (it == hellos_.end()) return;
      hello = it->second;
      hellos_.erase(it);
    }
    if (handlers_.on_close) handlers_.on_close(*hello);
  };
  server_ = std::make_unique<EventStreamServer>(host, port, std::move(transport), what);
}

StreamHello EventReceiver::hello_of(int connection) {
  std::lock_guard lock(mutex_);
  return hellos_.at(connection);
}

}  // namespace hybridshard::service
