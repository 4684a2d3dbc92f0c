// The receiving end of the event stream (EventReceiver): each line is decoded once into a typed event of the
// connection's rank; a bad line (malformed, of the wrong type, of another rank) ends only that connection; a hello can
// be refused, and the client says why.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "hybridshard/service/events/event_json.h"
#include "hybridshard/service/events/event_stream.h"

namespace hybridshard::service {
namespace {

StreamHello hello_of(int rank) {
  StreamHello hello;
  hello.rank = rank;
  hello.pid = 100 + rank;
  return hello;
}

struct Seen {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<JobEvent> events;
  int closes = 0;

  template <typename Done>
  bool wait(Done done) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, std::chrono::seconds(10), [&] { return done(); });
  }
};

EventReceiverHandlers handlers(Seen& seen, int world_size = 4) {
  EventReceiverHandlers result;
  result.accept = [world_size](const StreamHello& hello) -> std::string {
    return hello.rank < world_size ? "" : "rank " + std::to_string(hello.rank) + " is outside the job";
  };
  result.on_event = [&seen](const StreamHello&, JobEvent&& event) {
    std::lock_guard lock(seen.mutex);
    seen.events.push_back(std::move(event));
    seen.changed.notify_all();
  };
  result.on_close = [&seen](const StreamHello&) {
    std::lock_guard lock(seen.mutex);
    ++seen.closes;
    seen.changed.notify_all();
  };
  return result;
}

// A raw connection that says hello as rank `rank` and then sends `line`; returns true when the receiver closed it.
bool closed_after(int port, int rank, const std::string& line) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) return false;
  const std::string text = hello_line(hello_of(rank)) + "\n" + line + "\n";
  ::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
  // Read the welcome, then wait for the end of the connection.
  char buffer[256];
  bool closed = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!closed && std::chrono::steady_clock::now() < deadline) {
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, 100) <= 0) continue;
    closed = ::recv(fd, buffer, sizeof(buffer), 0) <= 0;
  }
  ::close(fd);
  return closed;
}

std::string phase_begin_line(int rank) {
  core::Event event;
  event.type = core::EventType::kPhaseBegin;
  event.time = 10;
  event.rank = rank;
  event.iteration = 0;
  event.phase = "train";
  return event_line(event_to_json(event));
}

TEST(EventReceiverTest, events_arrive_typed_and_a_bad_line_ends_only_its_connection) {
  Seen seen;
  EventReceiver receiver("127.0.0.1", 0, handlers(seen));
  EventStreamClient good(receiver.address(), hello_of(1), std::chrono::seconds(10), std::chrono::milliseconds(20));
  good.send_line(phase_begin_line(1));
  ASSERT_TRUE(seen.wait([&] { return seen.events.size() == 1; }));
  EXPECT_TRUE(seen.events[0].is_engine(core::EventType::kPhaseBegin));
  EXPECT_EQ(seen.events[0].engine.phase, "train");

  // A wrong JSON type where a string belongs (a nlohmann type_error if read unchecked), bad JSON, an event of
  // another rank, a launcher-only event, an unknown type: each ends its connection, and nothing else.
  for (const std::string& bad :
       {std::string(R"({"type":"phase_begin","rank":0,"time":1,"iteration":0,"phase":5})"), std::string("{not json"),
        phase_begin_line(2), std::string(R"({"type":"job_end","time":1,"ok":true,"message":"","seconds":1})"),
        std::string(R"({"type":"party","rank":0,"time":1})")}) {
    EXPECT_TRUE(closed_after(receiver.port(), 0, bad)) << bad;
  }
  good.send_line(phase_begin_line(1));
  ASSERT_TRUE(seen.wait([&] { return seen.events.size() == 2; })) << "the good connection was disturbed";
  std::lock_guard lock(seen.mutex);
  for (const JobEvent& event : seen.events) EXPECT_EQ(event.rank(), 1);
}

