#include "detail/host_meeting.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>
#include <random>

#include "detail/polling.h"

namespace hybridshard::core::detail {
namespace {

constexpr std::uint32_t kMagic = 0x48534d31;  // "HSM1"

static_assert(std::atomic<std::uint64_t>::is_always_lock_free && std::atomic<std::int32_t>::is_always_lock_free,
              "the meeting's atomics must work across processes (lock-free, so address-free)");

std::string system_error(const char* call) { return std::string(call) + ": " + std::strerror(errno); }

}  // namespace

struct HostMeeting::Header {
  std::atomic<std::uint32_t> magic;
  std::atomic<std::int32_t> size;
  std::atomic<std::int32_t> abandoned_by;  // -1, or the first rank that gave up
};

// One cache line per rank: a rank writes only its own.
struct alignas(64) HostMeeting::Slot {
  std::atomic<std::uint64_t> arrived;   // the last meeting this rank posted (1, 2, ...)
  std::atomic<std::uint64_t> flags[2];  // [meeting % 2]: its flags
};

namespace {

std::size_t segment_bytes(int size) { return 64 + static_cast<std::size_t>(size) * 64; }

}  // namespace

HostMeeting::HostMeeting(std::string name, void* mapping, std::size_t bytes, int size, bool owner)
    : name_(std::move(name)), mapping_(mapping), bytes_(bytes), size_(size), named_(owner) {}

HostMeeting::~HostMeeting() {
  forget_name();
  munmap(mapping_, bytes_);
}

HostMeeting::Header& HostMeeting::header() const { return *static_cast<Header*>(mapping_); }

HostMeeting::Slot& HostMeeting::slot(int rank) const {
  return static_cast<Slot*>(static_cast<void*>(static_cast<char*>(mapping_) + 64))[rank];
}

std::unique_ptr<HostMeeting> HostMeeting::create(int size, std::string& why) {
  if (size < 1) {
    why = "a meeting needs at least one rank";
    return nullptr;
  }
  std::random_device random;
  const std::uint64_t token = (static_cast<std::uint64_t>(random()) << 32) ^ random();
  char name[64];
  std::snprintf(name, sizeof name, "/hybridshard-%d-%016llx", static_cast<int>(getpid()),
                static_cast<unsigned long long>(token));
  const int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, S_IRUSR | S_IWUSR);
  if (fd < 0) {
    why = system_error("shm_open");
    return nullptr;
  }
  const std::size_t bytes = segment_bytes(size);
  void* mapping = MAP_FAILED;
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    why = system_error("ftruncate");
  } else {
    mapping = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mapping == MAP_FAILED) why = system_error("mmap");
  }
  close(fd);
  if (mapping == MAP_FAILED) {
    shm_unlink(name);
    return nullptr;
  }
  auto* header = new (mapping) Header;
  header->size.store(size, std::memory_order_relaxed);
  header->abandoned_by.store(-1, std::memory_order_relaxed);
  for (int rank = 0; rank < size; ++rank) {
    auto* slot = new (static_cast<char*>(mapping) + 64 + static_cast<std::size_t>(rank) * 64) Slot;
    slot->arrived.store(0, std::memory_order_relaxed);
    slot->flags[0].store(0, std::memory_order_relaxed);
    slot->flags[1].store(0, std::memory_order_relaxed);
  }
  header->magic.store(kMagic, std::memory_order_release);  // written last: a joiner sees a whole segment or none
  return std::unique_ptr<HostMeeting>(new HostMeeting(name, mapping, bytes, size, /*owner=*/true));
}

std::unique_ptr<HostMeeting> HostMeeting::join(const std::string& name, int size, std::string& why) {
  const int fd = shm_open(name.c_str(), O_RDWR, 0);
  if (fd < 0) {
    why = system_error("shm_open") + " (" + name + ")";
    return nullptr;
  }
  const std::size_t bytes = segment_bytes(size);
  struct stat status {};
  void* mapping = MAP_FAILED;
  if (fstat(fd, &status) != 0) {
    why = system_error("fstat");
  } else if (status.st_uid != geteuid() || (status.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    // Only a segment of this user that nobody else can open (as create makes it): another user cannot stand in.
    why = name + " belongs to user " + std::to_string(status.st_uid) + " with mode " +
          std::to_string(status.st_mode & 0777) + ", not to this user alone";
  } else if (static_cast<std::size_t>(status.st_size) != bytes) {
    why = name + " holds " + std::to_string(status.st_size) + " bytes, not the " + std::to_string(bytes) + " of " +
          std::to_string(size) + " ranks";
  } else {
    mapping = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mapping == MAP_FAILED) why = system_error("mmap");
  }
  close(fd);
  if (mapping == MAP_FAILED) return nullptr;
  auto meeting = std::unique_ptr<HostMeeting>(new HostMeeting(name, mapping, bytes, size, /*owner=*/false));
  if (meeting->header().magic.load(std::memory_order_acquire) != kMagic ||
      meeting->header().size.load(std::memory_order_relaxed) != size) {
    why = name + " is not a meeting of " + std::to_string(size) + " ranks";
    return nullptr;
  }
  return meeting;
}

void HostMeeting::forget_name() {
  if (!named_) return;
  named_ = false;
  shm_unlink(name_.c_str());
}

HostMeeting::Outcome HostMeeting::meet(int rank, std::uint64_t flags, Clock::time_point deadline,
                                       const std::function<bool()>& aborted) {
  Outcome outcome;
  const std::uint64_t meeting = ++meetings_;
  Slot& mine = slot(rank);
  mine.flags[meeting % 2].store(flags, std::memory_order_relaxed);
  mine.arrived.store(meeting, std::memory_order_release);
  const Clock::time_point start = Clock::now();
  int waiting_from = 0;  // the ranks before it have arrived
  for (;;) {
    while (waiting_from < size_ && slot(waiting_from).arrived.load(std::memory_order_acquire) >= meeting) {
      ++waiting_from;
    }
    if (waiting_from == size_) break;
    const int abandoned_by = header().abandoned_by.load(std::memory_order_acquire);
    if (abandoned_by >= 0) {
      outcome.state = Outcome::State::kAbandoned;
      outcome.abandoned_by = abandoned_by;
      return outcome;
    }
    if (aborted && aborted()) {
      outcome.state = Outcome::State::kAborted;
      return outcome;
    }
    const Clock::time_point now = Clock::now();
    if (now >= deadline) {
      outcome.state = Outcome::State::kTimedOut;
      for (int other = waiting_from; other < size_; ++other) {
        if (slot(other).arrived.load(std::memory_order_acquire) < meeting) outcome.missing.push_back(other);
      }
      return outcome;
    }
    // The first millisecond only yields: ranks that arrive together meet in microseconds, and the closing barrier's
    // wait for a slower rank's landing is often a few hundred. Longer waits (a rank still training, a rank gone) sleep.
    pause_between_checks(now, start, std::chrono::milliseconds(1));
  }
  for (int other = 0; other < size_; ++other) {
    outcome.flags |= slot(other).flags[meeting % 2].load(std::memory_order_relaxed);
  }
  return outcome;
}

void HostMeeting::abandon(int rank) {
  int expected = -1;
  header().abandoned_by.compare_exchange_strong(expected, rank, std::memory_order_acq_rel);
}

}  // namespace hybridshard::core::detail
