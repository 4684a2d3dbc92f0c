#include "view_lease.h"

namespace hybridshard::python {

ViewLease::ViewLease(std::shared_ptr<void> owner, std::vector<std::string> names)
    : owner_(std::move(owner)), names_(std::move(names)), counts_(new std::atomic<long>[names_.size()]) {
  for (std::size_t i = 0; i < names_.size(); ++i) counts_[i] = 0;
}

void ViewLease::acquire(std::size_t tensor) { counts_[tensor].fetch_add(1); }

void ViewLease::release(std::size_t tensor) { counts_[tensor].fetch_sub(1); }

std::size_t ViewLease::live_count() const {
  std::size_t live = 0;
  for (std::size_t i = 0; i < names_.size(); ++i) live += static_cast<std::size_t>(counts_[i].load());
  return live;
}

std::vector<std::string> ViewLease::live() const {
  std::vector<std::string> result;
  for (std::size_t i = 0; i < names_.size(); ++i) {
    if (counts_[i].load() > 0) result.push_back(names_[i]);
  }
  return result;
}

}  // namespace hybridshard::python
