// normserve-cli train: one function per subcommand, each one TrainingService call (accumulate:
// one Accumulate per file) and a printout for a person.
#include "tools/cli_train.h"

#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <map>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "normserve/v1/training.grpc.pb.h"
#include "tools/cli_serving.h"
#include "tools/input_file.h"
#include "tools/text_table.h"

namespace normserve::cli {
namespace {

namespace fs = std::filesystem;

// A stub plus the credentials every call carries.
class TrainingClient {
 public:
  static absl::StatusOr<TrainingClient> Create(const CliOptions& options) {
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
        Connect(options, options.training_server);
    if (!channel.ok()) return channel.status();
    absl::StatusOr<std::string> token = TrainingToken(options);
    if (!token.ok()) return token.status();
    TrainingClient c;
    c.options_ = options;
    c.token_ = *token;
    c.stub_ = v1::TrainingService::NewStub(*channel);
    return c;
  }

  // Runs one call with a deadline and the bearer token; UNAUTHENTICATED says which
  // credential was used or is missing.
  template <typename Req, typename Resp>
  absl::Status Call(grpc::Status (v1::TrainingService::Stub::*method)(grpc::ClientContext*,
                                                                      const Req&, Resp*),
                    const Req& req, Resp* resp) {
    grpc::ClientContext ctx;
    SetDeadline(options_, &ctx);
    if (!token_.empty()) ctx.AddMetadata("authorization", "Bearer " + token_);
    grpc::Status s = (stub_.get()->*method)(&ctx, req, resp);
    if (s.error_code() != grpc::StatusCode::UNAUTHENTICATED) return FromGrpc(s);
    std::string hint;
    if (!token_.empty()) {
      hint = absl::StrCat("the token from ",
                          options_.token_file.empty() ? "NORMSERVE_TRAINING_TOKEN"
                                                      : "--token_file=" + options_.token_file,
                          " was refused");
    } else {
      hint =
          "no token given: set --token_file=FILE or NORMSERVE_TRAINING_TOKEN (or, when the "
          "endpoint takes client certificates, --tls_ca with --tls_client_cert and "
          "--tls_client_key)";
    }
    return absl::UnauthenticatedError(absl::StrCat(s.error_message(), " (", hint, ")"));
  }

  v1::TrainingService::Stub* stub() { return stub_.get(); }

