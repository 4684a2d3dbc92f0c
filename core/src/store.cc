// Store over c10d's TCPStore or FileStore, with every key under the configured prefix (c10d's PrefixStore). Only API
// present in both libtorch 1.13 and 2.x is used.
#include "hybridshard/core/store.h"

#include <algorithm>
#include <exception>
#include <string>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "hybridshard/core/error.h"

namespace hybridshard::core {
namespace {

using Clock = std::chrono::steady_clock;

std::string join_keys(const std::vector<std::string>& keys) {
  std::string joined;
  for (const std::string& key : keys) {
    if (!joined.empty()) joined += ", ";
    joined += "'" + key + "'";
  }
  return joined;
}

std::vector<std::uint8_t> to_bytes(const std::string& value) { return {value.begin(), value.end()}; }

class C10dStore final : public Store {
 public:
  // `base` is the TCPStore or FileStore itself (it keeps the connection, and with is_server the server, alive);
  // `native` the prefixed view every call goes through.
  C10dStore(StoreOptions options, c10::intrusive_ptr<c10d::Store> native, c10::intrusive_ptr<c10d::Store> base,
            int port)
      : options_(std::move(options)), native_(std::move(native)), base_(std::move(base)), port_(port) {}

  int port() const override { return port_; }
  const StoreOptions& options() const override { return options_; }
  std::string where() const override {
    return options_.file.empty() ? options_.host + ":" + std::to_string(port_) : "file " + options_.file;
  }

  void set(const std::string& key, const std::string& value) override {
    try {
      native_->set(key, to_bytes(value));
    } catch (const std::exception& e) {
      throw_comm("set", key, e);
    }
  }

  std::string get(const std::string& key) override {
    wait({key}, options_.timeout);
    try {
      const std::vector<std::uint8_t> value = native_->get(key);
      return {value.begin(), value.end()};
    } catch (const std::exception& e) {
      throw_comm("get", key, e);
    }
  }

  std::int64_t add(const std::string& key, std::int64_t delta) override {
    try {
      return native_->add(key, delta);
    } catch (const std::exception& e) {
      throw_comm("add", key, e);
    }
  }

  bool check(const std::vector<std::string>& keys) override {
    try {
      return native_->check(keys);
    } catch (const std::exception& e) {
      throw_comm("check", join_keys(keys), e);
    }
  }

  void wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) override {
    const auto start = Clock::now();
    try {
      native_->wait(keys, timeout);
    } catch (const std::exception& e) {
      const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
      // c10d reports a deadline and a lost connection with the same exception type; the time spent tells them apart.
      if (waited + std::chrono::milliseconds(50) >= timeout) {
        throw TimeoutError("store " + where() + ": waited " + std::to_string(waited.count()) + " ms (timeout " +
                               std::to_string(timeout.count()) + " ms) for key(s) " + join_keys(keys) + " under '" +
                               options_.prefix + "/'",
                           __FILE__, __LINE__, "c10d::Store::wait", e.what());
      }
      throw_comm("wait", join_keys(keys), e);
    }
  }

  std::unique_ptr<Store> scoped(const std::string& sub) override {
    if (sub.empty()) HS_THROW(Error, "store " + where() + ": scoped() needs a non-empty name");
    StoreOptions options = options_;
    options.prefix = options_.prefix.empty() ? sub : options_.prefix + "/" + sub;
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>(sub, native_);
    return std::make_unique<C10dStore>(std::move(options), std::move(prefixed), base_, port_);
  }

  void* native_handle() override { return &native_; }

 private:
  [[noreturn]] void throw_comm(const char* operation, const std::string& key, const std::exception& e) const {
    throw CommError("store " + where() + ": " + operation + " of " + key + " under '" + options_.prefix + "/' failed",
                    __FILE__, __LINE__, std::string("c10d::Store::") + operation, e.what());
  }

  StoreOptions options_;
  c10::intrusive_ptr<c10d::Store> native_;  // prefixed view, what every call goes through
  c10::intrusive_ptr<c10d::Store> base_;    // the TCPStore or FileStore
  int port_ = 0;
};

// A FileStore at options.file: no port, no server; every process that opens the path is a member.
std::unique_ptr<Store> open_file_store(const StoreOptions& options) {
  c10::intrusive_ptr<c10d::Store> file;
  try {
    // -1 workers: the store never deletes its file; the directory's owner removes it after the job.
    file = c10::make_intrusive<c10d::FileStore>(options.file, -1);
    file->setTimeout(options.timeout);
  } catch (const std::exception& e) {
    throw CommError("store: cannot open the file store " + options.file, __FILE__, __LINE__, "c10d::FileStore",
                    e.what());
  }
  c10::intrusive_ptr<c10d::Store> native = file;
  if (!options.prefix.empty()) native = c10::make_intrusive<c10d::PrefixStore>(options.prefix, file);
  return std::make_unique<C10dStore>(options, std::move(native), std::move(file), 0);
}

}  // namespace

std::unique_ptr<Store> Store::open(const StoreOptions& options) {
  if (!options.file.empty()) return open_file_store(options);
  if (options.port < 0 || options.port > 65535) {
    HS_THROW(ConfigError, "store: port " + std::to_string(options.port) + " is not in [0, 65535]");
  }
  if (options.port == 0 && !options.is_server) {
    HS_THROW(ConfigError, "store: a client needs the server's port, not 0 (host " + options.host + ")");
  }
  c10d::TCPStoreOptions tcp_options;
  tcp_options.port = static_cast<std::uint16_t>(options.port);
  tcp_options.isServer = options.is_server;
  if (options.world_size > 0) tcp_options.numWorkers = static_cast<std::size_t>(options.world_size);
  tcp_options.waitWorkers = false;  // the host must not block: in tests it is one of the ranks' threads
  // libtorch 1.13 counts the connect deadline in whole seconds (a 300 ms timeout fails at once): round up, at least
  // 1 s. Waits for keys use options.timeout exactly (wait() and get() pass it explicitly).
  const auto whole_seconds = std::chrono::ceil<std::chrono::seconds>(options.timeout);
  tcp_options.timeout = std::max<std::chrono::milliseconds>(whole_seconds, std::chrono::seconds(1));

  c10::intrusive_ptr<c10d::TCPStore> tcp;
  try {
    tcp = c10::make_intrusive<c10d::TCPStore>(options.host, tcp_options);
  } catch (const std::exception& e) {
    throw CommError("store: cannot " + std::string(options.is_server ? "host" : "connect to") + " " + options.host +
                        ":" + std::to_string(options.port) + " within " + std::to_string(options.timeout.count()) +
                        " ms",
                    __FILE__, __LINE__, "c10d::TCPStore", e.what());
  }
  c10::intrusive_ptr<c10d::Store> native = tcp;
  if (!options.prefix.empty()) native = c10::make_intrusive<c10d::PrefixStore>(options.prefix, tcp);
  const int port = static_cast<int>(tcp->getPort());
  return std::make_unique<C10dStore>(options, std::move(native), std::move(tcp), port);
}

}  // namespace hybridshard::core
