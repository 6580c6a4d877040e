// Server assembly, start order and drain order.
#include "service/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <algorithm>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "grpc/health/v1/health.pb.h"
#include "service/admin_executor.h"
#include "service/inference_scheduler.h"
#include "service/inference_service.h"
#include "service/kserve_service.h"
#include "service/log.h"
#include "service/metrics.h"
#include "service/plan_cache_metrics.h"
#include "service/predictor.h"
#include "service/servable_manager.h"
#include "service/stream_metrics.h"
#include "service/training/bearer_auth.h"
#include "service/training/live_drift_watch.h"
#include "service/training/training_manager.h"
#include "service/training/training_metrics.h"
#include "service/training/training_service.h"

#ifndef NORMSERVE_VERSION
#define NORMSERVE_VERSION "0.0.0"
#endif

namespace normserve {
namespace {

constexpr char kNormserveService[] = "normserve.v1.InferenceService";
constexpr char kKServeService[] = "inference.GRPCInferenceService";
// The training endpoint's sync handlers block on compute and fsync: a bounded pool.
constexpr int kTrainingThreads = 32;

// Mirrors what serves into metrics and into per-model health (service name = model).
class ServingObserver : public ServableObserver {
 public:
  explicit ServingObserver(Metrics* metrics) : metrics_(metrics) {}

  void SetHealth(grpc::HealthCheckServiceInterface* health) {
    absl::MutexLock lock(&mu_);
    health_ = health;
  }

  void OnLoadResult(const std::string& model, int64_t version,
                    const absl::Status& status) override {
    metrics_->ModelLoad(status.ok());
  }

  void OnServingChanged(const std::string& model, const std::vector<int64_t>& versions,
                        const std::vector<std::string>& precisions) override {
    metrics_->SetModelVersions(model, versions, precisions);
    absl::MutexLock lock(&mu_);
    if (health_ != nullptr) health_->SetServingStatus(model, !versions.empty());
  }

 private:
  Metrics* const metrics_;
  absl::Mutex mu_;
  grpc::HealthCheckServiceInterface* health_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace

struct Server::State {
  // The plan-cache collector reads `manager`: no scrape may run while members go away.
  ~State() { metrics.StopExposer(); }

