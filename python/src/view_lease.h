// Who still looks at a flat buffer from Python: one lease per buffer generation (the train buffers for the engine's
// life, the inference buffer from one enter() to its exit()). Every torch tensor handed out holds the lease through
// its DLPack deleter, and the lease holds the memory's owner, so a view never outlives what it points at. exit()
// refuses to free a buffer whose lease still has live views, and says which.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace hybridshard::python {

class ViewLease {
 public:
  // `owner` keeps the memory alive; `names` are the tensors views can be made of (a view names one by index).
  ViewLease(std::shared_ptr<void> owner, std::vector<std::string> names);

  const std::vector<std::string>& names() const { return names_; }
  void acquire(std::size_t tensor);
  void release(std::size_t tensor);  // any thread, without the GIL (a DLPack deleter)

  std::size_t live_count() const;         // views handed out and not yet released
  std::vector<std::string> live() const;  // the names of the tensors they view, once each

 private:
  std::shared_ptr<void> owner_;
  std::vector<std::string> names_;
  std::unique_ptr<std::atomic<long>[]> counts_;
};

}  // namespace hybridshard::python
