// normserve: the gRPC inference server binary. Flags live here only; they fill
// ServerOptions, are checked before anything starts, and SIGTERM/SIGINT drain the server.
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "service/server.h"

ABSL_FLAG(std::string, host, "0.0.0.0", "Address the gRPC and metrics endpoints bind to.");
ABSL_FLAG(int, port, 8001, "gRPC port (0: any free port).");
ABSL_FLAG(int, metrics_port, 8002, "Prometheus /metrics HTTP port (0: any free port, -1: off).");
ABSL_FLAG(std::string, model_repository, "models/repository",
          "Directory of <model>/<version>/model.onnx (and optional <model>/config.json).");
ABSL_FLAG(bool, allow_symlinks_outside_repository, false,
          "Follow symlinks in the model repository that resolve outside it (symlinks that stay "
          "inside, as Kubernetes ConfigMaps use, are always followed).");
ABSL_FLAG(int, intra_op_threads, 0,
          "OpenMP threads per execution for every model (0: from the performance hint).");
ABSL_FLAG(int, workers, 0, "Most inference requests running at once, i.e. streams (0: --cores).");
ABSL_FLAG(int, cores, 0,
          "Threads all running inference requests share; never exceeded (0: the machine's cores).");
ABSL_FLAG(std::string, performance_hint, "auto",
          "How requests share the cores, for models whose config.json sets none: latency (each "
          "request gets every core), throughput (one thread a request, as many at once as "
          "cores) or auto (streams follow the queue depth).");
ABSL_FLAG(int, max_queue, 64,
          "Requests waiting for a worker beyond which new ones get RESOURCE_EXHAUSTED.");
ABSL_FLAG(int64_t, max_message_bytes, 64 << 20, "Largest gRPC message received or sent.");
ABSL_FLAG(bool, allow_non_finite, false, "Accept NaN/Inf input values (refused by default).");
ABSL_FLAG(int64_t, plan_cache_mb, 1024,
          "MiB of compiled plans kept per model version for input shapes not compiled at load "
          "(least recently used evicted; config.json plan_cache_mb overrides).");
ABSL_FLAG(int64_t, max_dynamic_dim, 4096,
          "Largest value a dynamic input dim other than the batch may take (config.json "
          "max_dynamic_dim overrides).");
ABSL_FLAG(int, poll_seconds, 0, "Rescan the repository every N seconds (0: only on ReloadModel).");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain; with --tls_key enables TLS.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key; with --tls_cert enables TLS.");
ABSL_FLAG(int, drain_seconds, 30, "Longest wait for in-flight requests on SIGTERM.");
ABSL_FLAG(int, training_port, 8003,
          "Training endpoint port, its own listener (0: any free port, -1: off). Needs "
          "--training_token_file, NORMSERVE_TRAINING_TOKEN or --training_client_ca; left at its "
          "default without any of them, the endpoint stays off (logged).");
ABSL_FLAG(std::string, training_host, "127.0.0.1", "Address the training endpoint binds to.");
ABSL_FLAG(std::string, training_token_file, "",
          "File holding the training bearer token (else env NORMSERVE_TRAINING_TOKEN).");
ABSL_FLAG(std::string, training_client_ca, "",
          "PEM CA bundle; with --tls_cert/--tls_key the training endpoint requires client "
          "certificates signed by it (mTLS).");
ABSL_FLAG(std::string, training_state_dir, "state/training",
          "Directory of the training sessions' durable state (manifests and sample logs).");
ABSL_FLAG(int64_t, training_min_values_per_channel, 64,
          "Quality gate default: least values per channel every BN layer needs.");
ABSL_FLAG(double, training_max_relative_sem, 0.1,
          "Quality gate default: largest relative standard error of the mean per BN layer.");
ABSL_FLAG(int64_t, training_max_samples, 4096,
          "Default and largest number of samples a session keeps for its exact commit.");
ABSL_FLAG(int, training_max_sessions, 16, "Most training sessions open at once.");
ABSL_FLAG(int, training_keep_versions, 5,
          "Published versions kept per model besides those serving or a session is based on; "
          "older ones are pruned after each commit or rollback.");
ABSL_FLAG(int64_t, training_commit_cache_mb, 512,
          "MiB of activations a commit keeps between its layer-wise waves (all samples, "
          "float32; peak up to twice this). 0: replay every wave from the input (slow).");
ABSL_FLAG(double, training_int8_min_top1_agreement, 0.98,
          "int8 commit gate: least fraction of held-out samples whose int8 top-1 class is "
          "fp32's.");
ABSL_FLAG(double, training_int8_max_relative_logit_error, 0.25,
          "int8 commit gate: largest max|int8 - fp32| / max|fp32| of a held-out output row.");
