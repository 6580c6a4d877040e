// The training endpoint on the real normserve binary, over loopback gRPC: auth, not on
// the serving port, accumulate/retry/refusal, the gate, force, stale base, Rebase,
// commit under serving load, rollback, export, metrics (+ promtool), kill -9 recovery.
// The committed statistics are checked against CalibrateLayerwise run here on the same
// samples (itself checked against PyTorch's float64 layer-by-layer oracle).
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/layerwise_calibration.h"
#include "kernels/model.h"
#include "normserve/v1/inference.grpc.pb.h"
#include "normserve/v1/training.grpc.pb.h"
#include "tests/service/server_process.h"
#include "tests/training/expect_layerwise_statistics.h"
#include "tests/training/training_server.h"

namespace normserve {
namespace {
namespace v1 = ::normserve::v1;
namespace fs = std::filesystem;
using ::normserve::testing::Image;
using ::normserve::testing::kModel;
using ::normserve::testing::kToken;
using ::normserve::testing::ServerProcess;
using ::normserve::testing::TempDir;
using ::normserve::testing::ToTensor;
using ::normserve::testing::TrainingServer;
using ::testing::HasSubstr;

class TrainingIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repo_ = repo_dir_.path() + "/repo";
    state_ = state_dir_.path() + "/state";
    testing::AddModel(repo_, kModel, 1, testing::DefaultRepositoryModel(kModel));
  }
  TempDir repo_dir_, state_dir_;
  std::string repo_, state_;
};