 private:
  CliOptions options_;
  std::string token_;
  std::unique_ptr<v1::TrainingService::Stub> stub_;
};

using Stub = v1::TrainingService::Stub;

std::string Fmt(double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (std::isnan(v)) return "nan";
  return absl::StrFormat("%.4g", v);
}

void PrintReport(const v1::ReportResponse& r, bool per_channel) {
  std::cout << "session " << r.session_id() << " on " << r.base().name() << " version "
            << r.base().version() << ": " << r.requests_accepted() << " requests accepted, "
            << r.requests_refused() << " refused, " << r.samples_kept() << " samples kept; "
            << (r.exact() ? "exact layer-by-layer statistics"
                          : "one pass over the frozen upstream layers (--exact: what commit "
                            "publishes)")
            << "\n";
  TextTable table({"layer", "C", "values/req", "kind", "values/ch", "max rel SEM", "mean rel SEM",
                   "mean shift", "log var", "KL", "gate", "reason"});
  for (const v1::LayerReport& l : r.layers()) {
    table.AddRow({l.name(), absl::StrCat(l.channels()), absl::StrCat(l.values_per_request()),
                  ReliabilityName(l.reliability()), absl::StrCat(l.min_values_per_channel()),
                  Fmt(l.max_relative_sem()), Fmt(l.mean_relative_sem()), Fmt(l.drift_mean_shift()),
                  Fmt(l.drift_log_var_ratio()), Fmt(l.drift_kl()),
                  l.gate_passed() ? "pass" : "FAIL", l.gate_reason()});
  }
  std::cout << table.Render();
  std::cout << "quality gate: " << (r.gate_passed() ? "passed" : "FAILED") << "\n";
  if (r.has_int8()) {
    const v1::Int8Report& q = r.int8();
    std::cout << "int8: " << q.quantized_layers() << " layers quantized on "
              << q.calibration_samples() << " samples; on " << q.held_out_samples()
              << " held-out samples top-1 agreement with fp32 " << Fmt(q.top1_agreement())
              << " (min " << Fmt(q.min_top1_agreement()) << "), max relative logit error "
              << Fmt(q.max_relative_logit_error()) << " (max "
              << Fmt(q.max_relative_logit_error_limit()) << "); int8 gate "
              << (q.gate_passed() ? "passed" : "FAILED (forced)") << "\n";
  }
  if (!per_channel) return;
  for (const v1::LayerReport& l : r.layers()) {
    std::cout << "\nlayer " << l.name() << "\n";
    TextTable ch({"channel", "mean", "variance", "SE", "rel SE", "frozen mean", "frozen var"});
    for (int c = 0; c < l.channels_detail_size(); ++c) {
      const v1::ChannelReport& d = l.channels_detail(c);
      ch.AddRow({absl::StrCat(c), Fmt(d.mean()), Fmt(d.variance()), Fmt(d.standard_error()),
                 Fmt(d.relative_standard_error()), Fmt(d.frozen_mean()), Fmt(d.frozen_variance())});
    }
    std::cout << ch.Render();
  }
}

int Start(TrainingClient& client, const CliOptions& options, const TrainOptions& train,
          const std::vector<std::string>& args) {
  v1::StartSessionRequest req;
  req.mutable_model_spec()->set_name(args[2]);
  req.mutable_model_spec()->set_version(options.version);
  req.mutable_options()->set_min_values_per_channel(train.min_values_per_channel);
  req.mutable_options()->set_max_relative_sem(train.max_relative_sem);
  req.mutable_options()->set_prior_strength(train.prior_strength);
  req.mutable_options()->set_max_samples(train.max_samples);
  req.set_session_id(train.session_id);
  v1::StartSessionResponse resp;
  if (absl::Status s = client.Call(&Stub::StartSession, req, &resp); !s.ok()) return Fail(s);
  std::cout << "session " << resp.session_id() << " on " << resp.base().name() << " version "
            << resp.base().version() << "\n";
  TextTable table({"layer", "C", "values/req", "kind"});
  for (const v1::BnLayer& l : resp.layers()) {
    table.AddRow({l.name(), absl::StrCat(l.channels()), absl::StrCat(l.values_per_channel()),
                  ReliabilityName(l.reliability())});
  }
  std::cout << table.Render();
  return kExitOk;
}

absl::StatusOr<v1::SessionSummary> FindSession(TrainingClient& client, const std::string& id) {
  v1::ListSessionsResponse list;
  if (absl::Status s = client.Call(&Stub::ListSessions, v1::ListSessionsRequest(), &list);
      !s.ok()) {
    return s;
  }
  for (const v1::SessionSummary& s : list.sessions()) {
    if (s.session_id() == id) return s;
  }
  return absl::NotFoundError(
      absl::StrCat("session \"", id.substr(0, 64), "\" is not on the training endpoint"));
}

// Every input file under `paths` (directories recursively), sorted, each once.
absl::StatusOr<std::vector<std::string>> CollectFiles(const std::vector<std::string>& paths) {
  std::vector<std::string> files;
  for (const std::string& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      for (auto it = fs::recursive_directory_iterator(p, ec); !ec && it != fs::end(it);
           it.increment(ec)) {
        if (it->is_regular_file(ec) && IsInputPath(it->path().string())) {
          files.push_back(it->path().string());
        }
      }
      if (ec) return absl::NotFoundError(absl::StrCat(p, ": ", ec.message()));
    } else if (fs::exists(p, ec)) {
      if (!IsInputPath(p)) {
        return absl::InvalidArgumentError(absl::StrCat(
            p, ": unknown input format (use .npy, .raw, .png, .jpg, .jpeg, .pgm or .ppm)"));
      }
      files.push_back(p);
    } else {
      return absl::NotFoundError(absl::StrCat(p, ": no such file or directory"));
    }
  }
  std::sort(files.begin(), files.end());
  files.erase(std::unique(files.begin(), files.end()), files.end());
  return files;
}

// Progress of accumulate on stderr: a redrawn line on a terminal, periodic lines otherwise.
class Progress {
 public:
  Progress(int64_t total, double interval_s)
      : total_(total), tty_(isatty(STDERR_FILENO) == 1), interval_s_(interval_s) {}