ABSL_FLAG(int64_t, training_int8_calibration_requests, 256,
          "int8 commit: most kept requests the activation scales are computed from, evenly "
          "spaced (the calibration holds all their activations at once).");
ABSL_FLAG(double, live_drift_fraction, 0,
          "Fraction of serving requests fed to the live drift watch (0: off).");

namespace {

// Self-pipe: the handler may run on any thread (civetweb's threads reset their signal
// mask, so blocking SIGTERM for sigwait() is not reliable); it only writes one byte,
// which is async-signal-safe, and main() does the draining.
int g_signal_pipe[2] = {-1, -1};

// Whether --training_port was given explicitly (Debian's Abseil keeps
// IsSpecifiedOnCommandLine private): an explicit port without credentials is an error,
// the default one just leaves the endpoint off.
bool g_training_port_given = false;

void OnTerminate(int) {
  const char byte = 1;
  [[maybe_unused]] ssize_t n = ::write(g_signal_pipe[1], &byte, 1);
}

absl::StatusOr<std::string> ReadFile(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("--", flag, "=", path, ": cannot read"));
  std::stringstream s;
  s << in.rdbuf();
  if (s.str().empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, "=", path, ": file is empty"));
  }
  return s.str();
}

void Check(bool ok, const std::string& message, std::vector<std::string>* errors) {
  if (!ok) errors->push_back(message);
}

void TrainingFromFlags(bool plaintext, normserve::ServerOptions* o,
                       std::vector<std::string>* errors) {
  o->training_port = absl::GetFlag(FLAGS_training_port);
  o->training_host = absl::GetFlag(FLAGS_training_host);
  normserve::TrainingOptions& t = o->training;
  t.state_dir = absl::GetFlag(FLAGS_training_state_dir);
  t.min_values_per_channel = absl::GetFlag(FLAGS_training_min_values_per_channel);
  t.max_relative_sem = absl::GetFlag(FLAGS_training_max_relative_sem);
  t.max_samples = absl::GetFlag(FLAGS_training_max_samples);
  t.max_sessions = absl::GetFlag(FLAGS_training_max_sessions);
  t.keep_versions = absl::GetFlag(FLAGS_training_keep_versions);
  const int64_t cache_mb = absl::GetFlag(FLAGS_training_commit_cache_mb);
  Check(cache_mb >= 0 && cache_mb <= (int64_t{1} << 30),
        absl::StrCat("--training_commit_cache_mb=", cache_mb, " is outside [0, 2^30]"), errors);
  t.commit_cache_bytes = std::clamp<int64_t>(cache_mb, 0, int64_t{1} << 30) << 20;
  t.int8_gate.min_top1_agreement = absl::GetFlag(FLAGS_training_int8_min_top1_agreement);
  t.int8_gate.max_relative_logit_error =
      absl::GetFlag(FLAGS_training_int8_max_relative_logit_error);
  t.int8_gate.max_calibration_requests = absl::GetFlag(FLAGS_training_int8_calibration_requests);
  Check(t.int8_gate.max_calibration_requests >= 1,
        absl::StrCat("--training_int8_calibration_requests=", t.int8_gate.max_calibration_requests,
                     " must be >= 1"),
        errors);
  Check(t.int8_gate.min_top1_agreement >= 0 && t.int8_gate.min_top1_agreement <= 1,
        absl::StrCat("--training_int8_min_top1_agreement=", t.int8_gate.min_top1_agreement,
                     " is outside [0, 1]"),
        errors);
  Check(t.int8_gate.max_relative_logit_error >= 0 &&
            std::isfinite(t.int8_gate.max_relative_logit_error),
        absl::StrCat("--training_int8_max_relative_logit_error=",
                     t.int8_gate.max_relative_logit_error, " must be finite and >= 0"),
        errors);
  const double live = absl::GetFlag(FLAGS_live_drift_fraction);
  o->live_drift_fraction = live;
  Check(o->training_port >= -1 && o->training_port <= 65535,
        absl::StrCat("--training_port=", o->training_port, " is outside [-1, 65535]"), errors);
  Check(
      o->training_port <= 0 || (o->training_port != o->port && o->training_port != o->metrics_port),
      absl::StrCat("--training_port=", o->training_port, " is also the serving or metrics port"),
      errors);
  Check(!o->training_host.empty(), "--training_host must not be empty", errors);
  Check(!t.state_dir.empty(), "--training_state_dir must not be empty", errors);
  Check(
      t.min_values_per_channel >= 1,
      absl::StrCat("--training_min_values_per_channel=", t.min_values_per_channel, " must be >= 1"),
      errors);
  Check(t.max_relative_sem > 0 && std::isfinite(t.max_relative_sem),
        absl::StrCat("--training_max_relative_sem=", t.max_relative_sem, " must be > 0"), errors);
  Check(t.max_samples >= 1, absl::StrCat("--training_max_samples=", t.max_samples, " must be >= 1"),
        errors);
  Check(t.max_sessions >= 1,
        absl::StrCat("--training_max_sessions=", t.max_sessions, " must be >= 1"), errors);
  Check(t.keep_versions >= 1 && t.keep_versions <= 1000000,
        absl::StrCat("--training_keep_versions=", t.keep_versions, " is outside [1, 1000000]"),
        errors);
  Check(live >= 0 && live <= 1, absl::StrCat("--live_drift_fraction=", live, " is outside [0, 1]"),
        errors);
  if (o->training_port < 0) return;

  const std::string token_file = absl::GetFlag(FLAGS_training_token_file);
  if (!token_file.empty()) {
    absl::StatusOr<std::string> token = ReadFile("training_token_file", token_file);
    if (!token.ok()) {
      errors->push_back(std::string(token.status().message()));
    } else {
      o->training_token = std::string(absl::StripAsciiWhitespace(*token));
      Check(!o->training_token.empty(),
            absl::StrCat("--training_token_file=", token_file, ": the token is empty"), errors);
    }
  } else if (const char* env = std::getenv("NORMSERVE_TRAINING_TOKEN"); env != nullptr) {
    o->training_token = std::string(absl::StripAsciiWhitespace(env));
    Check(!o->training_token.empty(), "NORMSERVE_TRAINING_TOKEN is set but empty", errors);
  }
  const std::string ca = absl::GetFlag(FLAGS_training_client_ca);
  if (!ca.empty()) {
    if (plaintext) {
      errors->push_back("--training_client_ca needs --tls_cert and --tls_key");
    } else {
      absl::StatusOr<std::string> pem = ReadFile("training_client_ca", ca);
      if (!pem.ok()) errors->push_back(std::string(pem.status().message()));
      if (pem.ok()) o->training_client_ca_pem = *pem;
    }
  }
  if (o->training_token.empty() && o->training_client_ca_pem.empty() && errors->empty()) {
    if (g_training_port_given) {
      errors->push_back(absl::StrCat(
          "--training_port=", o->training_port,
          " needs --training_token_file, NORMSERVE_TRAINING_TOKEN or --training_client_ca"));
    } else {
      // The default port without credentials: the endpoint stays off rather than open.
      std::fprintf(stderr,
                   "normserve: training endpoint off (no --training_token_file, "
                   "NORMSERVE_TRAINING_TOKEN or --training_client_ca)\n");
      o->training_port = -1;
    }
  }
}

