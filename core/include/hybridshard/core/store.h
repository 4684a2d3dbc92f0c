// The rendezvous store, behind a header free of libtorch: libtorch's c10d TCPStore (the store torchrun uses) across
// hosts, where one process hosts it (rank 0 under an external launcher) and every rank connects to host:port; or
// c10d's FileStore for the processes of one host (our launcher, export, bench), where a file in a private directory
// replaces the port: nothing listens, and the directory's permissions decide who may join.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace hybridshard::core {

struct StoreOptions {
  std::string host = "127.0.0.1";
  int port = 29500;  // 0 with is_server: pick a free port, read it back with port()
  bool is_server = false;
  int world_size = -1;  // number of clients expected, or -1 when unknown
  std::chrono::milliseconds timeout{30000};
  std::string prefix = "hybridshard";  // every key lives under "<prefix>/"
  // Non-empty: a c10d FileStore at this path instead of TCP (host, port and is_server are then unused). Every
  // process that opens the same path joins the same store; nothing removes the file (its directory's owner does).
  std::string file;
};

class Store {
 public:
  // Connects (and hosts, with is_server). Throws CommError naming host:port when it cannot within the timeout.
  static std::unique_ptr<Store> open(const StoreOptions& options);
  virtual ~Store() = default;

  virtual int port() const = 0;  // 0 for a file store
  virtual const StoreOptions& options() const = 0;
  // Where the store is, for messages: "HOST:PORT" or "file PATH".
  virtual std::string where() const = 0;

  virtual void set(const std::string& key, const std::string& value) = 0;
  // Waits for the key up to the timeout; throws TimeoutError naming the key.
  virtual std::string get(const std::string& key) = 0;
  virtual std::int64_t add(const std::string& key, std::int64_t delta) = 0;
  virtual bool check(const std::vector<std::string>& keys) = 0;
  virtual void wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) = 0;

  // A view of this store whose keys live under "<prefix>/<sub>/" (one per communicator or subgroup).
  virtual std::unique_ptr<Store> scoped(const std::string& sub) = 0;

  // The c10d::Store behind it (an opaque c10::intrusive_ptr<c10d::Store>*), for the Gloo and NCCL communicators.
  virtual void* native_handle() = 0;
};

}  // namespace hybridshard::core