  // A line of its own, not overwritten by the bar.
  void Note(absl::string_view message) { std::cerr << (tty_ ? "\r\x1b[K" : "") << message << "\n"; }

  void Update(int64_t done, int64_t accepted, int64_t duplicates,
              const std::map<std::string, int64_t>& refused, bool last) {
    const double now = Seconds();
    if (!last && now - last_print_ < (tty_ ? 0.2 : interval_s_)) return;
    last_print_ = now;
    const double rate = now > 0 ? done / now : 0;
    const double eta = rate > 0 ? (total_ - done) / rate : 0;
    std::string line = absl::StrFormat("%d/%d files", done, total_);
    if (tty_) {
      const int width = 24;
      const int fill = total_ > 0 ? static_cast<int>(width * done / total_) : width;
      line = absl::StrCat("[", std::string(fill, '#'), std::string(width - fill, ' '), "] ", line);
    }
    absl::StrAppendFormat(&line, ", %.1f/s, ETA %.0fs: %d accepted, %d duplicates", rate, eta,
                          accepted, duplicates);
    for (const auto& [reason, n] : refused) absl::StrAppend(&line, ", ", n, " ", reason);
    if (tty_) {
      std::cerr << "\r" << line << "\x1b[K" << (last ? "\n" : "") << std::flush;
    } else {
      std::cerr << "accumulate: " << line << "\n" << std::flush;
    }
  }