  ServerOptions options;
  Metrics metrics;
  ServingObserver observer{&metrics};
  std::unique_ptr<ServableManager> manager;
  std::unique_ptr<InferenceScheduler> scheduler;
  // Before the predictor that feeds them: destroyed after it.
  std::unique_ptr<TrainingMetrics> training_metrics;
  std::unique_ptr<LiveDriftWatch> live_drift;
  std::unique_ptr<Predictor> predictor;
  std::unique_ptr<AdminExecutor> admin;
  std::unique_ptr<InferenceServiceImpl> normserve_service;
  std::unique_ptr<KServeServiceImpl> kserve_service;
  std::unique_ptr<TrainingManager> training;
  std::unique_ptr<BearerAuth> training_auth;
  std::unique_ptr<TrainingServiceImpl> training_service;
  // Declared last: destroyed first, before the services they dispatch to.
  std::unique_ptr<grpc::Server> training_server;
  std::unique_ptr<grpc::Server> grpc_server;
  int port = 0;
  int training_port = 0;
  bool drained = false;
};

Server::Server(std::unique_ptr<State> state) : state_(std::move(state)) {}

Server::~Server() { Drain(); }

int Server::port() const { return state_->port; }
int Server::metrics_port() const { return state_->metrics.port(); }
int Server::training_port() const { return state_->training_port; }

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerOptions& options) {
  auto state = std::make_unique<State>();
  state->options = options;

  if (options.metrics_port >= 0) {
    absl::Status s =
        state->metrics.StartExposer(absl::StrCat(options.host, ":", options.metrics_port));
    if (!s.ok()) return s;
  }

  InferenceScheduler::Options sched;
  sched.cores = options.cores;
  sched.workers = options.workers;
  sched.max_queue = options.max_queue;
  // Started before the models load (it is idle until Predict is served): servables size
  // their stream variants and context pools from its resolved budget.
  state->scheduler = std::make_unique<InferenceScheduler>(sched);
  const int cores = state->scheduler->cores();
  const int workers = state->scheduler->workers();
  ServableOptions servable;
  servable.cores = cores;
  servable.max_streams = workers;
  servable.performance_hint = options.performance_hint;
  servable.intra_op_threads = options.intra_op_threads;
  // Only when threads are left to us: an explicit --intra_op_threads is obeyed.
  if (options.intra_op_threads == 0) servable.single_thread_below_flops = 50e6;
  servable.allow_non_finite = options.allow_non_finite;
  servable.plan_cache_mb = options.plan_cache_mb;
  servable.max_dynamic_dim = options.max_dynamic_dim;
  RepositoryOptions repository;
  repository.allow_symlinks_outside = options.allow_symlinks_outside_repository;
  state->manager = std::make_unique<ServableManager>(
      ModelRepository(options.model_repository, repository), servable, &state->observer);
  state->metrics.AddCollectable(std::make_shared<PlanCacheMetrics>(state->manager.get()));
  state->metrics.AddCollectable(
      std::make_shared<StreamMetrics>(state->manager.get(), state->scheduler.get()));
  if (absl::Status s = state->manager->LoadAll(); !s.ok()) return s;
  state->training_metrics = std::make_unique<TrainingMetrics>(state->metrics.registry());
  if (options.live_drift_fraction > 0) {
    LiveDriftOptions live;
    live.fraction = options.live_drift_fraction;
    state->live_drift = std::make_unique<LiveDriftWatch>(live, state->training_metrics.get());
  }
  state->predictor = std::make_unique<Predictor>(state->manager.get(), state->scheduler.get(),
                                                 &state->metrics, state->live_drift.get());
  state->admin = std::make_unique<AdminExecutor>();
  state->normserve_service = std::make_unique<InferenceServiceImpl>(
      state->predictor.get(), state->manager.get(), state->admin.get());
  state->kserve_service = std::make_unique<KServeServiceImpl>(
      state->predictor.get(), state->manager.get(), NORMSERVE_VERSION);

  // Registers grpc.health.v1 in the generated descriptor pool (gRPC's built-in health
  // service is upb-based), so reflection can describe the health service too.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  std::shared_ptr<grpc::ServerCredentials> credentials;
  if (!options.tls_cert_pem.empty()) {
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({options.tls_key_pem, options.tls_cert_pem});
    credentials = grpc::SslServerCredentials(ssl);
  } else {
    credentials = grpc::InsecureServerCredentials();
  }
  // Training first (it recovers its sessions before listening): once serving reports
  // ready, the training endpoint is up too.
  if (options.training_port >= 0) {
    if (absl::Status s = StartTraining(options, state.get()); !s.ok()) {
      state->scheduler->Shutdown();
      return s;
    }
  }
  grpc::ServerBuilder builder;
  const std::string address = absl::StrCat(options.host, ":", options.port);
  builder.AddListeningPort(address, credentials, &state->port);
  // gRPC sets SO_REUSEPORT by default: a second server on a busy port would start and
  // silently take half the connections. Refuse instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.RegisterService(state->normserve_service.get());
  builder.RegisterService(state->kserve_service.get());
  state->grpc_server = builder.BuildAndStart();
  if (state->grpc_server == nullptr || state->port == 0) {
    if (state->training_server != nullptr) state->training_server->Shutdown();
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", address, " (port in use or address invalid)"));
  }

  grpc::HealthCheckServiceInterface* health = state->grpc_server->GetHealthCheckService();
  health->SetServingStatus(kNormserveService, true);
  health->SetServingStatus(kKServeService, true);
  std::vector<std::string> serving;
  for (const ModelStatusInfo& info : state->manager->List()) {
    health->SetServingStatus(info.name, !info.versions.empty());
    if (!info.versions.empty()) {
      serving.push_back(absl::StrCat(info.name, " v", absl::StrJoin(info.versions, ",v")));
    }
  }
  state->observer.SetHealth(health);
  if (options.poll_period > absl::ZeroDuration()) {
    state->manager->StartPolling(options.poll_period);
  }
  Log(LogLevel::kInfo,
      absl::StrCat(
          "listening on ", options.host, ":", state->port, " (", cores, " cores, up to ", workers,
          " streams, ",
          options.intra_op_threads > 0
              ? absl::StrCat(options.intra_op_threads, " intra-op threads each")
              : absl::StrCat("performance hint ", PerformanceHintName(options.performance_hint)),
          ", queue ", options.max_queue, "); metrics port ", state->metrics.port(),
          "; serving: ", serving.empty() ? std::string("nothing") : absl::StrJoin(serving, "; ")));
  return std::unique_ptr<Server>(new Server(std::move(state)));
}

void Server::Drain() {
  State& s = *state_;
  if (s.drained) return;
  s.drained = true;
  Log(LogLevel::kInfo, "draining: refusing new requests, finishing in-flight ones");
  // 1. New inference is refused and health says NOT_SERVING, so balancers move away.
  s.predictor->StartDraining();
  s.observer.SetHealth(nullptr);
  s.grpc_server->GetHealthCheckService()->Shutdown();
  // 2. No reload may start while we stop; admin calls already queued finish.
  s.manager->StopPolling();
  s.admin->Shutdown();
  // 3. In-flight inference finishes (the workers keep running), up to the drain timeout.
  //    We wait on our own count rather than in grpc::Server::Shutdown: gRPC's shutdown
  //    also waits for idle client connections to close, which can take seconds.
  const absl::Time give_up = absl::Now() + s.options.drain_timeout;
  while (s.predictor->inflight() > 0 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(2));
  }
  if (s.predictor->inflight() > 0) {
    Log(LogLevel::kWarning, absl::StrCat("drain timeout: cancelling ", s.predictor->inflight(),
                                         " requests still in flight"));
  }
  // 4. Lame duck: keep answering UNAVAILABLE until the clients have stopped calling.
  //    gRPC 1.51 ends a call that arrives once Shutdown() has begun, or that is still
  //    waiting to be matched to a handler, with CANCELLED rather than UNAVAILABLE
  //    (grpc/grpc#41785: the core "zombifies" it), which a client must not retry. A
  //    client that backs off on UNAVAILABLE has gone quiet before we shut down.
  const absl::Time lame_duck_end = std::min(give_up, absl::Now() + s.options.drain_lame_duck);
  while (absl::Now() - s.predictor->last_arrival() < s.options.drain_quiet_period &&
         absl::Now() < lame_duck_end) {
    absl::SleepFor(absl::Milliseconds(2));
  }
  // 5. Stop gRPC; the short grace lets replies already handed over reach the wire. The
  //    training listener first: a commit in progress finishes (it publishes whole).
  if (s.training_server != nullptr) {
    s.training_server->Shutdown(absl::ToChronoTime(absl::Now() + s.options.drain_timeout));
    s.training_server->Wait();
  }
  s.grpc_server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Milliseconds(200)));
  s.scheduler->Shutdown();
  s.grpc_server->Wait();
  Log(LogLevel::kInfo, "drained");
}

