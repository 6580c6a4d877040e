// Owns the servables that are serving: loads versions from the repository, publishes
// them by swapping one immutable snapshot under a mutex, and hands readers a
// shared_ptr that keeps their version alive until they are done with it.
#ifndef NORMSERVE_SERVICE_SERVABLE_MANAGER_H_
#define NORMSERVE_SERVICE_SERVABLE_MANAGER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "service/model_repository.h"
#include "service/servable.h"

namespace normserve {

struct ModelStatusInfo {
  std::string name;
  std::vector<int64_t> versions;  // serving, ascending
  std::string last_error;         // empty when the last load of the model succeeded
};

// Told about loads and about what serves; called with no lock a reader can wait on,
// so implementations (metrics, health) must be quick and must not call back.
class ServableObserver {
 public:
  virtual ~ServableObserver() = default;
  virtual void OnLoadResult(const std::string& model, int64_t version,
                            const absl::Status& status) = 0;
  // `versions` empty: the model no longer serves. precisions[i]: what versions[i] runs in.
  virtual void OnServingChanged(const std::string& model, const std::vector<int64_t>& versions,
                                const std::vector<std::string>& precisions) = 0;
};

class ServableManager {
 public:
  // `observer` may be null and must outlive the manager.
  ServableManager(ModelRepository repository, ServableOptions options, ServableObserver* observer);
  ~ServableManager();
  ServableManager(const ServableManager&) = delete;
  ServableManager& operator=(const ServableManager&) = delete;

  // Loads every model in the repository. A model that fails to load is recorded (see
  // List) and does not fail the call; a repository that cannot be listed does.
  absl::Status LoadAll();

  // The servable for `model` at `version` (0: the latest serving). NOT_FOUND names
  // the model, or the version and those that do serve.
  absl::StatusOr<std::shared_ptr<const Servable>> Get(absl::string_view model,
                                                      int64_t version) const;
  // Serving versions of `model`, ascending; NOT_FOUND if none.
  absl::StatusOr<std::vector<int64_t>> Versions(absl::string_view model) const;
  // Every model known: serving ones and those whose last load failed, by name.
  std::vector<ModelStatusInfo> List() const;

  // Loads a repository model that is not serving (FAILED_PRECONDITION if it is).
  absl::StatusOr<ModelStatusInfo> Load(const std::string& model);
  // Stops serving `model` until Load; in-flight requests keep their servable.
  absl::Status Unload(const std::string& model);
  // Rescans `model`, or the whole repository when empty, and publishes the result. A
  // version that fails to load is refused (the call returns its error) while the
  // versions already serving keep serving.
  absl::StatusOr<std::vector<ModelStatusInfo>> Reload(const std::string& model);

  // Rescans the whole repository every `period` on a background thread.
  void StartPolling(absl::Duration period);
  void StopPolling();

 private:
  using VersionMap = std::map<int64_t, std::shared_ptr<const Servable>>;
  // What readers see: replaced whole, never modified after publication.
  struct Snapshot {
    std::map<std::string, VersionMap, std::less<>> models;
    std::map<std::string, std::string, std::less<>> errors;
  };

  std::shared_ptr<const Snapshot> snapshot() const ABSL_LOCKS_EXCLUDED(mu_);
  // Brings one model in line with the disk; returns the first load error, if any.
  absl::Status SyncModel(const std::string& model) ABSL_EXCLUSIVE_LOCKS_REQUIRED(load_mu_);
  void SyncAll() ABSL_EXCLUSIVE_LOCKS_REQUIRED(load_mu_);
  // Publishes `versions` for `model` (empty: removed) and `error` as its last error.
  void Publish(const std::string& model, VersionMap versions, const std::string& error)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(load_mu_);
  ModelStatusInfo StatusOf(const std::string& model) const;
  void PollLoop(absl::Duration period);

  const ModelRepository repository_;
  const ServableOptions options_;
  ServableObserver* const observer_;

  // Serialises loads (API calls and the poller). Held for whole compiles; never taken
  // on the inference path.
  absl::Mutex load_mu_;
  std::set<std::string> unloaded_by_api_ ABSL_GUARDED_BY(load_mu_);
  // Files that failed to load, not retried until their stamp changes.
  std::map<std::string, std::map<int64_t, FileStamp>> failed_ ABSL_GUARDED_BY(load_mu_);

  // Guards only the snapshot pointer: held for a pointer copy or swap.
  mutable absl::Mutex mu_;
  std::shared_ptr<const Snapshot> snapshot_ ABSL_GUARDED_BY(mu_);

  absl::Mutex poll_mu_;
  bool stop_polling_ ABSL_GUARDED_BY(poll_mu_) = false;
  std::thread poller_;
};

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_SERVABLE_MANAGER_H_