 private:
  double Seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  const int64_t total_;
  const bool tty_;
  const double interval_s_;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  double last_print_ = 0;
};

// "wave 5/17, 1200/4096 samples" of the session's running replay; "" when none runs or
// the server cannot say (an older server: elapsed time is then all we show).
std::string ReplayProgressText(TrainingClient& client, const std::string& session_id) {
  v1::ReportRequest req;
  req.set_session_id(session_id);
  req.set_progress_only(true);
  v1::ReportResponse resp;
  if (!client.Call(&Stub::Report, req, &resp).ok() || !resp.progress().running()) return "";
  const v1::ReplayProgress& p = resp.progress();
  return absl::StrFormat("wave %d/%d, %d/%d samples", std::min(p.waves_done() + 1, p.waves_total()),
                         p.waves_total(), p.samples_done(), p.samples_total());
}

// Runs `call` (one long RPC: commit, exact report) while telling the operator how far the
// server's layer-by-layer replay is (Report progress_only answers without waiting for the
// session): redrawn on a terminal, a line every `interval_s` otherwise.
template <typename Call>
absl::Status WithReplayProgress(TrainingClient& client, const std::string& session_id,
                                const std::string& what, double interval_s, Call call) {
  std::future<absl::Status> result = std::async(std::launch::async, call);
  const bool tty = isatty(STDERR_FILENO) == 1;
  const auto start = std::chrono::steady_clock::now();
  const auto period = tty ? std::chrono::milliseconds(200)
                          : std::chrono::milliseconds(static_cast<int64_t>(interval_s * 1000));
  bool printed = false;
  while (result.wait_for(std::max(period, std::chrono::milliseconds(50))) !=
         std::future_status::ready) {
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::string where = ReplayProgressText(client, session_id);
    if (!where.empty()) where = absl::StrCat(where, ", ");
    if (tty) {
      std::cerr << "\r\x1b[K" << what << ": " << where << absl::StrFormat("%.1f", s) << " s"
                << std::flush;
    } else {
      std::cerr << what << ": " << where << absl::StrFormat("%.0f", s) << " s\n";
    }
    printed = true;
  }
  if (printed && tty) std::cerr << "\r\x1b[K" << std::flush;
  return result.get();
}

int Accumulate(TrainingClient& client, const CliOptions& options, const TrainOptions& train,
               const std::vector<std::string>& args) {
  const std::string session_id = args[2];
  absl::StatusOr<v1::SessionSummary> session = FindSession(client, session_id);
  if (!session.ok()) return Fail(session.status());
  // The signature and preprocessing of the session's base; every version of a model has the
  // same signature, so the latest serves when the base no longer does.
  absl::StatusOr<v1::GetModelMetadataResponse> md =
      FetchMetadata(options, session->base().name(), session->base().version());
  if (!md.ok() && md.status().code() == absl::StatusCode::kNotFound) {
    md = FetchMetadata(options, session->base().name(), 0);
  }
  if (!md.ok()) return Fail(md.status());
  absl::StatusOr<InputSpec> spec = InputSpecFromMetadata(*md, options.preprocess);
  if (!spec.ok()) return Fail(spec.status());
  absl::StatusOr<std::vector<std::string>> files =
      CollectFiles(std::vector<std::string>(args.begin() + 3, args.end()));
  if (!files.ok()) return Fail(files.status());

  Progress progress(static_cast<int64_t>(files->size()), train.progress_interval_s);
  int64_t accepted = 0, duplicates = 0, total = session->requests_accepted();
  std::map<std::string, int64_t> refused;
  absl::Status first_error;
  for (size_t i = 0; i < files->size(); ++i) {
    const std::string& path = (*files)[i];
    absl::Status file_status;
    absl::StatusOr<std::string> bytes = ReadFileBytes(path);
    absl::StatusOr<Tensor> input =
        bytes.ok() ? InputFromBytes(*bytes, path, *spec) : absl::StatusOr<Tensor>(bytes.status());
    if (!input.ok()) {
      file_status = input.status();
      ++refused["unreadable"];
    } else {
      v1::AccumulateRequest req;
      req.set_session_id(session_id);
      req.set_request_id(ContentRequestId(*bytes));
      v1::Tensor* t = req.add_inputs();
      t->set_name(md->inputs(0).name());
      t->set_dtype(v1::DATA_TYPE_FP32);
      for (int64_t d : input->shape) t->add_shape(d);
      t->mutable_raw_data()->assign(reinterpret_cast<const char*>(input->data.data()),
                                    input->data.size() * sizeof(float));
      v1::AccumulateResponse resp;
      absl::Status s = client.Call(&Stub::Accumulate, req, &resp);
      // UNAVAILABLE: not durable, not applied (or the connection dropped); the same id
      // makes the retry safe.
      for (int attempt = 1; s.code() == absl::StatusCode::kUnavailable && attempt <= 3; ++attempt) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200 * attempt));
        s = client.Call(&Stub::Accumulate, req, &resp);
      }
      if (s.ok()) {
        ++(resp.duplicate() ? duplicates : accepted);
        total = resp.requests_accepted();
      } else if (s.code() == absl::StatusCode::kInvalidArgument) {
        file_status = s;  // this sample refused (shape, non-finite): the others go on
        ++refused["refused"];
      } else {
        progress.Update(static_cast<int64_t>(i), accepted, duplicates, refused, true);
        std::cerr << path << ": not sent\n";
        return Fail(s);
      }
    }
    if (!file_status.ok()) {
      progress.Note(file_status.message());
      if (first_error.ok()) first_error = file_status;
    }
    progress.Update(static_cast<int64_t>(i + 1), accepted, duplicates, refused,
                    i + 1 == files->size());
  }
  int64_t refused_total = 0;
  for (const auto& [reason, n] : refused) refused_total += n;
  std::cout << "session " << session_id << ": " << files->size() << " files, " << accepted
            << " accepted, " << duplicates << " duplicates (already counted), " << refused_total
            << " refused; " << total << " requests in the session\n";
  return first_error.ok() ? kExitOk : Fail(first_error);
}

