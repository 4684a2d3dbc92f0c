#include "hybridshard/core/store.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>

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

// A file store: what the ranks of one host share (our launcher, export, bench). No port; each rank opens the file.
class FileStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string name = (std::filesystem::temp_directory_path() / "hybridshard-store-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(name.data()), nullptr);
    directory_ = name;
  }
  void TearDown() override { std::filesystem::remove_all(directory_); }

  std::unique_ptr<Store> open(milliseconds timeout = milliseconds(5000)) const {
    StoreOptions options;
    options.file = (directory_ / "store").string();
    options.timeout = timeout;
    return Store::open(options);
  }

  std::filesystem::path directory_;
};

TEST_F(FileStoreTest, ranks_on_threads_see_each_others_keys_without_a_port) {
  auto first = open();
  EXPECT_EQ(first->port(), 0);
  EXPECT_EQ(first->where(), "file " + (directory_ / "store").string());
  testing::run_ranks(3, [this](int rank) {
    auto store = open();
    store->set("from" + std::to_string(rank), "value" + std::to_string(rank));
    for (int other = 0; other < 3; ++other) {
      EXPECT_EQ(store->get("from" + std::to_string(other)), "value" + std::to_string(other));
    }
    store->add("counter", rank + 1);
  });
  EXPECT_EQ(first->add("counter", 0), 6);
  EXPECT_TRUE(first->check({"from0", "from1", "from2"}));
  EXPECT_FALSE(first->check({"from3"}));
  auto scoped = first->scoped("a");
  scoped->set("key", "in-a");
  EXPECT_FALSE(first->check({"key"}));
  EXPECT_EQ(open()->scoped("a")->get("key"), "in-a");
}

TEST_F(FileStoreTest, waits_end_at_the_timeout_naming_the_key_and_the_file) {
  auto store = open(milliseconds(300));
  try {
    store->get("never-set");
    FAIL() << "expected TimeoutError";
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("never-set"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("file " + directory_.string()), std::string::npos) << e.what();
  }
  store->set("present", "1");
  EXPECT_THROW(store->wait({"present", "absent"}, milliseconds(200)), TimeoutError);
}

TEST_F(FileStoreTest, a_file_in_a_directory_that_does_not_exist_is_a_comm_error_naming_it) {
  StoreOptions options;
  options.file = (directory_ / "missing" / "store").string();
  options.timeout = milliseconds(300);
  try {
    auto store = Store::open(options);
    store->set("key", "value");  // c10d opens the file per operation: the first one fails
    FAIL() << "expected CommError";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find(options.file), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace hybridshard::core
