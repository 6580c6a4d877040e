// Serial executor for admin calls.
#include "service/admin_executor.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace normserve {

AdminExecutor::AdminExecutor(int max_pending)
    : max_pending_(max_pending), thread_([this] { Loop(); }) {}

AdminExecutor::~AdminExecutor() { Shutdown(); }

absl::Status AdminExecutor::Submit(std::function<void()> work) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("the server is shutting down");
  if (static_cast<int>(pending_.size()) >= max_pending_) {
    return absl::ResourceExhaustedError(
        absl::StrCat(max_pending_, " admin requests are already waiting; retry later"));
  }
  pending_.push_back(std::move(work));
  return absl::OkStatus();
}

void AdminExecutor::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void AdminExecutor::Loop() {
  while (true) {
    std::function<void()> work;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !pending_.empty() || stopping_;
      };
      mu_.Await(absl::Condition(&ready));
      if (pending_.empty()) return;
      work = std::move(pending_.front());
      pending_.pop_front();
    }
    work();
  }
}

}  // namespace normserve
