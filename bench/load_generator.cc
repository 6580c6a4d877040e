// normserve_loadgen: closed-loop gRPC load on a running normserve (N clients, fixed
// duration, warm-up), measured in the same process and run as the engine in-process on
// the same ONNX file, so end-to-end latency and throughput come with their in-process
// reference. One JSON line per configuration; bench/format_e2e_table.py makes the table.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "bench/engine_runner.h"
#include "bench/latency_stats.h"
#include "bench/request_sender.h"
#include "kernels/status_macros.h"

ABSL_FLAG(std::string, address, "", "normserve's gRPC address, e.g. 127.0.0.1:8001");
ABSL_FLAG(std::string, model, "", "the ONNX file the server serves (in-process side, input shape)");
ABSL_FLAG(std::string, name, "", "model name on the server; default: the file's directory name");
ABSL_FLAG(std::string, api, "normserve",
          "comma-separated: normserve (v1 Predict), kserve (ModelInfer), training (Accumulate "
          "into a session opened per configuration on --training_address)");
ABSL_FLAG(std::string, training_address, "", "the training endpoint's address (--api training)");
ABSL_FLAG(std::string, training_token_file, "", "file holding its bearer token");
ABSL_FLAG(int64_t, training_max_samples, 0,
          "max_samples of each session (0: the server's --training_max_samples)");
ABSL_FLAG(std::string, clients, "1,8", "comma-separated concurrent client counts");
ABSL_FLAG(std::string, channels, "per_client,shared",
          "for more than one client: per_client (one channel and TCP connection each) "
          "and/or shared (one channel for all)");
ABSL_FLAG(double, seconds, 5.0, "timed window of each configuration, after warm-up");
ABSL_FLAG(double, warmup_seconds, 1.0, "untimed closed-loop load before each window");
ABSL_FLAG(int32_t, rounds, 1,
          "repeat every configuration this often, interleaved (samples are pooled), so "
          "background load falls on in-process and end-to-end alike");
ABSL_FLAG(int32_t, workers, 1,
          "the server's --workers (in-process throughput uses as many streams)");
ABSL_FLAG(int32_t, intra_op_threads, 0, "the server's --intra_op_threads (0: cores / workers)");
ABSL_FLAG(bool, inprocess_alternative, true,
          "also measure the engine in-process with one single-threaded stream per core");
ABSL_FLAG(double, ready_timeout, 120.0, "seconds to wait for the server to serve the model");
ABSL_FLAG(bool, inprocess, true,
          "measure the engine in-process too (off for the policy sweep: the servers are the "
          "subject there)");
ABSL_FLAG(std::string, policy, "",
          "label of the server's scheduling (latency, throughput, auto, fixed SxT) written "
          "into each end-to-end line");

namespace normserve {
namespace bench {
namespace {

using Clock = std::chrono::steady_clock;

// Samples of one configuration, pooled over rounds.
struct Pool {
  std::vector<double> latencies_ms;
  int64_t completed = 0;
  double window_seconds = 0;
  int64_t errors = 0;
  std::string first_error;
};

void Add(Pool* pool, const InProcessResult& r) {
  pool->latencies_ms.insert(pool->latencies_ms.end(), r.latencies_ms.begin(), r.latencies_ms.end());
  pool->completed += r.completed;
  pool->window_seconds += r.window_seconds;
}

std::string StatsJson(const Pool& pool) {
  const LatencyStats l = Summarize(pool.latencies_ms);
  return absl::StrFormat(
      "\"p50_ms\":%.6f,\"p99_ms\":%.6f,\"mean_ms\":%.6f,\"min_ms\":%.6f,\"timed\":%lld,"
      "\"completed\":%lld,\"window_s\":%.3f,\"throughput_rps\":%.3f",
      l.median_ms, l.p99_ms, l.mean_ms, l.min_ms, static_cast<long long>(l.iters),
      static_cast<long long>(pool.completed), pool.window_seconds,
      pool.window_seconds > 0 ? pool.completed / pool.window_seconds : 0.0);
}

// A channel with its own subchannel pool, hence its own TCP connection: gRPC otherwise
// shares one connection between channels created with the same target and arguments.
std::shared_ptr<grpc::Channel> NewChannel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetMaxReceiveMessageSize(64 << 20);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

// Waits until the server answers one request for the model correctly.
absl::Status WaitReady(const RequestSender& sender, const std::string& address, double timeout_s) {
  const auto give_up = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(timeout_s));
  std::shared_ptr<grpc::Channel> channel = NewChannel(address);
  RequestSender::Caller caller(&sender, channel);
  absl::Status last;
  while (Clock::now() < give_up) {
    channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(1));
    last = caller.Call();
    if (last.ok()) return last;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return absl::UnavailableError(absl::StrCat("normserve at ", address,
                                             " did not serve the model within ", timeout_s,
                                             " s: ", last.ToString()));
}

// `clients` threads, each calling back to back (closed loop); the same window rules as
// RunInProcess: latencies of calls started in the window, completions inside it.
void RunEndToEnd(const RequestSender& sender, const std::string& address, int clients,
                 bool shared_channel, double warmup_s, double seconds, Pool* pool) {
  std::shared_ptr<grpc::Channel> shared = shared_channel ? NewChannel(address) : nullptr;
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int c = 0; c < clients; ++c) {
    channels.push_back(shared_channel ? shared : NewChannel(address));
    channels.back()->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10));
  }
  const auto t_start = Clock::now();
  const auto t_timed = t_start + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(warmup_s));
  const auto t_end =
      t_timed + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  absl::Mutex mu;
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      RequestSender::Caller caller(&sender, channels[c], c);
      std::vector<double> mine;
      int64_t completed = 0, errors = 0;
      std::string first_error;
      while (true) {
        const auto t0 = Clock::now();
        if (t0 >= t_end) break;
        const absl::Status s = caller.Call();
        const auto t1 = Clock::now();
        if (!s.ok()) {
          if (errors++ == 0) first_error = s.ToString();
          continue;
        }
        if (t0 >= t_timed)
          mine.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        if (t1 >= t_timed && t1 <= t_end) ++completed;
      }
      absl::MutexLock lock(&mu);
      pool->latencies_ms.insert(pool->latencies_ms.end(), mine.begin(), mine.end());
      pool->completed += completed;
      pool->errors += errors;
      if (pool->first_error.empty()) pool->first_error = first_error;
    });
  }
  for (std::thread& t : threads) t.join();
  pool->window_seconds += seconds;
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "normserve_loadgen: %s\n", status.ToString().c_str());
  return 1;
}

