// The normserve server: wires repository, manager, scheduler, metrics and the gRPC
// services (normserve.v1, KServe v2, health, reflection) and drains them in order.
#ifndef NORMSERVE_SERVICE_SERVER_H_
#define NORMSERVE_SERVICE_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "service/performance_hint.h"
#include "service/training/training_manager.h"

namespace normserve {

struct ServerOptions {
  std::string host = "0.0.0.0";
  int port = 8001;  // 0: any free port (see Server::port())
  // -1: no metrics endpoint; 0: any free port.
  int metrics_port = 8002;
  std::string model_repository = "models/repository";
  // Follow symlinks in the repository that resolve outside its root (refused by default).
  bool allow_symlinks_outside_repository = false;
  // Most requests running at once (streams); 0: `cores`.
  int workers = 0;
  // Threads all running requests share (the scheduler's budget); 0: the machine's cores.
  int cores = 0;
  // OpenMP threads per execution, fixed for every model; 0: from the performance hint.
  int intra_op_threads = 0;
  // For models whose config.json has no performance_hint.
  PerformanceHint performance_hint = PerformanceHint::kAuto;
  int max_queue = 64;
  int max_message_bytes = 64 << 20;
  bool allow_non_finite = false;
  // Plan cache budget per model version (MiB) and the largest dynamic dim besides the
  // batch; a model's config.json overrides both.
  int64_t plan_cache_mb = 1024;
  int64_t max_dynamic_dim = 4096;
  // Repository rescan period; zero: no polling (ReloadModel only).
  absl::Duration poll_period = absl::ZeroDuration();
  // PEM contents; both empty: plaintext.
  std::string tls_cert_pem;
  std::string tls_key_pem;
  // Longest wait for in-flight requests when draining.
  absl::Duration drain_timeout = absl::Seconds(30);
  // After in-flight requests are done, a drain keeps answering UNAVAILABLE until no
  // request arrived for `drain_quiet_period`, for at most `drain_lame_duck`, before it
  // stops gRPC (see Server::Drain for why).
  absl::Duration drain_quiet_period = absl::Milliseconds(50);
  absl::Duration drain_lame_duck = absl::Seconds(1);

  // Training endpoint (docs/training.md): its own listener, never the serving port.
  // -1: off; 0: any free port (see Server::training_port()).
  int training_port = -1;
  std::string training_host = "127.0.0.1";
  // Accepted bearer token; empty: none (then client certificates must be configured).
  std::string training_token;
  // PEM CA bundle: with tls_cert/tls_key, the training listener requires and verifies
  // client certificates signed by it (mTLS), which authenticate a call on their own.
  std::string training_client_ca_pem;
  TrainingOptions training;
  // Fraction of serving requests fed to the live drift watch (0: off).
  double live_drift_fraction = 0;
};

class Server {
 public:
  // Loads the repository, then listens. Fails on a busy port or an unreadable
  // repository; a model that fails to load does not fail the start (see ListModels).
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServerOptions& options);
  ~Server();

  int port() const;
  int metrics_port() const;
  // 0 when the training endpoint is off.
  int training_port() const;

  // Stops accepting requests, lets in-flight ones finish (up to drain_timeout), stops
  // the workers. Idempotent.
  void Drain();

 private:
  struct State;
  // The training endpoint on its own listener (never registered on the serving port).
  static absl::Status StartTraining(const ServerOptions& options, State* state);
  explicit Server(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_SERVER_H_
