// The launcher's event stream under concurrency (run under ThreadSanitizer by scripts/test-sanitizers): many ranks'
// clients, each with its heartbeat thread, sending at once to one server; every line arrives whole and in order per
// rank, each connection's close is reported once; a client that sends a line longer than kMaxEventLineBytes is cut
// off without disturbing the others; a server destroyed while clients still send stops (ctest's timeout: no hang).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "hybridshard/service/events/event_stream.h"

namespace hybridshard::service {
namespace {

using Clock = std::chrono::steady_clock;

StreamHello hello_of(int rank) {
  StreamHello hello;
  hello.rank = rank;
  hello.pid = 100 + rank;
  return hello;
}

// What the server saw, per connection: the rank from its hello, the sequence numbers of its "seq" lines in arrival
// order, heartbeats, malformed lines, closes.
struct Received {
  std::mutex mutex;
  std::condition_variable changed;
  std::map<int, int> rank_of;
  std::map<int, std::vector<long>> sequences;  // by rank
  std::map<int, int> heartbeats;               // by rank
  int malformed = 0;
  int closes = 0;

  void on_line(int, const std::string& line) {
    const nlohmann::json event = nlohmann::json::parse(line, nullptr, false);
    std::lock_guard lock(mutex);
    if (event.is_discarded() || !event.is_object()) {
      ++malformed;
    } else if (event.value("type", "") == "heartbeat") {
      ++heartbeats[event.value("rank", -1)];
    } else if (event.value("type", "") == "seq") {
      sequences[event.value("rank", -1)].push_back(event.value("seq", -1L));
    }
    changed.notify_all();
  }
  std::string on_hello(int connection, const StreamHello& hello) {
    std::lock_guard lock(mutex);
    rank_of[connection] = hello.rank;
    changed.notify_all();
    return "";
  }
  void on_close(int) {
    std::lock_guard lock(mutex);
    ++closes;
    changed.notify_all();
  }
  // Waits (10 s at most) until `done` holds under the lock.
  EventStreamHandlers handlers() {
    return {[this](int connection, const StreamHello& hello) { return on_hello(connection, hello); },
            [this](int connection, const std::string& line) { on_line(connection, line); },
            [this](int connection) { on_close(connection); }};
  }
  template <typename Done>
  bool wait(Done done) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, std::chrono::seconds(10), [&] { return done(); });
  }
};

TEST(EventStreamStressTest, every_line_of_many_concurrent_ranks_arrives_whole_and_in_order) {
  Received received;
  EventStreamServer server("127.0.0.1", 0, received.handlers());
  constexpr int kRanks = 8;
  constexpr long kLines = 500;
  {
    std::vector<std::thread> senders;
    for (int rank = 0; rank < kRanks; ++rank) {
      senders.emplace_back([&, rank] {
        EventStreamClient client(server.address(), hello_of(rank), std::chrono::seconds(10),
                                 std::chrono::milliseconds(1));
        // Lines of growing size (up to 4 KiB) so that writes split across TCP segments.
        for (long seq = 0; seq < kLines; ++seq) {
          const std::string padding(static_cast<std::size_t>((seq * 37) % 4096), 'x');
          client.send_line(R"({"type":"seq","rank":)" + std::to_string(rank) + R"(,"seq":)" + std::to_string(seq) +
                           R"(,"pad":")" + padding + R"("})");
        }
      });
    }
    for (std::thread& sender : senders) sender.join();
  }
  ASSERT_TRUE(received.wait([&] { return received.closes == kRanks; })) << received.closes << " closes";
  std::lock_guard lock(received.mutex);
  EXPECT_EQ(received.malformed, 0);
  EXPECT_EQ(received.rank_of.size(), static_cast<std::size_t>(kRanks));
  for (int rank = 0; rank < kRanks; ++rank) {
    const std::vector<long>& sequence = received.sequences[rank];
    ASSERT_EQ(sequence.size(), static_cast<std::size_t>(kLines)) << "rank " << rank;
    for (long seq = 0; seq < kLines; ++seq) ASSERT_EQ(sequence[static_cast<std::size_t>(seq)], seq) << "rank " << rank;
  }
}

// A raw TCP connection to the server, for what no well-behaved client sends.
int connect_raw(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

TEST(EventStreamStressTest, an_overlong_line_closes_only_its_connection) {
  Received received;
  EventStreamServer server("127.0.0.1", 0, received.handlers());
  EventStreamClient good(server.address(), hello_of(1), std::chrono::seconds(10), std::chrono::milliseconds(5));

  const int bad = connect_raw(server.port());
  ASSERT_GE(bad, 0);
  const std::string flood(kMaxEventLineBytes + 4096, 'y');  // no newline
  std::size_t sent = 0;
  while (sent < flood.size()) {
    const ssize_t n = ::send(bad, flood.data() + sent, flood.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may cut it off before everything is sent
    sent += static_cast<std::size_t>(n);
  }
  EXPECT_TRUE(received.wait([&] { return received.closes >= 1; })) << "the flooding connection was not closed";
  ::close(bad);

  good.send_line(R"({"type":"seq","rank":1,"seq":0})");
  EXPECT_TRUE(received.wait([&] { return received.sequences[1].size() == 1; })) << "the good client was disturbed";
  EXPECT_TRUE(received.wait([&] { return received.heartbeats[1] > 0; }));
}

TEST(EventStreamStressTest, a_server_destroyed_while_clients_send_stops_without_hanging) {
  std::atomic<bool> stop{false};
  std::atomic<long> lines{0};
  std::atomic<int> welcomed{0};
  auto server = std::make_unique<EventStreamServer>(
      "127.0.0.1", 0,
      EventStreamHandlers{[](int, const StreamHello&) { return std::string(); },
                          [&](int, const std::string&) { lines.fetch_add(1); }, [](int) {}});
  // Read before the senders start: they must not touch `server`, which this thread destroys below.
  const std::string address = server->address();
  std::vector<std::thread> senders;
  for (int rank = 0; rank < 4; ++rank) {
    senders.emplace_back([&, rank] {
      EventStreamClient client(address, hello_of(rank), std::chrono::seconds(10), std::chrono::milliseconds(1));
      welcomed.fetch_add(1);
      while (!stop.load()) client.send_line(R"({"type":"seq","rank":)" + std::to_string(rank) + "}");
    });
  }
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  // Every client is past its hello before the server goes (a client still connecting would rightly throw: the
  // server it was told about never answered), and the server has taken many lines.
  while ((welcomed.load() < 4 || lines.load() < 1000) && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(welcomed.load(), 4);
  EXPECT_GE(lines.load(), 1000);
  server.reset();  // clients still sending: their writes fail, which they report once and ignore (a hang here is
                   // caught by the test's timeout)
  stop = true;
  for (std::thread& sender : senders) sender.join();
}

}  // namespace
}  // namespace hybridshard::service