absl::StatusOr<std::vector<int>> ParseClients(const std::string& text) {
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int n = 0;
    if (!absl::SimpleAtoi(part, &n) || n < 1 || n > 1024) {
      return absl::InvalidArgumentError(
          absl::StrCat("--clients: \"", part, "\" is not in [1, 1024]"));
    }
    out.push_back(n);
  }
  if (out.empty()) return absl::InvalidArgumentError("--clients is empty");
  return out;
}

int Main() {
  const std::string address = absl::GetFlag(FLAGS_address);
  const std::string model_path = absl::GetFlag(FLAGS_model);
  if (address.empty() || model_path.empty()) {
    return Fail(absl::InvalidArgumentError("--address and --model are required"));
  }
  std::vector<Api> apis;
  for (absl::string_view a : absl::StrSplit(absl::GetFlag(FLAGS_api), ',', absl::SkipEmpty())) {
    absl::StatusOr<Api> parsed = ParseApi(a);
    if (!parsed.ok()) return Fail(parsed.status());
    apis.push_back(*parsed);
  }
  if (apis.empty()) return Fail(absl::InvalidArgumentError("--api is empty"));
  const std::string training_address = absl::GetFlag(FLAGS_training_address);
  std::string token;
  if (std::find(apis.begin(), apis.end(), Api::kTraining) != apis.end()) {
    std::ifstream in(absl::GetFlag(FLAGS_training_token_file));
    std::getline(in, token);
    if (training_address.empty() || token.empty()) {
      return Fail(absl::InvalidArgumentError(
          "--api training needs --training_address and a non-empty --training_token_file"));
    }
  }
  std::string name = absl::GetFlag(FLAGS_name);
  if (name.empty()) name = std::filesystem::absolute(model_path).parent_path().filename().string();
  absl::StatusOr<std::vector<int>> clients = ParseClients(absl::GetFlag(FLAGS_clients));
  if (!clients.ok()) return Fail(clients.status());
  std::vector<std::string> channel_kinds;
  for (absl::string_view kind :
       absl::StrSplit(absl::GetFlag(FLAGS_channels), ',', absl::SkipEmpty())) {
    if (kind != "per_client" && kind != "shared") {
      return Fail(absl::InvalidArgumentError(absl::StrCat("--channels: unknown \"", kind, "\"")));
    }
    channel_kinds.emplace_back(kind);
  }
  if (channel_kinds.empty()) channel_kinds.push_back("per_client");

  // The server's arithmetic (service/server.cc): intra_op_threads 0 means cores / workers.
  const int cores = std::max(1u, std::thread::hardware_concurrency());
  const int workers = std::max(1, absl::GetFlag(FLAGS_workers));
  const int threads = absl::GetFlag(FLAGS_intra_op_threads) > 0
                          ? absl::GetFlag(FLAGS_intra_op_threads)
                          : std::max(1, cores / workers);
  const double seconds = absl::GetFlag(FLAGS_seconds);
  const double warmup = absl::GetFlag(FLAGS_warmup_seconds);
  const int rounds = std::max(1, absl::GetFlag(FLAGS_rounds));

  absl::StatusOr<std::unique_ptr<PreparedEngine>> engine = PrepareEngine(model_path, threads);
  if (!engine.ok()) return Fail(engine.status());
  std::unique_ptr<PreparedEngine> alternative;
  const bool inprocess = absl::GetFlag(FLAGS_inprocess);
  const std::string policy = absl::GetFlag(FLAGS_policy);
  const bool measure_alternative = inprocess && absl::GetFlag(FLAGS_inprocess_alternative) &&
                                   !(threads == 1 && workers == cores);
  if (measure_alternative) {
    absl::StatusOr<std::unique_ptr<PreparedEngine>> alt = PrepareEngine(model_path, 1);
    if (!alt.ok()) return Fail(alt.status());
    alternative = *std::move(alt);
  }
  const RequestSender ready_probe(Api::kNormserve, name, **engine);
  if (absl::Status s = WaitReady(ready_probe, address, absl::GetFlag(FLAGS_ready_timeout));
      !s.ok()) {
    return Fail(s);
  }
  std::vector<std::unique_ptr<RequestSender>> senders;
  for (Api a : apis) senders.push_back(std::make_unique<RequestSender>(a, name, **engine));
  std::shared_ptr<grpc::Channel> training_channel =
      training_address.empty() ? nullptr : NewChannel(training_address);

  // Keyed by the JSON line's identifying fields.
  std::map<std::string, Pool> pools;
  std::vector<std::string> order;
  auto pool = [&](const std::string& key) {
    if (!pools.count(key)) order.push_back(key);
    return &pools[key];
  };
  auto in_process = [&](const PreparedEngine& e, int streams, int t, const std::string& role) {
    InProcessOptions o;
    o.streams = streams;
    o.seconds = seconds;
    o.warmup_seconds = warmup;
    absl::StatusOr<InProcessResult> r = RunInProcess(e, o);
    if (!r.ok()) return r.status();
    Add(pool(absl::StrFormat(
            "\"runner\":\"inprocess\",\"role\":\"%s\",\"streams\":%d,\"threads\":%d", role, streams,
            t)),
        *r);
    return absl::OkStatus();
  };
  for (int round = 0; round < rounds; ++round) {
    // Latency reference: one request at a time, the server's thread count.
    if (inprocess) {
      if (absl::Status s = in_process(**engine, 1, threads, "latency"); !s.ok()) return Fail(s);
    }
    // Throughput reference: the server's configuration, every worker busy.
    if (inprocess && workers > 1) {
      if (absl::Status s = in_process(**engine, workers, threads, "throughput"); !s.ok()) {
        return Fail(s);
      }
    }
    for (int n : *clients) {
      for (const std::string& kind : channel_kinds) {
        // With one client both kinds are the same thing.
        if (n == 1 && kind != channel_kinds.front()) continue;
        const std::string channel = n == 1 ? "single" : kind;
        for (const std::unique_ptr<RequestSender>& sender : senders) {
          const bool training = sender->api() == Api::kTraining;
          std::string session;
          if (training) {
            // A fresh session per configuration, aborted after it: the kept samples of
            // one window never count against the next one's max_samples.
            absl::StatusOr<std::string> started = StartTrainingSession(
                training_channel, token, name, absl::GetFlag(FLAGS_training_max_samples));
            if (!started.ok()) return Fail(started.status());
            session = *started;
            sender->SetTrainingSession(session, token);
          }
          RunEndToEnd(
              *sender, training ? training_address : address, n, kind == "shared", warmup, seconds,
              pool(absl::StrFormat(
                  "\"runner\":\"e2e\",\"api\":\"%s\",\"clients\":%d,"
                  "\"channel\":\"%s\"%s",
                  ApiName(sender->api()), n, channel,
                  policy.empty() ? std::string() : absl::StrCat(",\"policy\":\"", policy, "\""))));
          if (training) {
            if (absl::Status s = AbortTrainingSession(training_channel, token, session); !s.ok()) {
              return Fail(s);
            }
          }
        }
      }
    }
    if (alternative != nullptr) {
      if (absl::Status s = in_process(*alternative, cores, 1, "alternative"); !s.ok())
        return Fail(s);
    }
  }

  int64_t errors = 0;
  for (const std::string& key : order) {
    const Pool& p = pools[key];
    errors += p.errors;
    std::printf(
        "{%s,\"model\":\"%s\",\"server_workers\":%d,\"server_threads\":%d,\"rounds\":%d,"
        "\"errors\":%lld,%s}\n",
        key.c_str(), name.c_str(), workers, threads, rounds, static_cast<long long>(p.errors),
        StatsJson(p).c_str());
    if (!p.first_error.empty())
      std::fprintf(stderr, "%s: first error: %s\n", key.c_str(), p.first_error.c_str());
  }
  std::fflush(stdout);
  return errors == 0 ? 0 : 1;
}

}  // namespace
}  // namespace bench
}  // namespace normserve

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return normserve::bench::Main();
}
