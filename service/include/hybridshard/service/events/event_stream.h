// The event stream from rank processes to whoever watches the job (the launcher of `hybridshard run`, or
// `hybridshard serve`): JSON lines over TCP.
//
// Each connection speaks for one rank of one job. It opens with a hello ({"type":"hello","rank":R,"pid":P,
// "job":NAME,"world_size":W,"instance":ID}) that the receiving end accepts ({"type":"welcome"}) or refuses
// ({"type":"refused","reason":...}); then one line per event, and a heartbeat line every heartbeat interval from a
// thread of its own, so that a rank that stops (SIGSTOP, a hung driver) is noticed by its silence even while its peers
// wait on it in a collective. The receiving end decodes each line once (EventReceiver); a line that is not a valid
// event of the connection's rank ends that connection with one log line, and nothing else.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "hybridshard/core/error.h"
#include "hybridshard/service/events/host_port.h"
#include "hybridshard/service/events/job_event.h"

namespace hybridshard::service {

// Longest line either side accepts; longer lines close the connection with an error.
inline constexpr std::size_t kMaxEventLineBytes = std::size_t{1} << 20;

// Who a connection speaks for, and the job's secret that proves it (HYBRIDSHARD_EVENTS_SECRET): the receiving end
// refuses a hello whose secret is not the job's, so that another local user cannot forge a rank's events.
struct StreamHello {
  int rank = 0;
  long pid = 0;
  std::string job;       // the job's name ("" under `hybridshard run`: its one job)
  int world_size = 0;    // 0: not said
  std::string instance;  // tells two runs that share a job name apart (all ranks of one run send the same)
  std::string secret;    // "" when the job has none (only `serve` accepts that, for jobs started without one)
};
std::string hello_line(const StreamHello& hello);
// Throws core::Error naming the field when `line` is not a hello.
StreamHello decode_hello(std::string_view line);

// A new per-job secret: 128 random bits (getrandom) as 32 hex digits.
std::string new_stream_secret();
// Whether `given` is `expected`, in time independent of where they differ.
bool secrets_match(const std::string& expected, const std::string& given);

// The receiving end refused the hello (a second live job with the same name, a rank already connected).
class StreamRefusedError : public core::Error {
 public:
  using core::Error::Error;
};

class EventStreamClient {
 public:
  // Connects to "host:port" (retrying until `timeout`), says hello and waits (within `timeout`) for the answer.
  // Throws core::CommError naming the address when it cannot connect or gets no answer, StreamRefusedError with the
  // receiving end's reason when refused.
  EventStreamClient(const std::string& address, StreamHello hello, std::chrono::milliseconds timeout,
                    std::chrono::milliseconds heartbeat_interval);
  ~EventStreamClient();
  EventStreamClient(const EventStreamClient&) = delete;
  EventStreamClient& operator=(const EventStreamClient&) = delete;

  // Sends one line (a newline is appended). Thread-safe. A broken connection is reported once on stderr and then
  // ignored: losing the receiving end must not stop a rank mid-transition.
  void send_line(const std::string& json_line);

 private:
  void heartbeat_loop(std::chrono::milliseconds interval);

  int fd_ = -1;
  int rank_;
  std::string address_;
  std::mutex mutex_;
  bool broken_ = false;
  std::atomic<bool> stop_{false};
  std::thread heartbeat_;
};

// The transport: accepts connections, reads their hello and their lines. One reader thread per connection; a
// connection that ends is closed and its thread reaped.
struct EventStreamHandlers {
  // The first line of a connection, decoded: "" accepts it; anything else refuses it with that reason.
  std::function<std::string(int connection, const StreamHello& hello)> on_hello;
  // Every later line. An exception ends the connection, with one log line naming it and the exception's message.
  std::function<void(int connection, const std::string& line)> on_line;
  // Every connection's end (accepted or not), once.
  std::function<void(int connection)> on_close;
};

class EventStreamServer {
 public:
  // Listens on host:port (port 0: any free port). Handlers run on the server's reader threads. Throws
  // core::CommError "address in use: HOST:PORT (WHAT)" when the address is taken; warns on stderr when host is
  // 0.0.0.0 or ::. `what` names the address's flag or variable in messages.
  EventStreamServer(const std::string& host, int port, EventStreamHandlers handlers,
                    const std::string& what = "event stream");
  ~EventStreamServer();
  EventStreamServer(const EventStreamServer&) = delete;
  EventStreamServer& operator=(const EventStreamServer&) = delete;

  int port() const { return port_; }
  std::string address() const;  // "host:port"

 private:
  struct Reader {
    int connection = 0;
    int fd = -1;
    std::atomic<bool> done{false};
    std::thread thread;
  };
  void accept_loop();
  void read_loop(Reader& reader);
  void reap(bool all);

  std::string host_;
  int listen_fd_ = -1;
  int port_ = 0;
  EventStreamHandlers handlers_;
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::list<Reader> readers_;
  std::thread acceptor_;  // last: started once everything above is ready
};

// The typed receiving end: each line decoded once into a JobEvent of the connection's rank.
struct EventReceiverHandlers {
  // "" accepts the connection; anything else refuses it with that reason.
  std::function<std::string(const StreamHello& hello)> accept;
  // An event of the connection's rank (engine events, rank_up; the job event from rank 0). An exception ends the
  // connection like a bad line.
  std::function<void(const StreamHello& hello, JobEvent&& event)> on_event;
  // Any valid line (events and heartbeats): the rank is alive.
  std::function<void(const StreamHello& hello)> on_alive;
  // An accepted connection ended.
  std::function<void(const StreamHello& hello)> on_close;
};

class EventReceiver {
 public:
  EventReceiver(const std::string& host, int port, EventReceiverHandlers handlers,
                const std::string& what = "event stream");
  int port() const { return server_->port(); }
  std::string address() const { return server_->address(); }

 private:
  StreamHello hello_of(int connection);

  EventReceiverHandlers handlers_;
  std::mutex mutex_;
  std::map<int, StreamHello> hellos_;          // accepted connections
  std::unique_ptr<EventStreamServer> server_;  // last: stopped before the rest goes
};

}  // namespace hybridshard::service
