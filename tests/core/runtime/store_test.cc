#include "hybridshard/core/store.h"

#include <gtest/gtest.h>

#include "hybridshard/core/error.h"
#include "rank_threads.h"

namespace hybridshard::core {
namespace {

using std::chrono::milliseconds;

std::unique_ptr<Store> open_server(milliseconds timeout = milliseconds(5000)) {
  StoreOptions options;
  options.port = 0;
  options.is_server = true;
  options.timeout = timeout;
  return Store::open(options);
}

std::unique_ptr<Store> open_client(int port, milliseconds timeout = milliseconds(5000)) {
  StoreOptions options;
  options.port = port;
  options.timeout = timeout;
  return Store::open(options);
}

TEST(StoreTest, server_on_port_zero_reports_the_port_it_took) {
  auto server = open_server();
  EXPECT_GT(server->port(), 0);
  EXPECT_TRUE(server->options().is_server);
}

TEST(StoreTest, clients_on_threads_see_each_others_keys) {
  auto server = open_server();
  const int port = server->port();
  testing::run_ranks(3, [port](int rank) {
    auto store = open_client(port);
    store->set("from" + std::to_string(rank), "value" + std::to_string(rank));
    for (int other = 0; other < 3; ++other) {
      EXPECT_EQ(store->get("from" + std::to_string(other)), "value" + std::to_string(other));
    }
    store->add("counter", rank + 1);
  });
  EXPECT_EQ(server->add("counter", 0), 6);
  EXPECT_TRUE(server->check({"from0", "from1", "from2"}));
  EXPECT_FALSE(server->check({"from3"}));
}

TEST(StoreTest, get_of_a_key_nobody_sets_throws_timeout_naming_the_key) {
  auto server = open_server(milliseconds(300));
  try {
    server->get("never-set");
    FAIL() << "expected TimeoutError";
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("never-set"), std::string::npos) << e.what();
  }
}

TEST(StoreTest, wait_throws_timeout_when_keys_stay_missing) {
  auto server = open_server();
  server->set("present", "1");
  EXPECT_NO_THROW(server->wait({"present"}, milliseconds(1000)));
  EXPECT_THROW(server->wait({"present", "absent"}, milliseconds(200)), TimeoutError);
}

TEST(StoreTest, scoped_views_keep_their_keys_apart) {
  auto server = open_server(milliseconds(300));
  auto a = server->scoped("a");
  auto b = server->scoped("b");
  a->set("key", "in-a");
  b->set("key", "in-b");
  EXPECT_EQ(a->get("key"), "in-a");
  EXPECT_EQ(b->get("key"), "in-b");
  EXPECT_EQ(a->options().prefix, "hybridshard/a");
  EXPECT_FALSE(server->check({"key"}));
  auto nested = a->scoped("inner");
  nested->set("deep", "x");
  EXPECT_FALSE(a->check({"deep"}));
  EXPECT_EQ(server->scoped("a")->scoped("inner")->get("deep"), "x");
}

TEST(StoreTest, client_without_a_server_fails_with_comm_error_naming_the_address) {
  // Take a free port from a server, close it, then connect there.
  int port = 0;
  {
    auto server = open_server();
    port = server->port();
  }
  try {
    open_client(port, milliseconds(300));
    FAIL() << "expected CommError";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("127.0.0.1:" + std::to_string(port)), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace hybridshard::core
