// normserve-cli against the real server: every subcommand, every input format, exit codes.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/npy_io.h"
#include "normserve/v1/inference.grpc.pb.h"
#include "server_process.h"

namespace normserve {
namespace {

using ::testing::HasSubstr;
using testing::RunCommand;
using testing::ServerProcess;
using testing::TempDir;

class CliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    repo_ = new TempDir();
    testing::AddModel(repo_->path(), "tiny_bn", 1, testing::DefaultRepositoryModel("tiny_bn"));
    testing::WriteFile(repo_->path() + "/tiny_bn/config.json",
                       R"({"labels": ["zero", "one", "two", "three", "four", "five", "six",
                                      "seven", "eight", "nine"]})");
    auto server = ServerProcess::Start(repo_->path());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
  }
  static void TearDownTestSuite() {
    if (server_ != nullptr) {
      EXPECT_EQ(server_->Terminate(), 0) << server_->Log();
    }
    delete server_;
    delete repo_;
  }

  int Cli(std::vector<std::string> args, std::string* out) {
    args.insert(args.begin(), {NORMSERVE_CLI, "--server=" + server_->address()});
    return RunCommand(args, out);
  }

  static TempDir* repo_;
  static ServerProcess* server_;
  TempDir files_;
};
TempDir* CliTest::repo_ = nullptr;
ServerProcess* CliTest::server_ = nullptr;

Tensor Ramp() {
  Tensor t;
  t.shape = {1, 3, 8, 8};
  for (int i = 0; i < 192; ++i) t.data.push_back(0.01f * i - 0.5f);
  return t;
}

TEST_F(CliTest, HealthListMetadata) {
  std::string out;
  EXPECT_EQ(Cli({"health"}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("server: SERVING"));
  EXPECT_EQ(Cli({"health", "tiny_bn"}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("tiny_bn: SERVING"));
  EXPECT_EQ(Cli({"health", "nope"}, &out), 64 + 5) << out;  // NOT_FOUND
  EXPECT_EQ(Cli({"list"}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("tiny_bn\tversions 1"));
  EXPECT_EQ(Cli({"metadata", "tiny_bn"}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("input  input DATA_TYPE_FP32 [-1,3,8,8]"));
  EXPECT_THAT(out, HasSubstr("BatchNormalization layer(s)"));
  EXPECT_THAT(out, HasSubstr("fine"));
}

TEST_F(CliTest, PredictNpyPrintsTheServersTopOutputWithLabel) {
  const std::string npy = files_.path() + "/x.npy";
  testing::WriteFile(npy, SerializeNpy(Ramp()));
  std::string out;
  ASSERT_EQ(Cli({"predict", "tiny_bn", "--input=" + npy, "--top=1"}, &out), 0) << out;

  // The same request through the stub: the CLI must print its argmax.
  auto stub = v1::InferenceService::NewStub(
      grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  v1::PredictRequest req;
  req.mutable_model_spec()->set_name("tiny_bn");
  v1::Tensor* t = req.add_inputs();
  t->set_dtype(v1::DATA_TYPE_FP32);
  for (int64_t d : Ramp().shape) t->add_shape(d);
  for (float v : Ramp().data) t->add_float_data(v);
  req.set_output_encoding(v1::TENSOR_ENCODING_FLOAT_DATA);
  grpc::ClientContext ctx;
  v1::PredictResponse resp;
  ASSERT_TRUE(stub->Predict(&ctx, req, &resp).ok());
  int best = 0;
  for (int i = 1; i < resp.outputs(0).float_data_size(); ++i) {
    if (resp.outputs(0).float_data(i) > resp.outputs(0).float_data(best)) best = i;
  }
  const char* labels[] = {"zero", "one", "two",   "three", "four",
                          "five", "six", "seven", "eight", "nine"};
  EXPECT_THAT(out, HasSubstr("output output [1,10]"));
  EXPECT_THAT(out, HasSubstr(absl::StrCat("  ", best, " (", labels[best], ")")));
}

TEST_F(CliTest, PredictRawAndGreyPgmReplicatedToRgb) {
  const std::string raw = files_.path() + "/x.raw";
  std::string bytes(192 * 4, '\0');
  std::memcpy(bytes.data(), Ramp().data.data(), bytes.size());
  testing::WriteFile(raw, bytes);
  std::string out;
  EXPECT_EQ(Cli({"predict", "tiny_bn", "--input=" + raw}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("output output [1,10]"));

  std::string pgm = "P5\n# 8x8 grey\n8 8\n255\n";
  for (int i = 0; i < 64; ++i) pgm.push_back(static_cast<char>(i * 4));
  testing::WriteFile(files_.path() + "/x.pgm", pgm);
  EXPECT_EQ(Cli({"predict", "tiny_bn", "--input=" + files_.path() + "/x.pgm"}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("output output [1,10]"));

  std::string big = "P5 16 16 255\n" + std::string(256, '\x10');
  testing::WriteFile(files_.path() + "/big.pgm", big);
  EXPECT_EQ(Cli({"predict", "tiny_bn", "--input=" + files_.path() + "/big.pgm"}, &out), 64 + 3);
  EXPECT_THAT(out, HasSubstr("image is 16x16, the model expects 8x8"));
}

TEST_F(CliTest, ServerErrorsAndUsage) {
  std::string out;
  const std::string raw = files_.path() + "/short.raw";
  testing::WriteFile(raw, std::string(100, '\0'));
  EXPECT_EQ(Cli({"predict", "tiny_bn", "--input=" + raw, "--shape=1,3,8,8"}, &out), 64 + 3);
  EXPECT_THAT(out, HasSubstr("expected 768 bytes for shape [1,3,8,8] FP32, got 100"));
  EXPECT_EQ(Cli({"metadata", "nope"}, &out), 64 + 5);
  EXPECT_THAT(out, HasSubstr("model \"nope\" is not loaded"));
  EXPECT_EQ(Cli({"predict", "tiny_bn"}, &out), 2);
  EXPECT_EQ(Cli({"frobnicate"}, &out), 2);
  EXPECT_EQ(Cli({"reload", "tiny_bn"}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("tiny_bn\tversions 1"));
}

TEST(CliTlsTest, TlsServerAnswersTheCliWithTheCaAndRefusesPlaintext) {
  TempDir dir;
  const std::string key = dir.path() + "/key.pem", cert = dir.path() + "/cert.pem";
  std::string out;
  if (RunCommand({"/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj",
                  "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-days",
                  "1", "-keyout", key, "-out", cert},
                 &out) != 0) {
    GTEST_SKIP() << "openssl cannot make a test certificate: " << out;
  }
  TempDir repo;
  testing::AddModel(repo.path(), "tiny_bn", 1, testing::DefaultRepositoryModel("tiny_bn"));
  auto server = ServerProcess::Start(repo.path(), {"--tls_cert=" + cert, "--tls_key=" + key}, 60,
                                     /*wait_ready=*/false);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string address = (*server)->address();
  int code = 1;
  for (int i = 0; i < 100 && code != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    code = RunCommand(
        {NORMSERVE_CLI, "--server=" + address, "--tls_ca=" + cert, "--timeout_s=1", "health"},
        &out);
  }
  EXPECT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("server: SERVING"));
  EXPECT_EQ(RunCommand({NORMSERVE_CLI, "--server=" + address, "--timeout_s=1", "health"}, &out),
            64 + 14);  // UNAVAILABLE
  EXPECT_EQ((*server)->Terminate(), 0) << (*server)->Log();
  EXPECT_THAT((*server)->Log(), HasSubstr("drained"));
}

}  // namespace
}  // namespace normserve