absl::Status Server::StartTraining(const ServerOptions& options, State* state) {
  const bool client_certs = !options.training_client_ca_pem.empty();
  if (options.training_token.empty() && !client_certs) {
    return absl::InvalidArgumentError(
        "the training endpoint needs a bearer token or client certificates (mTLS)");
  }
  // Accumulate's passes share serving's queue and core budget.
  TrainingOptions training = options.training;
  training.scheduler = state->scheduler.get();
  training.servable.cores = state->scheduler->cores();
  training.servable.max_streams = state->scheduler->workers();
  state->training = std::make_unique<TrainingManager>(
      training, options.model_repository, state->manager.get(), state->training_metrics.get());
  if (absl::Status s = state->training->Recover(); !s.ok()) return s;
  state->training_auth = std::make_unique<BearerAuth>(options.training_token, client_certs);
  state->training_service =
      std::make_unique<TrainingServiceImpl>(state->training.get(), state->training_auth.get());
  std::shared_ptr<grpc::ServerCredentials> credentials;
  if (!options.tls_cert_pem.empty()) {
    grpc::SslServerCredentialsOptions ssl(
        client_certs ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                     : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
    ssl.pem_key_cert_pairs.push_back({options.tls_key_pem, options.tls_cert_pem});
    if (client_certs) ssl.pem_root_certs = options.training_client_ca_pem;
    credentials = grpc::SslServerCredentials(ssl);
  } else {
    credentials = grpc::InsecureServerCredentials();
  }
  grpc::ServerBuilder builder;
  const std::string address = absl::StrCat(options.training_host, ":", options.training_port);
  builder.AddListeningPort(address, credentials, &state->training_port);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  grpc::ResourceQuota quota("normserve_training");
  quota.SetMaxThreads(kTrainingThreads);
  builder.SetResourceQuota(quota);
  // gRPC's default keeps at most 2 idle pollers: with 8 clients blocked in Accumulate,
  // 6 threads exit after every answer and are created again for the next request (2,146
  // thread creations in 2 s on tiny_bn; keeping them took Accumulate from about 5k to 7k
  // req/s). Keep the whole bounded pool instead; idle pollers wake once a second.
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, kTrainingThreads);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::CQ_TIMEOUT_MSEC, 1000);
  builder.RegisterService(state->training_service.get());
  state->training_server = builder.BuildAndStart();
  if (state->training_server == nullptr || state->training_port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen for training on ", address,
                                               " (port in use or address invalid)"));
  }
  Log(LogLevel::kInfo,
      absl::StrCat("training endpoint on ", options.training_host, ":", state->training_port, " (",
                   client_certs ? "client certificates" : "",
                   client_certs && !options.training_token.empty() ? " or " : "",
                   options.training_token.empty() ? "" : "bearer token", "); state in ",
                   options.training.state_dir));
  return absl::OkStatus();
}

}  // namespace normserve
