#include "hybridshard/service/launch/event_stream.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>

#include "hybridshard/core/error.h"
#include "hybridshard/core/events.h"

namespace hybridshard::service {
namespace {

std::pair<std::string, int> split_address(const std::string& address) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 == address.size()) {
    HS_THROW(core::ConfigError, "event stream address '" + address + "' is not host:port");
  }
  return {address.substr(0, colon), std::stoi(address.substr(colon + 1))};
}

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

}  // namespace

EventStreamClient::EventStreamClient(const std::string& address, int rank, std::chrono::milliseconds timeout,
                                     std::chrono::milliseconds heartbeat_interval)
    : rank_(rank) {
  const auto [host, port] = split_address(address);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while ((fd_ = connect_once(host, port)) < 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      HS_THROW(core::CommError, "rank " + std::to_string(rank) +
                                    " could not connect to the launcher's event stream at " + address + " within " +
                                    std::to_string(timeout.count()) + " ms");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  send_line(R"({"type":"hello","rank":)" + std::to_string(rank) + R"(,"pid":)" + std::to_string(::getpid()) + "}");
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
    std::cerr << "[rank " << rank_ << "] warning: the event stream to the launcher broke (" << std::strerror(errno)
              << "); events are no longer reported\n";
  }
}

void EventStreamClient::heartbeat_loop(std::chrono::milliseconds interval) {
  auto next = std::chrono::steady_clock::now();
  while (!stop_) {
    if (std::chrono::steady_clock::now() >= next) {
      char buffer[128];
      std::snprintf(buffer, sizeof(buffer), R"({"type":"heartbeat","rank":%d,"time":%.3f})", rank_,
                    core::wall_time_now());
      send_line(buffer);
      next += interval;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

EventStreamServer::EventStreamServer(const std::string& host, int port, LineHandler on_line, CloseHandler on_close)
    : host_(host), on_line_(std::move(on_line)), on_close_(std::move(on_close)) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* result = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &result) != 0 || result == nullptr) {
    HS_THROW(core::ConfigError, "cannot resolve event stream listen address " + host);
  }
  listen_fd_ = ::socket(result->ai_family, result->ai_socktype | SOCK_CLOEXEC, result->ai_protocol);
  int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (listen_fd_ < 0 || ::bind(listen_fd_, result->ai_addr, result->ai_addrlen) != 0 ||
      ::listen(listen_fd_, 256) != 0) {
    const std::string reason = std::strerror(errno);
    freeaddrinfo(result);
    if (listen_fd_ >= 0) ::close(listen_fd_);
    HS_THROW(core::CommError, "cannot listen for rank events on " + host + ":" + std::to_string(port) + ": " + reason);
  }
  freeaddrinfo(result);
  sockaddr_storage bound{};
  socklen_t length = sizeof(bound);
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&bound), &length);
  port_ = bound.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                                      : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  acceptor_ = std::thread([this] { accept_loop(); });
}

EventStreamServer::~EventStreamServer() {
  stop_ = true;
  if (acceptor_.joinable()) acceptor_.join();
  {
    std::lock_guard lock(mutex_);
    for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
  }
  for (std::thread& reader : readers_) {
    if (reader.joinable()) reader.join();
  }
  for (int fd : fds_) ::close(fd);
  ::close(listen_fd_);
}

std::string EventStreamServer::address() const { return host_ + ":" + std::to_string(port_); }

void EventStreamServer::accept_loop() {
  int next_connection = 0;
  while (!stop_) {
    pollfd pfd{listen_fd_, POLLIN, 0};
    if (::poll(&pfd, 1, 100) <= 0) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    std::lock_guard lock(mutex_);
    fds_.push_back(fd);
    const int connection = next_connection++;
    readers_.emplace_back([this, connection, fd] { read_loop(connection, fd); });
  }
}

void EventStreamServer::read_loop(int connection, int fd) {
  std::string pending;
  char buffer[65536];
  while (!stop_) {
    pollfd pfd{fd, POLLIN, 0};
    const int ready = ::poll(&pfd, 1, 100);
    if (ready == 0) continue;
    if (ready < 0 && errno == EINTR) continue;
    const ssize_t n = ready < 0 ? -1 : ::recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) break;
    pending.append(buffer, static_cast<std::size_t>(n));
    std::size_t start = 0;
    for (std::size_t newline; (newline = pending.find('\n', start)) != std::string::npos; start = newline + 1) {
      if (newline > start) on_line_(connection, pending.substr(start, newline - start));
    }
    pending.erase(0, start);
    if (pending.size() > kMaxEventLineBytes) {
      std::cerr << "hybridshard: dropping event connection " << connection << ": a line exceeds " << kMaxEventLineBytes
                << " bytes\n";
      break;
    }
  }
  if (on_close_) on_close_(connection);
}

}  // namespace hybridshard::service