TEST_F(TrainingIntegrationTest, AuthAndSeparateListener) {
  TrainingServer server(repo_, state_, {"--training_max_sessions=2"});
  ASSERT_NE(server.process(), nullptr);
  v1::ListSessionsRequest req;
  v1::ListSessionsResponse resp;
  std::string messages[2];
  {
    grpc::ClientContext ctx;  // no token
    grpc::Status s = server.training()->ListSessions(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    messages[0] = s.error_message();
  }
  {
    grpc::ClientContext ctx;  // wrong token of the same length
    std::string wrong = kToken;
    wrong.back() ^= 1;
    ctx.AddMetadata("authorization", "Bearer " + wrong);
    grpc::Status s = server.training()->ListSessions(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    messages[1] = s.error_message();
  }
  EXPECT_EQ(messages[0], messages[1]);  // nothing tells which part was wrong
  {
    grpc::ClientContext ctx;
    server.Authorize(&ctx);
    EXPECT_TRUE(server.training()->ListSessions(&ctx, req, &resp).ok());
  }
  // Bounded sessions: the third is refused naming the limit; Abort frees a slot.
  ASSERT_FALSE(server.StartSession("one").empty());
  ASSERT_FALSE(server.StartSession("two").empty());
  {
    grpc::ClientContext ctx;
    server.Authorize(&ctx);
    v1::StartSessionRequest start;
    start.mutable_model_spec()->set_name(kModel);
    v1::StartSessionResponse started;
    grpc::Status s = server.training()->StartSession(&ctx, start, &started);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_THAT(s.error_message(), HasSubstr("--training_max_sessions=2"));
  }
  {
    grpc::ClientContext ctx;
    server.Authorize(&ctx);
    v1::AbortRequest abort;
    abort.set_session_id("one");
    v1::AbortResponse aborted;
    ASSERT_TRUE(server.training()->Abort(&ctx, abort, &aborted).ok());
  }
  EXPECT_FALSE(fs::exists(state_ + "/one"));
  EXPECT_EQ(server.StartSession("three"), "three");
  {
    // AccumulateStream: each message is one Accumulate; a repeated id counts once.
    grpc::ClientContext ctx;
    server.Authorize(&ctx);
    v1::AccumulateStreamResponse summary;
    auto writer = server.training()->AccumulateStream(&ctx, &summary);
    std::mt19937 rng(1);
    for (const char* id : {"a", "b", "c", "b"}) {
      v1::AccumulateRequest req;
      req.set_session_id("three");
      req.set_request_id(id);
      *req.add_inputs() = ToTensor(Image(rng), 1);
      ASSERT_TRUE(writer->Write(req));
    }
    writer->WritesDone();
    ASSERT_TRUE(writer->Finish().ok());
    EXPECT_EQ(summary.accepted(), 3);
    EXPECT_EQ(summary.duplicates(), 1);
    EXPECT_EQ(summary.requests_accepted(), 3);
  }
  {
    // The serving port does not serve the training API, even with the token.
    auto stub = v1::TrainingService::NewStub(
        grpc::CreateChannel(server.process()->address(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    server.Authorize(&ctx);
    EXPECT_EQ(stub->ListSessions(&ctx, req, &resp).error_code(), grpc::StatusCode::UNIMPLEMENTED);
  }
}

TEST_F(TrainingIntegrationTest, AccumulateGateForceCommitExportAndMetrics) {
  TrainingServer server(repo_, state_);
  ASSERT_NE(server.process(), nullptr);
  const std::string session = server.StartSession("flow");
  ASSERT_EQ(session, "flow");
  std::mt19937 rng(5);
  std::vector<Tensor> samples;
  // 20 batch-1 requests and one batch-4 request: 24 samples.
  for (int i = 0; i < 20; ++i) {
    std::vector<float> img = Image(rng);
    ASSERT_TRUE(server.Accumulate(session, absl::StrCat("req-", i), img).ok());
    samples.push_back(Tensor{{1, 1, 28, 28}, img});
  }
  std::vector<float> batch;
  for (int i = 0; i < 4; ++i) {
    std::vector<float> img = Image(rng);
    batch.insert(batch.end(), img.begin(), img.end());
  }
  v1::AccumulateResponse acc;
  ASSERT_TRUE(server.Accumulate(session, "batch-4", batch, 4, &acc).ok());
  EXPECT_EQ(acc.requests_accepted(), 24);
  samples.push_back(Tensor{{4, 1, 28, 28}, batch});
  // A retry of an applied id: acknowledged, counted once.
  ASSERT_TRUE(server.Accumulate(session, "req-3", Image(rng), 1, &acc).ok());
  EXPECT_TRUE(acc.duplicate());
  EXPECT_EQ(acc.requests_accepted(), 24);
  // NaN: refused whole, naming the tensor.
  std::vector<float> bad = Image(rng);
  bad[17] = std::nanf("");
  grpc::Status nan = server.Accumulate(session, "nan", bad);
  EXPECT_EQ(nan.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(nan.error_message(), HasSubstr("NaN"));

  std::string text = server.Metrics();
  EXPECT_EQ(
      testing::MetricValue(text, absl::StrCat("normserve_training_requests_total{model=\"", kModel,
                                              "\",result=\"accepted\",session=\"flow\"}")),
      24);
  EXPECT_EQ(
      testing::MetricValue(text, absl::StrCat("normserve_training_requests_total{model=\"", kModel,
                                              "\",result=\"duplicate\",session=\"flow\"}")),
      1);
  EXPECT_EQ(testing::MetricValue(text, absl::StrCat("normserve_training_refused_total{model=\"",
                                                    kModel, "\",reason=\"non_finite_input\"}")),
            1);
  EXPECT_EQ(testing::MetricValue(
                text, absl::StrCat("normserve_training_sessions{model=\"", kModel, "\"}")),
            1);
  EXPECT_EQ(testing::MetricValue(
                text, absl::StrCat("normserve_training_request_undefined_layers{model=\"", kModel,
                                   "\"}")),
            1);
  EXPECT_EQ(testing::MetricValue(text, absl::StrCat("normserve_training_gate_passed{model=\"",
                                                    kModel, "\",session=\"flow\"}")),
            0);

  // Report (live) and metrics agree on the BatchNorm1d layer: 1 value per request.
  v1::ReportResponse live;
  ASSERT_TRUE(server.Report(session, false, &live).ok());
  EXPECT_EQ(live.requests_accepted(), 24);
  EXPECT_EQ(live.requests_refused(), 1);
  std::string undefined_layer;
  for (const v1::LayerReport& l : live.layers()) {
    EXPECT_EQ(l.requests(), 24);
    EXPECT_EQ(l.channels_detail_size(), l.channels());
    const std::string series =
        absl::StrCat("{layer=\"", l.name(), "\",model=\"", kModel, "\",session=\"flow\"}");
    EXPECT_EQ(testing::MetricValue(text, "normserve_training_values_per_channel_min" + series),
              l.min_values_per_channel());
    EXPECT_NEAR(testing::MetricValue(text, "normserve_training_relative_sem_max" + series),
                l.max_relative_sem(), 1e-9 * l.max_relative_sem());
    EXPECT_NEAR(testing::MetricValue(text, "normserve_training_drift_kl" + series), l.drift_kl(),
                1e-9 * std::abs(l.drift_kl()) + 1e-12);
    if (l.values_per_request() == 1) {
      undefined_layer = l.name();
      EXPECT_EQ(l.reliability(), v1::BN_RELIABILITY_UNDEFINED);
      EXPECT_EQ(l.min_values_per_channel(), 24);
    }
  }
  ASSERT_FALSE(undefined_layer.empty());
  std::string check_output;
  const std::string metrics_file = state_dir_.path() + "/metrics.txt";
  std::ofstream(metrics_file) << text;
  EXPECT_EQ(testing::RunCommand({"/bin/sh", "-c", "promtool check metrics < " + metrics_file},
                                &check_output),
            0)
      << check_output;
  EXPECT_EQ(check_output, "");

  // The gate: 24 values per channel < 32 on the BatchNorm1d layer, named.
  v1::CommitResponse commit;
  grpc::Status gate = server.Commit(session, false, &commit);
  EXPECT_EQ(gate.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(gate.error_message(),
              HasSubstr("\"" + undefined_layer + "\": 24 values per channel < 32"));

  ASSERT_TRUE(server.Commit(session, true, &commit).ok());
  EXPECT_EQ(commit.published().version(), 2);
  EXPECT_TRUE(commit.report().exact());
  v1::PredictResponse predicted;
  ASSERT_TRUE(server.Predict(&predicted).ok());
  EXPECT_EQ(predicted.model_spec().version(), 2);

  // The published statistics are the exact layer-wise ones of the accepted samples.
  auto base = Model::LoadFile(testing::DefaultRepositoryModel(kModel));
  ASSERT_TRUE(base.ok());
  std::string exported;
  ASSERT_TRUE(server.Export(2, &exported).ok());
  auto reloaded = Model::LoadBytes(exported);
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  testing::ExpectLayerwiseStatistics(*base, samples, **reloaded);
  // The repository holds version 2 on disk; no temp dirs are left behind.
  EXPECT_TRUE(fs::exists(repo_ + "/" + kModel + "/2/model.onnx"));
  for (const auto& e : fs::directory_iterator(repo_ + "/" + kModel)) {
    EXPECT_NE(e.path().filename().string()[0], '.') << e.path();
  }

  text = server.Metrics();
  EXPECT_EQ(testing::MetricValue(text, absl::StrCat("normserve_training_commits_total{model=\"",
                                                    kModel, "\",result=\"published\"}")),
            1);
  EXPECT_EQ(testing::MetricValue(text, absl::StrCat("normserve_training_commits_total{model=\"",
                                                    kModel, "\",result=\"gate_failed\"}")),
            1);
  EXPECT_EQ(testing::MetricValue(
                text, absl::StrCat("normserve_training_serving_version{model=\"", kModel, "\"}")),
            2);
  EXPECT_EQ(testing::MetricValue(
                text, absl::StrCat("normserve_training_sessions{model=\"", kModel, "\"}")),
            0);
  EXPECT_GT(testing::MetricValue(
                text, absl::StrCat("normserve_training_last_commit_timestamp_seconds{model=\"",
                                   kModel, "\"}")),
            1.7e9);
  // The committed session's series are gone.
  EXPECT_THAT(text, ::testing::Not(HasSubstr("session=\"flow\"")));
}

TEST_F(TrainingIntegrationTest, StaleBaseRebaseRollbackAndCommitUnderLoad) {
  TrainingServer server(repo_, state_);
  ASSERT_NE(server.process(), nullptr);
  const std::string a = server.StartSession("a");
  const std::string b = server.StartSession("b");
  std::mt19937 rng(9);
  for (int i = 0; i < 8; ++i) {
    grpc::Status sa = server.Accumulate(a, absl::StrCat(i), Image(rng));
    ASSERT_TRUE(sa.ok()) << sa.error_code() << ": " << sa.error_message();
    grpc::Status sb = server.Accumulate(b, absl::StrCat(i), Image(rng));
    ASSERT_TRUE(sb.ok()) << sb.error_code() << ": " << sb.error_message();
  }

  // Commit A while 3 clients predict continuously: zero failures, serving moves to v2.
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0}, ok{0}, on_v2{0};
  std::vector<std::thread> load;
  for (int t = 0; t < 3; ++t) {
    load.emplace_back([&] {
      while (!stop.load()) {
        v1::PredictResponse r;
        grpc::Status s = server.Predict(&r);
        if (!s.ok()) {
          failures.fetch_add(1);
        } else {
          ok.fetch_add(1);
          if (r.model_spec().version() == 2) on_v2.fetch_add(1);
        }
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  v1::CommitResponse commit;
  grpc::Status c = server.Commit(a, true, &commit);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  stop.store(true);
  for (auto& th : load) th.join();
  ASSERT_TRUE(c.ok()) << c.error_message();
  EXPECT_EQ(commit.published().version(), 2);
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GT(ok.load(), 0);
  EXPECT_GT(on_v2.load(), 0);

  // B is based on v1, v2 serves: refused naming both versions.
  grpc::Status stale = server.Commit(b, true, &commit);
  EXPECT_EQ(stale.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(stale.error_message(), HasSubstr("v1"));
  EXPECT_THAT(stale.error_message(), HasSubstr("v2"));
  {
    grpc::ClientContext ctx;
    server.Authorize(&ctx);
    v1::RebaseRequest req;
    req.set_session_id(b);
    v1::RebaseResponse resp;
    ASSERT_TRUE(server.training()->Rebase(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.base().version(), 2);
  }
  v1::ReportResponse rebased;
  ASSERT_TRUE(server.Report(b, false, &rebased).ok());
  EXPECT_EQ(rebased.base().version(), 2);
  EXPECT_EQ(rebased.requests_accepted(), 8);
  ASSERT_TRUE(server.Commit(b, true, &commit).ok());
  EXPECT_EQ(commit.published().version(), 3);

  // Rollback to v1: published as v4 with v1's bytes, serving v4.
  {
    grpc::ClientContext ctx;
    server.Authorize(&ctx);
    v1::RollbackRequest req;
    req.mutable_model_spec()->set_name(kModel);
    req.mutable_model_spec()->set_version(1);
    v1::RollbackResponse resp;
    ASSERT_TRUE(server.training()->Rollback(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.published().version(), 4);
  }
  v1::PredictResponse predicted;
  ASSERT_TRUE(server.Predict(&predicted).ok());
  EXPECT_EQ(predicted.model_spec().version(), 4);
  std::ifstream v1f(repo_ + "/" + kModel + "/1/model.onnx", std::ios::binary);
  std::ifstream v4f(repo_ + "/" + kModel + "/4/model.onnx", std::ios::binary);
  const std::string v1_bytes((std::istreambuf_iterator<char>(v1f)), {});
  const std::string v4_bytes((std::istreambuf_iterator<char>(v4f)), {});
  EXPECT_EQ(v1_bytes, v4_bytes);
  const std::string text = server.Metrics();
  EXPECT_EQ(testing::MetricValue(
                text, absl::StrCat("normserve_training_rollbacks_total{model=\"", kModel, "\"}")),
            1);
  EXPECT_EQ(testing::MetricValue(text, absl::StrCat("normserve_training_commits_total{model=\"",
                                                    kModel, "\",result=\"stale_base\"}")),
            1);
  EXPECT_EQ(testing::MetricValue(
                text, absl::StrCat("normserve_training_serving_version{model=\"", kModel, "\"}")),
            4);
}

TEST_F(TrainingIntegrationTest, KillNineKeepsEveryAcknowledgedRequestExactlyOnce) {
  std::vector<std::string> acked;
  std::mt19937 rng(21);
  std::vector<std::vector<float>> images;
  {
    TrainingServer server(repo_, state_);
    ASSERT_NE(server.process(), nullptr);
    const std::string session = server.StartSession("durable");
    // Concurrent clients; the process is killed while they are still sending.
    std::mutex mu;
    std::atomic<bool> stop{false};
    std::vector<std::thread> clients;
    for (int t = 0; t < 3; ++t) {
      clients.emplace_back([&, t] {
        std::mt19937 local(100 + t);
        for (int i = 0; !stop.load(); ++i) {
          const std::string id = absl::StrCat("c", t, "-", i);
          if (server.Accumulate(session, id, Image(local)).ok()) {
            std::lock_guard<std::mutex> lock(mu);
            acked.push_back(id);
          }
        }
      });
    }
    while (true) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (acked.size() >= 30) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    server.Kill();  // SIGKILL, no drain
    stop.store(true);
    for (auto& th : clients) th.join();
  }
  ASSERT_GE(acked.size(), 30u);
  TrainingServer server(repo_, state_);
  ASSERT_NE(server.process(), nullptr);
  v1::ReportResponse report;
  ASSERT_TRUE(server.Report("durable", false, &report).ok());
  // Every acknowledged request is there; at most the in-flight ones (one per client,
  // durable but unacknowledged when the process died) more.
  EXPECT_GE(report.requests_accepted(), static_cast<int64_t>(acked.size()));
  EXPECT_LE(report.requests_accepted(), static_cast<int64_t>(acked.size()) + 3);
  // Retrying every acknowledged id adds nothing.
  for (const std::string& id : acked) {
    v1::AccumulateResponse resp;
    ASSERT_TRUE(server.Accumulate("durable", id, Image(rng), 1, &resp).ok());
    EXPECT_TRUE(resp.duplicate()) << id;
  }
  v1::ReportResponse after;
  ASSERT_TRUE(server.Report("durable", false, &after).ok());
  EXPECT_EQ(after.requests_accepted(), report.requests_accepted());
  for (const v1::LayerReport& l : after.layers())
    EXPECT_EQ(l.requests(), after.requests_accepted());
}

TEST(TrainingFlagsTest, ExplicitPortWithoutCredentialsIsAFlagError) {
  TempDir repo;
  std::string out;
  EXPECT_EQ(testing::RunCommand({testing::NormserveBinary(), "--model_repository=" + repo.path(),
                                 "--training_port=0"},
                                &out),
            2);
  EXPECT_THAT(out, HasSubstr("--training_port=0 needs --training_token_file"));
  EXPECT_EQ(
      testing::RunCommand({testing::NormserveBinary(), "--model_repository=" + repo.path(),
                           "--training_port=0", "--training_token_file=" + repo.path() + "/none"},
                          &out),
      2);
  EXPECT_THAT(out, HasSubstr("cannot read"));
}

TEST(TrainingTlsTest, ClientCertificateAuthenticatesWithoutToken) {
  TempDir dir;
  const std::string key = dir.path() + "/key.pem", cert = dir.path() + "/cert.pem";
  const std::string ckey = dir.path() + "/client_key.pem", ccert = dir.path() + "/client_cert.pem";
  std::string out;
  for (const auto& [k, c, cn] : {std::make_tuple(key, cert, std::string("localhost")),
                                 std::make_tuple(ckey, ccert, std::string("trainer"))}) {
    if (testing::RunCommand(
            {"/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj",
             "/CN=" + cn, "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-days", "1",
             "-keyout", k, "-out", c},
            &out) != 0) {
      GTEST_SKIP() << "openssl cannot make a test certificate: " << out;
    }
  }
  auto read = [](const std::string& path) {
    std::ifstream in(path);
    return std::string((std::istreambuf_iterator<char>(in)), {});
  };
  TempDir repo, state;
  testing::AddModel(repo.path(), kModel, 1, testing::DefaultRepositoryModel(kModel));
  const int port = testing::FreePort();
  auto server = ServerProcess::Start(
      repo.path(),
      {"--tls_cert=" + cert, "--tls_key=" + key, "--training_client_ca=" + ccert,
       absl::StrCat("--training_port=", port), "--training_state_dir=" + state.path() + "/s"},
      60, /*wait_ready=*/false);
  ASSERT_TRUE(server.ok()) << server.status();
  auto call = [&](bool with_client_cert) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = read(cert);
    if (with_client_cert) {
      ssl.pem_private_key = read(ckey);
      ssl.pem_cert_chain = read(ccert);
    }
    auto stub = v1::TrainingService::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::SslCredentials(ssl)));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::ListSessionsResponse resp;
    return stub->ListSessions(&ctx, v1::ListSessionsRequest(), &resp);
  };
  grpc::Status ok = call(true);
  for (int i = 0; i < 100 && !ok.ok(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ok = call(true);
  }
  EXPECT_TRUE(ok.ok()) << ok.error_message() << (*server)->Log();
  EXPECT_FALSE(call(false).ok());  // the handshake requires a client certificate
}

}  // namespace
}  // namespace normserve