// Every flag problem at once, so a misconfigured deployment is fixed in one round.
absl::StatusOr<normserve::ServerOptions> OptionsFromFlags() {
  normserve::ServerOptions o;
  std::vector<std::string> errors;
  o.host = absl::GetFlag(FLAGS_host);
  o.port = absl::GetFlag(FLAGS_port);
  o.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  o.model_repository = absl::GetFlag(FLAGS_model_repository);
  o.allow_symlinks_outside_repository = absl::GetFlag(FLAGS_allow_symlinks_outside_repository);
  o.intra_op_threads = absl::GetFlag(FLAGS_intra_op_threads);
  o.workers = absl::GetFlag(FLAGS_workers);
  o.cores = absl::GetFlag(FLAGS_cores);
  absl::StatusOr<normserve::PerformanceHint> hint =
      normserve::ParsePerformanceHint(absl::GetFlag(FLAGS_performance_hint), "--performance_hint");
  Check(hint.ok(), std::string(hint.status().message()), &errors);
  if (hint.ok()) o.performance_hint = *hint;
  o.max_queue = absl::GetFlag(FLAGS_max_queue);
  const int64_t max_message = absl::GetFlag(FLAGS_max_message_bytes);
  o.allow_non_finite = absl::GetFlag(FLAGS_allow_non_finite);
  o.plan_cache_mb = absl::GetFlag(FLAGS_plan_cache_mb);
  o.max_dynamic_dim = absl::GetFlag(FLAGS_max_dynamic_dim);
  const int poll = absl::GetFlag(FLAGS_poll_seconds);
  const int drain = absl::GetFlag(FLAGS_drain_seconds);
  const std::string cert = absl::GetFlag(FLAGS_tls_cert);
  const std::string key = absl::GetFlag(FLAGS_tls_key);

  Check(!o.host.empty(), "--host must not be empty", &errors);
  Check(o.port >= 0 && o.port <= 65535, absl::StrCat("--port=", o.port, " is outside [0, 65535]"),
        &errors);
  Check(o.metrics_port >= -1 && o.metrics_port <= 65535,
        absl::StrCat("--metrics_port=", o.metrics_port, " is outside [-1, 65535]"), &errors);
  Check(o.port == 0 || o.port != o.metrics_port,
        absl::StrCat("--port and --metrics_port are both ", o.port), &errors);
  Check(!o.model_repository.empty(), "--model_repository must not be empty", &errors);
  Check(o.plan_cache_mb >= 0 && o.plan_cache_mb <= (int64_t{1} << 30),
        absl::StrCat("--plan_cache_mb=", o.plan_cache_mb, " is outside [0, 2^30]"), &errors);
  Check(o.max_dynamic_dim >= 1 && o.max_dynamic_dim <= (int64_t{1} << 20),
        absl::StrCat("--max_dynamic_dim=", o.max_dynamic_dim, " is outside [1, 2^20]"), &errors);
  Check(o.workers >= 0 && o.workers <= 256,
        absl::StrCat("--workers=", o.workers, " is outside [0, 256]"), &errors);
  Check(o.cores >= 0 && o.cores <= 1024, absl::StrCat("--cores=", o.cores, " is outside [0, 1024]"),
        &errors);
  Check(o.intra_op_threads >= 0 && o.intra_op_threads <= 1024,
        absl::StrCat("--intra_op_threads=", o.intra_op_threads, " is outside [0, 1024]"), &errors);
  Check(o.max_queue >= 1, absl::StrCat("--max_queue=", o.max_queue, " must be >= 1"), &errors);
  Check(max_message >= 1024 && max_message <= INT_MAX,
        absl::StrCat("--max_message_bytes=", max_message, " is outside [1024, ", INT_MAX, "]"),
        &errors);
  o.max_message_bytes = static_cast<int>(std::min<int64_t>(max_message, INT_MAX));
  Check(poll >= 0, absl::StrCat("--poll_seconds=", poll, " must be >= 0"), &errors);
  o.poll_period = absl::Seconds(poll);
  Check(drain >= 0, absl::StrCat("--drain_seconds=", drain, " must be >= 0"), &errors);
  o.drain_timeout = absl::Seconds(drain);
  if (cert.empty() != key.empty()) {
    errors.push_back("--tls_cert and --tls_key go together: give both or neither");
  } else if (!cert.empty()) {
    absl::StatusOr<std::string> c = ReadFile("tls_cert", cert);
    absl::StatusOr<std::string> k = ReadFile("tls_key", key);
    if (!c.ok()) errors.push_back(std::string(c.status().message()));
    if (!k.ok()) errors.push_back(std::string(k.status().message()));
    if (c.ok() && k.ok()) {
      o.tls_cert_pem = *c;
      o.tls_key_pem = *k;
    }
  }
  TrainingFromFlags(o.tls_cert_pem.empty(), &o, &errors);
  if (!errors.empty()) return absl::InvalidArgumentError(absl::StrJoin(errors, "\n  "));
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("normserve --model_repository=DIR [--port=8001] ...");
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--training_port", 0) == 0 || arg.rfind("-training_port", 0) == 0) {
      g_training_port_given = true;
    }
  }
  absl::ParseCommandLine(argc, argv);