int ReportCmd(TrainingClient& client, const TrainOptions& train,
              const std::vector<std::string>& args) {
  v1::ReportRequest req;
  req.set_session_id(args[2]);
  req.set_per_channel(train.per_channel);
  req.set_exact(train.exact);
  v1::ReportResponse resp;
  absl::Status s = WithReplayProgress(
      client, args[2], absl::StrCat("report ", args[2], train.exact ? " (exact replay)" : ""),
      train.progress_interval_s, [&] { return client.Call(&Stub::Report, req, &resp); });
  if (!s.ok()) return Fail(s);
  PrintReport(resp, train.per_channel);
  return kExitOk;
}

int Commit(TrainingClient& client, const TrainOptions& train,
           const std::vector<std::string>& args) {
  v1::CommitRequest req;
  req.set_session_id(args[2]);
  req.set_force(train.force);
  req.set_precision(train.precision);
  v1::CommitResponse resp;
  absl::Status s = WithReplayProgress(
      client, args[2], absl::StrCat("commit ", args[2], " (layer-by-layer replay)"),
      train.progress_interval_s, [&] { return client.Call(&Stub::Commit, req, &resp); });
  if (!s.ok()) {
    const int code = Fail(s);
    if (s.code() == absl::StatusCode::kFailedPrecondition && !train.force) {
      std::cerr << "(see `train report " << args[2]
                << " --exact` for every layer; --force publishes anyway)\n";
    }
    return code;
  }
  PrintReport(resp.report(), false);
  std::cout << "published " << resp.published().name() << " version " << resp.published().version()
            << " (now serving)\n";
  return kExitOk;
}

int Sessions(TrainingClient& client) {
  v1::ListSessionsResponse resp;
  if (absl::Status s = client.Call(&Stub::ListSessions, v1::ListSessionsRequest(), &resp);
      !s.ok()) {
    return Fail(s);
  }
  TextTable table({"session", "model", "base version", "requests", "state"});
  for (const v1::SessionSummary& s : resp.sessions()) {
    table.AddRow({s.session_id(), s.base().name(), absl::StrCat(s.base().version()),
                  absl::StrCat(s.requests_accepted()), s.state()});
  }
  std::cout << table.Render();
  return kExitOk;
}

int Export(TrainingClient& client, const CliOptions& options, const TrainOptions& train,
           const std::vector<std::string>& args) {
  if (train.output.empty()) {
    std::cerr << "train export needs -o FILE.onnx\n";
    return kExitUsage;
  }
  v1::ExportModelRequest req;
  req.mutable_model_spec()->set_name(args[2]);
  req.mutable_model_spec()->set_version(options.version);
  v1::ExportModelResponse resp;
  if (absl::Status s = client.Call(&Stub::ExportModel, req, &resp); !s.ok()) return Fail(s);
  const std::string tmp = train.output + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(resp.onnx().data(), static_cast<std::streamsize>(resp.onnx().size()));
    if (!out.flush()) {
      return Fail(absl::PermissionDeniedError(absl::StrCat(tmp, ": cannot be written")));
    }
  }
  std::error_code ec;
  fs::rename(tmp, train.output, ec);
  if (ec) return Fail(absl::PermissionDeniedError(absl::StrCat(train.output, ": ", ec.message())));
  std::cout << "wrote " << resp.model_spec().name() << " version " << resp.model_spec().version()
            << " to " << train.output << " (" << resp.onnx().size() << " bytes)\n";
  return kExitOk;
}

}  // namespace

std::string ContentRequestId(const std::string& bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &len, EVP_sha256(), nullptr);
  std::string id = "sha256:";
  for (unsigned int i = 0; i < len; ++i) absl::StrAppendFormat(&id, "%02x", digest[i]);
  return id;
}

