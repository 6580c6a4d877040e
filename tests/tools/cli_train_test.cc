// normserve-cli train against the real server with its training endpoint, driven as an
// operator would: every subcommand, exit codes, credentials, and Ctrl-C in the middle of
// accumulate followed by a re-run that counts every file exactly once.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <png.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/npy_io.h"
#include "normserve/v1/training.grpc.pb.h"
#include "tests/service/server_process.h"

namespace normserve {
namespace {

using ::testing::HasSubstr;
using testing::RunCommand;
using testing::ServerProcess;
using testing::TempDir;

constexpr char kToken[] = "cli-train-token-0123456789";

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A [1,3,8,8] tiny_bn input with values drawn from `seed`.
std::string RandomNpy(int seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Tensor t;
  t.shape = {1, 3, 8, 8};
  for (int i = 0; i < 192; ++i) t.data.push_back(normal(rng));
  return SerializeNpy(t);
}

// An RGB PNG written by libpng's own writer.
std::string Png(int width, int height, int seed) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = width;
  image.height = height;
  image.format = PNG_FORMAT_RGB;
  std::vector<unsigned char> pixels(width * height * 3);
  std::mt19937 rng(seed);
  for (unsigned char& p : pixels) p = static_cast<unsigned char>(rng() & 0xff);
  png_alloc_size_t size = 0;
  png_image_write_to_memory(&image, nullptr, &size, 0, pixels.data(), 0, nullptr);
  std::string out(size, '\0');
  EXPECT_TRUE(png_image_write_to_memory(&image, out.data(), &size, 0, pixels.data(), 0, nullptr));
  out.resize(size);
  return out;
}

class CliTrainTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    const std::string repo = dir_->path() + "/repo";
    testing::AddModel(repo, "tiny_bn", 1, testing::DefaultRepositoryModel("tiny_bn"));
    testing::WriteFile(repo + "/tiny_bn/config.json",
                       R"({"preprocess": {"resize_shorter_side": 8, "center_crop": [8, 8],
                           "mean": [0.5], "std": [0.25]}})");
    testing::WriteFile(dir_->path() + "/token", std::string(kToken) + "\n");
    training_port_ = testing::FreePort();
    auto server = ServerProcess::Start(repo, {absl::StrCat("--training_port=", training_port_),
                                              "--training_token_file=" + dir_->path() + "/token",
                                              "--training_state_dir=" + dir_->path() + "/state"});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
  }
  static void TearDownTestSuite() {
    if (server_ != nullptr) {
      EXPECT_EQ(server_->Terminate(), 0) << server_->Log();
    }
    delete server_;
    delete dir_;
  }

  static std::vector<std::string> Argv(std::vector<std::string> args, bool token = true) {
    std::vector<std::string> argv = {NORMSERVE_CLI, "--server=" + server_->address(),
                                     absl::StrCat("--training_server=127.0.0.1:", training_port_)};
    if (token) argv.push_back("--token_file=" + dir_->path() + "/token");
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }
  int Cli(std::vector<std::string> args, std::string* out, bool token = true) {
    return RunCommand(Argv(std::move(args), token), out);
  }

  std::unique_ptr<v1::TrainingService::Stub> Stub() {
    return v1::TrainingService::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", training_port_), grpc::InsecureChannelCredentials()));
  }
  int64_t Accepted(const std::string& session) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", std::string("Bearer ") + kToken);
    v1::ReportRequest req;
    req.set_session_id(session);
    v1::ReportResponse resp;
    grpc::Status s = Stub()->Report(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.requests_accepted();
  }
  // `n` distinct .npy files spread over nested directories.
  std::string WriteInputs(const std::string& name, int n) {
    const std::string root = files_.path() + "/" + name;
    for (int i = 0; i < n; ++i) {
      const std::string sub = absl::StrCat(root, "/d", i % 3, "/e", i % 2);
      std::filesystem::create_directories(sub);
      testing::WriteFile(absl::StrCat(sub, "/x", i, ".npy"), RandomNpy(1000 + i));
    }
    return root;
  }

  static TempDir* dir_;
  static ServerProcess* server_;
  static int training_port_;
  TempDir files_;
};
TempDir* CliTrainTest::dir_ = nullptr;
ServerProcess* CliTrainTest::server_ = nullptr;
int CliTrainTest::training_port_ = 0;

