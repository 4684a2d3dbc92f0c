// The event stream from rank processes to the launcher: JSON lines over TCP.
//
// Each rank connects once, says who it is ({"type":"hello","rank":R,...}), then sends one line per event and a
// heartbeat line every heartbeat interval from a thread of its own, so that a rank that stops (SIGSTOP, a hung
// driver) is noticed by its silence even while its peers wait on it in a collective.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace hybridshard::service {

// Longest line either side accepts; longer lines close the connection with an error.
inline constexpr std::size_t kMaxEventLineBytes = std::size_t{1} << 20;

class EventStreamClient {
 public:
  // Connects to "host:port", retrying until `timeout`; throws core::CommError naming the address on failure.
  EventStreamClient(const std::string& address, int rank, std::chrono::milliseconds timeout,
                    std::chrono::milliseconds heartbeat_interval);
  ~EventStreamClient();
  EventStreamClient(const EventStreamClient&) = delete;
  EventStreamClient& operator=(const EventStreamClient&) = delete;

  // Sends one line (a newline is appended). Thread-safe. A broken connection is reported once on stderr and then
  // ignored: losing the launcher must not kill a rank mid-transition (the launcher kills ranks itself).
  void send_line(const std::string& json_line);

 private:
  void heartbeat_loop(std::chrono::milliseconds interval);

  int fd_ = -1;
  int rank_;
  std::mutex mutex_;
  bool broken_ = false;
  std::atomic<bool> stop_{false};
  std::thread heartbeat_;
};

class EventStreamServer {
 public:
  using LineHandler = std::function<void(int connection, const std::string& line)>;
  using CloseHandler = std::function<void(int connection)>;

  // Listens on host:port (port 0: any free port). Handlers run on the server's reader threads.
  EventStreamServer(const std::string& host, int port, LineHandler on_line, CloseHandler on_close);
  ~EventStreamServer();
  EventStreamServer(const EventStreamServer&) = delete;
  EventStreamServer& operator=(const EventStreamServer&) = delete;

  int port() const { return port_; }
  std::string address() const;  // "host:port"

 private:
  void accept_loop();
  void read_loop(int connection, int fd);

  std::string host_;
  int listen_fd_ = -1;
  int port_ = 0;
  LineHandler on_line_;
  CloseHandler on_close_;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::mutex mutex_;
  std::vector<std::thread> readers_;
  std::vector<int> fds_;
};

}  // namespace hybridshard::service