std::string TrainUsage() {
  return "  train start MODEL [--version=N] [--min_values_per_channel=N] [--max_relative_sem=X]\n"
         "        [--prior_strength=X] [--max_samples=N] [--session_id=ID]\n"
         "  train accumulate SESSION PATH...   files or directories (recursive): .npy, .png,\n"
         "        .jpg/.jpeg, .pgm/.ppm, .raw; request id = sha256 of the file, so a re-run\n"
         "        after a crash or Ctrl-C counts every file once\n"
         "  train report SESSION [--per_channel] [--exact]\n"
         "  train commit SESSION [--force] [--precision int8|fp32]\n"
         "  train abort SESSION | train sessions | train rebase SESSION\n"
         "  train rollback MODEL VERSION        publish VERSION's statistics again\n"
         "  train export MODEL [--version=N] -o FILE.onnx\n"
         "  (training endpoint: --training_server=HOST:PORT; token: --token_file or\n"
         "   NORMSERVE_TRAINING_TOKEN; TLS: --tls_ca [--tls_client_cert --tls_client_key])";
}

int Train(const CliOptions& options, const TrainOptions& train,
          const std::vector<std::string>& args) {
  const std::string sub = args.size() > 1 ? args[1] : "";
  static const std::map<std::string, size_t> kMinArgs = {
      {"start", 3},    {"accumulate", 4}, {"report", 3},   {"commit", 3}, {"abort", 3},
      {"sessions", 2}, {"rebase", 3},     {"rollback", 4}, {"export", 3}};
  auto it = kMinArgs.find(sub);
  if (it == kMinArgs.end() || args.size() < it->second) {
    std::cerr << (it == kMinArgs.end() ? "train: unknown subcommand \"" + sub.substr(0, 32) + "\""
                                       : "train " + sub + ": missing arguments")
              << "\n"
              << TrainUsage() << "\n";
    return kExitUsage;
  }
  absl::StatusOr<TrainingClient> client = TrainingClient::Create(options);
  if (!client.ok()) return Fail(client.status());
  if (sub == "start") return Start(*client, options, train, args);
  if (sub == "accumulate") return Accumulate(*client, options, train, args);
  if (sub == "report") return ReportCmd(*client, train, args);
  if (sub == "commit") return Commit(*client, train, args);
  if (sub == "sessions") return Sessions(*client);
  if (sub == "export") return Export(*client, options, train, args);
  if (sub == "abort") {
    v1::AbortRequest req;
    req.set_session_id(args[2]);
    v1::AbortResponse resp;
    if (absl::Status s = client->Call(&Stub::Abort, req, &resp); !s.ok()) return Fail(s);
    std::cout << "aborted session " << args[2] << "\n";
    return kExitOk;
  }
  if (sub == "rebase") {
    v1::RebaseRequest req;
    req.set_session_id(args[2]);
    v1::RebaseResponse resp;
    if (absl::Status s = client->Call(&Stub::Rebase, req, &resp); !s.ok()) return Fail(s);
    std::cout << "session " << args[2] << " now on " << resp.base().name() << " version "
              << resp.base().version() << "\n";
    return kExitOk;
  }
  // rollback MODEL VERSION
  int64_t version = 0;
  if (!absl::SimpleAtoi(args[3], &version) || version <= 0) {
    std::cerr << "train rollback: VERSION must be a positive integer\n";
    return kExitUsage;
  }
  v1::RollbackRequest req;
  req.mutable_model_spec()->set_name(args[2]);
  req.mutable_model_spec()->set_version(version);
  v1::RollbackResponse resp;
  if (absl::Status s = client->Call(&Stub::Rollback, req, &resp); !s.ok()) return Fail(s);
  std::cout << "published the statistics of " << args[2] << " version " << version << " as version "
            << resp.published().version() << " (now serving)\n";
  return kExitOk;
}

}  // namespace normserve::cli