TEST_F(CliTrainTest, WholeWorkflowStartAccumulateReportCommitExportRollback) {
  std::string out;
  ASSERT_EQ(Cli({"train", "start", "tiny_bn", "--session_id=flow", "--min_values_per_channel=1",
                 "--max_relative_sem=100"},
                &out),
            0)
      << out;
  EXPECT_THAT(out, HasSubstr("session flow on tiny_bn version 1"));
  const std::string inputs = WriteInputs("flow", 12);
  // A PNG (8x12, resized to 8 on the shorter side and centre-cropped by the model's
  // declared preprocessing) and a copy of an .npy (same content: the same request).
  testing::WriteFile(inputs + "/img.png", Png(8, 12, 7));
  testing::WriteFile(inputs + "/copy.npy", RandomNpy(1000));

  // predict reads the same declaration from the metadata.
  ASSERT_EQ(Cli({"metadata", "tiny_bn"}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("image preprocessing: resize shorter side 8, centre crop [8,8]"));
  ASSERT_EQ(Cli({"predict", "tiny_bn", "--input=" + inputs + "/img.png"}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("output output [1,10]"));
  ASSERT_EQ(Cli({"train", "accumulate", "flow", inputs, "--progress_interval_s=0"}, &out), 0)
      << out;
  EXPECT_THAT(out, HasSubstr("14 files, 13 accepted, 1 duplicates"));
  EXPECT_THAT(out, HasSubstr("accumulate: 14/14 files"));
  EXPECT_EQ(Accepted("flow"), 13);
  // The same command again: everything is a duplicate, nothing counts twice.
  ASSERT_EQ(Cli({"train", "accumulate", "flow", inputs}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("14 files, 0 accepted, 14 duplicates"));
  EXPECT_EQ(Accepted("flow"), 13);

  ASSERT_EQ(Cli({"train", "report", "flow"}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("13 requests accepted"));
  EXPECT_THAT(out, HasSubstr("max rel SEM"));
  EXPECT_THAT(out, HasSubstr("quality gate: passed"));
  ASSERT_EQ(Cli({"train", "report", "flow", "--per_channel", "--exact"}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("exact layer-by-layer statistics"));
  EXPECT_THAT(out, HasSubstr("frozen mean"));

  ASSERT_EQ(Cli({"train", "sessions"}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("flow"));
  ASSERT_EQ(Cli({"train", "commit", "flow"}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("published tiny_bn version 2"));

  const std::string onnx = files_.path() + "/v2.onnx";
  ASSERT_EQ(Cli({"train", "export", "tiny_bn", "--version=2", "-o", onnx}, &out), 0) << out;
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", std::string("Bearer ") + kToken);
  v1::ExportModelRequest req;
  req.mutable_model_spec()->set_name("tiny_bn");
  req.mutable_model_spec()->set_version(2);
  v1::ExportModelResponse resp;
  ASSERT_TRUE(Stub()->ExportModel(&ctx, req, &resp).ok());
  EXPECT_EQ(ReadAll(onnx), resp.onnx());

  ASSERT_EQ(Cli({"train", "rollback", "tiny_bn", "1"}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("tiny_bn version 1 as version 3"));
  EXPECT_EQ(Cli({"train", "rollback", "tiny_bn", "99"}, &out), 64 + 5) << out;  // NOT_FOUND
}

TEST_F(CliTrainTest, ProgressIsABarOnATerminal) {
  std::string out;
  ASSERT_EQ(Cli({"train", "start", "tiny_bn", "--session_id=tty"}, &out), 0) << out;
  const std::string inputs = WriteInputs("tty", 5);
  testing::WriteFile(inputs + "/broken.png", "\x89PNG\r\n\x1a\nnot really");
  std::string command;
  for (const std::string& a : Argv({"train", "accumulate", "tty", inputs})) {
    absl::StrAppend(&command, "'", a, "' ");
  }
  // util-linux script(1) gives the CLI a pseudo-terminal as stdout and stderr.
  const int code = RunCommand({"/usr/bin/script", "-qec", command, "/dev/null"}, &out);
  EXPECT_EQ(code, 64 + 3) << out;
  EXPECT_THAT(out, HasSubstr("\r[########################] 6/6 files"));
  EXPECT_THAT(out, HasSubstr("5 accepted, 0 duplicates, 1 unreadable"));
  EXPECT_THAT(out, ::testing::Not(HasSubstr("accumulate: ")));  // no plain lines on a TTY
}

TEST_F(CliTrainTest, GateRefusalForceAbortAndRebase) {
  std::string out;
  ASSERT_EQ(
      Cli({"train", "start", "tiny_bn", "--session_id=gate", "--min_values_per_channel=1000000"},
          &out),
      0)
      << out;
  ASSERT_EQ(Cli({"train", "accumulate", "gate", WriteInputs("gate", 3)}, &out), 0) << out;
  ASSERT_EQ(Cli({"train", "report", "gate"}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("FAIL"));
  EXPECT_THAT(out, HasSubstr("quality gate: FAILED"));
  EXPECT_EQ(Cli({"train", "commit", "gate"}, &out), 64 + 9) << out;  // FAILED_PRECONDITION
  EXPECT_THAT(out, HasSubstr("--force publishes anyway"));

  ASSERT_EQ(Cli({"train", "start", "tiny_bn", "--session_id=gone"}, &out), 0) << out;
  ASSERT_EQ(Cli({"train", "abort", "gone"}, &out), 0) << out;
  EXPECT_EQ(Cli({"train", "abort", "gone"}, &out), 64 + 5) << out;
  EXPECT_EQ(Cli({"train", "accumulate", "gone", files_.path()}, &out), 64 + 5) << out;

  // A session opened before the commit below has a stale base afterwards.
  ASSERT_EQ(Cli({"train", "start", "tiny_bn", "--session_id=stale", "--min_values_per_channel=1",
                 "--max_relative_sem=100"},
                &out),
            0)
      << out;
  ASSERT_EQ(Cli({"train", "accumulate", "stale", WriteInputs("stale", 3)}, &out), 0) << out;
  ASSERT_EQ(Cli({"train", "commit", "gate", "--force"}, &out), 0) << out;
  const size_t at = out.find("published tiny_bn version ");
  ASSERT_NE(at, std::string::npos) << out;
  const std::string published = out.substr(at + 26, out.find(' ', at + 26) - at - 26);
  EXPECT_EQ(Cli({"train", "commit", "stale"}, &out), 64 + 9) << out;  // base no longer serving
  ASSERT_EQ(Cli({"train", "rebase", "stale"}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("session stale now on tiny_bn version " + published));
  ASSERT_EQ(Cli({"train", "commit", "stale"}, &out), 0) << out;
  EXPECT_EQ(Cli({"train", "frobnicate"}, &out), 2) << out;
  EXPECT_EQ(Cli({"train", "export", "tiny_bn"}, &out), 2) << out;  // no -o
}

TEST_F(CliTrainTest, UnauthenticatedNamesTheMissingFlagOrEnvVar) {
  std::string out;
  unsetenv("NORMSERVE_TRAINING_TOKEN");
  EXPECT_EQ(Cli({"train", "sessions"}, &out, /*token=*/false), 64 + 16) << out;
  EXPECT_THAT(out, HasSubstr("--token_file=FILE or NORMSERVE_TRAINING_TOKEN"));
  setenv("NORMSERVE_TRAINING_TOKEN", "wrong-token", 1);
  EXPECT_EQ(Cli({"train", "sessions"}, &out, /*token=*/false), 64 + 16) << out;
  EXPECT_THAT(out, HasSubstr("the token from NORMSERVE_TRAINING_TOKEN was refused"));
  setenv("NORMSERVE_TRAINING_TOKEN", kToken, 1);
  EXPECT_EQ(Cli({"train", "sessions"}, &out, /*token=*/false), 0) << out;
  unsetenv("NORMSERVE_TRAINING_TOKEN");
}

TEST_F(CliTrainTest, BadFilesAreNamedAndTheRestAccumulated) {
  std::string out;
  ASSERT_EQ(Cli({"train", "start", "tiny_bn", "--session_id=bad"}, &out), 0) << out;
  const std::string inputs = WriteInputs("bad", 2);
  testing::WriteFile(inputs + "/broken.png", "\x89PNG\r\n\x1a\nnot really");
  testing::WriteFile(inputs + "/small.png", Png(4, 4, 3));
  testing::WriteFile(inputs + "/notes.txt", "ignored: not an input extension");
  // Without the model's resize (an explicit identity preprocessing) 4x4 cannot be 8x8.
  EXPECT_EQ(Cli({"train", "accumulate", "bad", inputs, "--preprocess={}"}, &out), 64 + 3) << out;
  EXPECT_THAT(out, HasSubstr("broken.png: bad PNG"));
  EXPECT_THAT(out, HasSubstr("small.png: image is 4x4, the model expects 8x8"));
  EXPECT_THAT(out, HasSubstr("4 files, 2 accepted, 0 duplicates (already counted), 2 refused"));
  EXPECT_EQ(Accepted("bad"), 2);
}

TEST_F(CliTrainTest, ImageSmallerThanTheCropIsRefusedNamingBothSizes) {
  std::string out;
  ASSERT_EQ(Cli({"train", "start", "tiny_bn", "--session_id=crop"}, &out), 0) << out;
  testing::WriteFile(files_.path() + "/small.png", Png(6, 6, 3));
  EXPECT_EQ(Cli({"train", "accumulate", "crop", files_.path() + "/small.png",
                 R"(--preprocess={"center_crop": [8, 8]})"},
                &out),
            64 + 3)
      << out;
  EXPECT_THAT(out, HasSubstr("small.png: image is 6x6, smaller than the centre crop 8x8"));
  EXPECT_EQ(
      Cli({"train", "accumulate", "crop", files_.path(), R"(--preprocess={"mean": [1, 2]})"}, &out),
      64 + 3)
      << out;
  EXPECT_THAT(out, HasSubstr("preprocess.mean has 2 values, the model input has 3 channel(s)"));
}

TEST_F(CliTrainTest, CtrlCInTheMiddleThenRerunCountsEveryFileOnce) {
  std::string out;
  ASSERT_EQ(Cli({"train", "start", "tiny_bn", "--session_id=crash", "--max_samples=1000"}, &out), 0)
      << out;
  constexpr int kFiles = 300;
  const std::string inputs = WriteInputs("crash", kFiles);
  std::vector<std::string> argv = Argv({"train", "accumulate", "crash", inputs});
  const pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> cargv;
    for (std::string& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    freopen("/dev/null", "w", stdout);
    freopen("/dev/null", "w", stderr);
    execv(cargv[0], cargv.data());
    _exit(127);
  }
  ASSERT_GT(pid, 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (Accepted("crash") < 20 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(kill(pid, SIGINT), 0);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "accumulate finished before Ctrl-C; status " << status;
  const int64_t before = Accepted("crash");
  ASSERT_GE(before, 20);
  ASSERT_LT(before, kFiles);

  ASSERT_EQ(Cli({"train", "accumulate", "crash", inputs}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr(absl::StrCat(kFiles, " files, ", kFiles - before, " accepted, ",
                                          before, " duplicates")));
  EXPECT_EQ(Accepted("crash"), kFiles);
}

}  // namespace
}  // namespace normserve

namespace normserve {
namespace {

TEST(CliTrainTlsTest, ClientCertificateAuthenticatesWithoutAToken) {
  testing::TempDir dir;
  std::string out;
  auto cert = [&](const std::string& name) {
    return testing::RunCommand(
        {"/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj",
         "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-days", "1",
         "-keyout", dir.path() + "/" + name + ".key", "-out", dir.path() + "/" + name + ".pem"},
        &out);
  };
  if (cert("server") != 0 || cert("client") != 0) {
    FAIL() << "openssl (a test dependency, scripts/install_deps.sh) cannot make test "
              "certificates: "
           << out;
  }
  testing::TempDir repo;
  testing::AddModel(repo.path(), "tiny_bn", 1, testing::DefaultRepositoryModel("tiny_bn"));
  const int training_port = testing::FreePort();
  auto server = testing::ServerProcess::Start(
      repo.path(),
      {"--tls_cert=" + dir.path() + "/server.pem", "--tls_key=" + dir.path() + "/server.key",
       "--training_client_ca=" + dir.path() + "/client.pem",
       absl::StrCat("--training_port=", training_port),
       "--training_state_dir=" + dir.path() + "/state"},
      60, /*wait_ready=*/false);
  ASSERT_TRUE(server.ok()) << server.status();
  unsetenv("NORMSERVE_TRAINING_TOKEN");
  std::vector<std::string> base = {NORMSERVE_CLI, "--server=" + (*server)->address(),
                                   absl::StrCat("--training_server=localhost:", training_port),
                                   "--tls_ca=" + dir.path() + "/server.pem", "--timeout_s=2"};
  std::vector<std::string> with_cert = base;
  with_cert.insert(with_cert.end(), {"--tls_client_cert=" + dir.path() + "/client.pem",
                                     "--tls_client_key=" + dir.path() + "/client.key"});
  int code = 1;
  for (int i = 0; i < 100 && code != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::vector<std::string> argv = with_cert;
    argv.push_back("train");
    argv.push_back("sessions");
    code = testing::RunCommand(argv, &out);
  }
  EXPECT_EQ(code, 0) << out;
  EXPECT_THAT(out, ::testing::HasSubstr("session"));
  std::vector<std::string> start = with_cert;
  start.insert(start.end(), {"train", "start", "tiny_bn", "--session_id=mtls"});
  EXPECT_EQ(testing::RunCommand(start, &out), 0) << out;
  // Without the client certificate the handshake is refused.
  std::vector<std::string> no_cert = base;
  no_cert.insert(no_cert.end(), {"train", "sessions"});
  EXPECT_EQ(testing::RunCommand(no_cert, &out), 64 + 14) << out;  // UNAVAILABLE
  std::vector<std::string> half = base;
  half.insert(half.end(), {"--tls_client_cert=" + dir.path() + "/client.pem", "train", "sessions"});
  EXPECT_EQ(testing::RunCommand(half, &out), 64 + 3) << out;
  EXPECT_THAT(out, ::testing::HasSubstr("--tls_client_cert and --tls_client_key go together"));
  EXPECT_EQ((*server)->Terminate(), 0) << (*server)->Log();
}

}  // namespace
}  // namespace normserve