#ifdef NDEBUG
  // Debian builds Abseil without NDEBUG, which leaves Mutex deadlock detection on: a
  // global graph updated on every nested lock and every Mutex destruction (1.3 to 1.7 %
  // of the server's profile under Accumulate load). Abseil's own optimized builds turn it
  // off; so does ours. Debug builds and the unit tests keep it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
  absl::StatusOr<normserve::ServerOptions> options = OptionsFromFlags();
  if (!options.ok()) {
    std::fprintf(stderr, "normserve: invalid flags:\n  %s\n",
                 std::string(options.status().message()).c_str());
    return 2;
  }

  // Installed before the server starts, so a SIGTERM during model loading drains too.
  if (::pipe(g_signal_pipe) != 0) {
    std::perror("normserve: pipe");
    return 1;
  }
  struct sigaction action = {};
  action.sa_handler = OnTerminate;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);

  absl::StatusOr<std::unique_ptr<normserve::Server>> server = normserve::Server::Start(*options);
  if (!server.ok()) {
    std::fprintf(stderr, "normserve: cannot start: %s\n",
                 std::string(server.status().message()).c_str());
    return 1;
  }
  // poll() before read(): ThreadSanitizer runs a signal handler only when the thread it
  // hit is in a call it treats as blocking; a read() on a pipe is not one, so under TSan
  // the SIGTERM waited there forever (poll() is, and costs nothing otherwise).
  pollfd ready = {g_signal_pipe[0], POLLIN, 0};
  while (::poll(&ready, 1, -1) < 0 && errno == EINTR) {
  }
  char byte = 0;
  while (::read(g_signal_pipe[0], &byte, 1) < 0 && errno == EINTR) {
  }
  (*server)->Drain();
  return 0;
}