TEST(EventReceiverTest, a_refused_hello_tells_the_client_why) {
  Seen seen;
  EventReceiver receiver("127.0.0.1", 0, handlers(seen, 2));
  try {
    EventStreamClient client(receiver.address(), hello_of(5), std::chrono::seconds(10), std::chrono::milliseconds(20));
    FAIL() << "not refused";
  } catch (const StreamRefusedError& error) {
    EXPECT_NE(std::string(error.what()).find("rank 5 is outside the job"), std::string::npos) << error.what();
  }
}

// IPv6 loopback works end to end ("[::1]:0"), and a taken port says so, naming the address and the flag.
TEST(EventReceiverTest, listens_on_ipv6_loopback_and_a_busy_port_says_address_in_use) {
  Seen seen;
  EventReceiver receiver("::1", 0, handlers(seen), "--events");
  EXPECT_EQ(receiver.address(), "[::1]:" + std::to_string(receiver.port()));
  EventStreamClient client(receiver.address(), hello_of(1), std::chrono::seconds(10), std::chrono::milliseconds(20));
  client.send_line(phase_begin_line(1));
  ASSERT_TRUE(seen.wait([&] { return seen.events.size() == 1; }));
  try {
    EventReceiver second("::1", receiver.port(), handlers(seen), "--events");
    FAIL() << "bound a taken port";
  } catch (const core::CommError& error) {
    EXPECT_NE(
        std::string(error.what()).find("address in use: [::1]:" + std::to_string(receiver.port()) + " (--events)"),
        std::string::npos)
        << error.what();
  }
}

// Every connection that ends is closed on this side too: no socket is left in CLOSE-WAIT (at the fd limit the
// accept loop used to spin and /healthz stopped answering).
TEST(EventReceiverTest, ended_connections_leave_no_open_socket_behind) {
  auto open_fds = [] {
    return std::distance(std::filesystem::directory_iterator("/proc/self/fd"), std::filesystem::directory_iterator{});
  };
  Seen seen;
  EventReceiver receiver("127.0.0.1", 0, handlers(seen));
  const auto before = open_fds();
  for (int connection = 0; connection < 50; ++connection) {
    EXPECT_TRUE(closed_after(receiver.port(), 0, "{not json"));
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (open_fds() > before && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_LE(open_fds(), before);
}

TEST(EventReceiverTest, the_secret_travels_in_the_hello_and_secrets_compare_exactly) {
  StreamHello hello = hello_of(3);
  hello.secret = new_stream_secret();
  EXPECT_EQ(hello.secret.size(), 32u);
  EXPECT_EQ(hello.secret.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_NE(hello.secret, new_stream_secret());
  EXPECT_EQ(decode_hello(hello_line(hello)).secret, hello.secret);
  EXPECT_TRUE(secrets_match(hello.secret, hello.secret));
  EXPECT_FALSE(secrets_match(hello.secret, ""));
  EXPECT_FALSE(secrets_match(hello.secret, hello.secret.substr(0, 31)));
  EXPECT_FALSE(secrets_match(hello.secret, hello.secret + "0"));
  EXPECT_TRUE(secrets_match("", ""));
  EXPECT_THROW(decode_hello(R"({"type":"hello","rank":0,"pid":1,"secret":5})"), core::Error);
}

TEST(EventReceiverTest, addresses_are_parsed_strictly) {
  EXPECT_EQ(parse_host_port("127.0.0.1:9000", "x").port, 9000);
  EXPECT_EQ(parse_host_port("[::1]:0", "x").host, "::1");
  EXPECT_THROW(parse_host_port("127.0.0.1:99999999999", "x"), core::ConfigError);
  EXPECT_THROW(parse_host_port("127.0.0.1:", "x"), core::ConfigError);
  EXPECT_THROW(parse_host_port("::1:80", "x"), core::ConfigError);
  EXPECT_THROW(parse_host_port("host", "x"), core::ConfigError);
}

}  // namespace
}  // namespace hybridshard::service
