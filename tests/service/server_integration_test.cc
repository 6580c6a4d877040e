// End-to-end tests of the real `normserve` binary over loopback with the C++ stubs:
// normserve.v1 API, health, every bad input, admin calls, queue limits, message size,
// reload under load and graceful drain.
#include <gmock/gmock.h>
#include <grpc/impl/codegen/grpc_types.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "kernels/npy_io.h"
#include "kserve/grpc_predict_v2.grpc.pb.h"
#include "normserve/v1/inference.grpc.pb.h"
#include "server_process.h"

namespace normserve {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::normserve::v1;
using testing::AddModel;
using testing::DefaultRepositoryModel;
using ::testing::HasSubstr;
using testing::ServerProcess;
using testing::TempDir;

using Stub = v1::InferenceService::Stub;

// `own_connection`: a channel that does not share its TCP connection with other stubs.
std::unique_ptr<Stub> NewStub(const ServerProcess& server, bool own_connection = false) {
  grpc::ChannelArguments args;
  if (own_connection) args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  return v1::InferenceService::NewStub(
      grpc::CreateCustomChannel(server.address(), grpc::InsecureChannelCredentials(), args));
}

std::string Raw(const std::vector<float>& values) {
  std::string bytes(values.size() * sizeof(float), '\0');
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

// A tiny_bn request: [batch,3,8,8] FP32, raw encoding.
v1::PredictRequest TinyRequest(const std::string& model = "tiny_bn", int64_t batch = 1,
                               float value = 0.25f) {
  v1::PredictRequest req;
  req.mutable_model_spec()->set_name(model);
  v1::Tensor* t = req.add_inputs();
  t->set_name("input");
  t->set_dtype(v1::DATA_TYPE_FP32);
  for (int64_t d : {batch, int64_t{3}, int64_t{8}, int64_t{8}}) t->add_shape(d);
  t->set_raw_data(Raw(std::vector<float>(batch * 3 * 8 * 8, value)));
  return req;
}

// A gn_small-shaped request: [batch,3,32,32].
v1::PredictRequest GnRequest(const std::string& model, int64_t batch) {
  v1::PredictRequest req;
  req.mutable_model_spec()->set_name(model);
  v1::Tensor* t = req.add_inputs();
  t->set_dtype(v1::DATA_TYPE_FP32);
  for (int64_t d : {batch, int64_t{3}, int64_t{32}, int64_t{32}}) t->add_shape(d);
  std::vector<float> values(batch * 3 * 32 * 32);
  for (size_t i = 0; i < values.size(); ++i) values[i] = std::sin(0.01f * i);
  t->set_raw_data(Raw(values));
  return req;
}

grpc::Status Predict(Stub* stub, const v1::PredictRequest& req, v1::PredictResponse* resp,
                     int deadline_ms = 30000) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms));
  return stub->Predict(&ctx, req, resp);
}

std::vector<float> FloatsOf(const v1::Tensor& t) {
  if (t.float_data_size() > 0) return {t.float_data().begin(), t.float_data().end()};
  std::vector<float> v(t.raw_data().size() / sizeof(float));
  std::memcpy(v.data(), t.raw_data().data(), v.size() * sizeof(float));
  return v;
}

// One server for the read-only tests: tiny_bn, gn_small, and the oracle model when the
// fixture exported it.
class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    repo_ = new TempDir();
    AddModel(repo_->path(), "tiny_bn", 1, DefaultRepositoryModel("tiny_bn"));
    AddModel(repo_->path(), "gn_small", 1, DefaultRepositoryModel("gn_small"));
    const std::string oracle = testing::TestDataDir() + "/bn1d_head/model.onnx";
    if (!testing::TestDataDir().empty() && fs::exists(oracle)) {
      AddModel(repo_->path(), "bn1d_head", 1, oracle);
    }
    auto server = ServerProcess::Start(repo_->path(), {"--workers=2"});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
  }
  static void TearDownTestSuite() {
    if (server_ != nullptr) {
      EXPECT_EQ(server_->Terminate(), 0) << server_->Log();
      delete server_;
    }
    delete repo_;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    stub_ = NewStub(*server_);
  }

  static TempDir* repo_;
  static ServerProcess* server_;
  std::unique_ptr<Stub> stub_;
};
TempDir* ServerTest::repo_ = nullptr;
ServerProcess* ServerTest::server_ = nullptr;

TEST_F(ServerTest, PredictBatchOneRawAndTypedAgree) {
  v1::PredictRequest req = TinyRequest();
  v1::PredictResponse raw;
  ASSERT_TRUE(Predict(stub_.get(), req, &raw).ok());
  EXPECT_EQ(raw.model_spec().name(), "tiny_bn");
  EXPECT_EQ(raw.model_spec().version(), 1);
  ASSERT_EQ(raw.outputs_size(), 1);
  EXPECT_EQ(raw.outputs(0).name(), "output");
  EXPECT_THAT(raw.outputs(0).shape(), ::testing::ElementsAre(1, 10));

  // Same values as typed float_data in, typed out.
  v1::PredictRequest typed = req;
  std::vector<float> values = FloatsOf(req.inputs(0));
  typed.mutable_inputs(0)->clear_raw_data();
  typed.mutable_inputs(0)->mutable_float_data()->Add(values.begin(), values.end());
  typed.set_output_encoding(v1::TENSOR_ENCODING_FLOAT_DATA);
  v1::PredictResponse out;
  ASSERT_TRUE(Predict(stub_.get(), typed, &out).ok());
  EXPECT_EQ(out.outputs(0).float_data_size(), 10);
  EXPECT_EQ(FloatsOf(out.outputs(0)), FloatsOf(raw.outputs(0)));
}

TEST_F(ServerTest, BatchRowsMatchBatchOne) {
  v1::PredictResponse one, three;
  ASSERT_TRUE(Predict(stub_.get(), GnRequest("gn_small", 1), &one).ok());
  ASSERT_TRUE(Predict(stub_.get(), GnRequest("gn_small", 3), &three).ok());
  const std::vector<float> a = FloatsOf(one.outputs(0));
  const std::vector<float> b = FloatsOf(three.outputs(0));
  ASSERT_EQ(b.size(), 3 * a.size());
  // Row 0 of the batch-3 request carries the same input values as the batch-1 request.
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-4f + 1e-4f * std::fabs(a[i]));
}

TEST_F(ServerTest, OracleOutputsMatchPyTorch) {
  const std::string dir = testing::TestDataDir() + "/bn1d_head";
  if (testing::TestDataDir().empty() || !fs::exists(dir + "/model.onnx")) {
    GTEST_SKIP() << "no oracle export (NORMSERVE_SERVICE_TESTDATA)";
  }
  absl::StatusOr<Tensor> input = ReadNpyFile(dir + "/input_b1.npy");
  absl::StatusOr<Tensor> expected = ReadNpyFile(dir + "/output_b1.npy");
  ASSERT_TRUE(input.ok() && expected.ok());
  v1::PredictRequest req;
  req.mutable_model_spec()->set_name("bn1d_head");
  v1::Tensor* t = req.add_inputs();
  t->set_dtype(v1::DATA_TYPE_FP32);
  for (int64_t d : input->shape) t->add_shape(d);
  t->set_raw_data(Raw(input->data));
  v1::PredictResponse resp;
  grpc::Status s = Predict(stub_.get(), req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const std::vector<float> got = FloatsOf(resp.outputs(0));
  ASSERT_EQ(got.size(), expected->data.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i], expected->data[i], 1e-4f + 1e-3f * std::fabs(expected->data[i])) << i;
  }
}

TEST_F(ServerTest, MetadataCarriesSignatureAndBnAnalysis) {
  grpc::ClientContext ctx;
  v1::GetModelMetadataRequest req;
  req.mutable_model_spec()->set_name("tiny_bn");
  v1::GetModelMetadataResponse resp;
  ASSERT_TRUE(stub_->GetModelMetadata(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.model_spec().version(), 1);
  EXPECT_THAT(resp.available_versions(), ::testing::ElementsAre(1));
  ASSERT_EQ(resp.inputs_size(), 1);
  EXPECT_EQ(resp.inputs(0).dtype(), v1::DATA_TYPE_FP32);
  EXPECT_THAT(resp.inputs(0).shape(), ::testing::ElementsAre(-1, 3, 8, 8));
  ASSERT_GE(resp.bn_layers_size(), 1);
  const v1::BnLayer& bn = resp.bn_layers(0);
  EXPECT_FALSE(bn.name().empty());
  EXPECT_GT(bn.channels(), 0);
  // A conv+BN on an 8x8 map: 64 values per channel per batch-1 request.
  EXPECT_EQ(bn.values_per_channel(), 64);
  EXPECT_EQ(bn.reliability(), v1::BN_RELIABILITY_FINE);
  EXPECT_GT(resp.max_batch(), 0);
}

TEST_F(ServerTest, MetadataFlagsBnAfterGlobalPoolAsUndefined) {
  grpc::ClientContext ctx;
  v1::GetModelMetadataRequest req;
  req.mutable_model_spec()->set_name("bn1d_head");
  v1::GetModelMetadataResponse resp;
  grpc::Status s = stub_->GetModelMetadata(&ctx, req, &resp);
  if (s.error_code() == grpc::StatusCode::NOT_FOUND) GTEST_SKIP() << "no oracle export";
  ASSERT_TRUE(s.ok()) << s.error_message();
  bool undefined = false;
  for (const v1::BnLayer& bn : resp.bn_layers()) {
    if (bn.values_per_channel() == 1) {
      EXPECT_EQ(bn.reliability(), v1::BN_RELIABILITY_UNDEFINED);
      EXPECT_EQ(bn.channels(), 64);
      undefined = true;
    }
  }
  EXPECT_TRUE(undefined);
}

TEST_F(ServerTest, ListModels) {
  grpc::ClientContext ctx;
  v1::ListModelsResponse resp;
  ASSERT_TRUE(stub_->ListModels(&ctx, {}, &resp).ok());
  std::set<std::string> names;
  for (const v1::ModelStatus& m : resp.models()) {
    names.insert(m.name());
    EXPECT_THAT(m.versions(), ::testing::ElementsAre(1)) << m.name();
    EXPECT_EQ(m.last_error(), "") << m.name();
  }
  EXPECT_TRUE(names.count("tiny_bn") && names.count("gn_small"));
}

// Issue 9 item 6: a NOT_FOUND for a 10 KB model name used to reach a default client as
// RESOURCE_EXHAUSTED ("received initial metadata size exceeds limit").
TEST_F(ServerTest, LongModelNameIsAShortNotFoundOnBothApis) {
  const std::string name(10 << 10, 'm');
  // Default channel arguments: the client's default metadata limit is what matters.
  auto channel = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
  auto v1_stub = v1::InferenceService::NewStub(channel);
  auto kserve = inference::GRPCInferenceService::NewStub(channel);
  std::vector<grpc::Status> answers;
  {
    grpc::ClientContext ctx;
    v1::PredictResponse resp;
    answers.push_back(v1_stub->Predict(&ctx, TinyRequest(name), &resp));
  }
  {
    grpc::ClientContext ctx;
    v1::GetModelMetadataRequest req;
    req.mutable_model_spec()->set_name(name);
    v1::GetModelMetadataResponse resp;
    answers.push_back(v1_stub->GetModelMetadata(&ctx, req, &resp));
  }
  {
    grpc::ClientContext ctx;
    v1::LoadModelRequest req;
    req.set_name(name);
    v1::LoadModelResponse resp;
    answers.push_back(v1_stub->LoadModel(&ctx, req, &resp));
  }
  {
    grpc::ClientContext ctx;
    inference::ModelInferRequest req;
    req.set_model_name(name);
    inference::ModelInferResponse resp;
    answers.push_back(kserve->ModelInfer(&ctx, req, &resp));
  }
  {
    grpc::ClientContext ctx;
    inference::ModelMetadataRequest req;
    req.set_name(name);
    inference::ModelMetadataResponse resp;
    answers.push_back(kserve->ModelMetadata(&ctx, req, &resp));
  }
  for (const grpc::Status& s : answers) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
    EXPECT_LT(s.error_message().size(), 300u) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("(10240 bytes)"));
  }
}

// Issue 9 item 3: every LoadModel/ReloadModel of an invalid or unknown name used to add a
// permanent ListModels entry.
TEST_F(ServerTest, BogusLoadsLeaveOnlyRepositoryModelsListed) {
  grpc::ClientContext before_ctx;
  v1::ListModelsResponse before;
  ASSERT_TRUE(stub_->ListModels(&before_ctx, {}, &before).ok());
  const std::string big(20 << 10, 'b');
  for (int i = 0; i < 40; ++i) {
    for (const std::string& name :
         {absl::StrCat("nope", i), absl::StrCat("../x", i), absl::StrCat(big, i)}) {
      grpc::ClientContext load_ctx;
      v1::LoadModelRequest load;
      load.set_name(name);
      v1::LoadModelResponse load_resp;
      EXPECT_FALSE(stub_->LoadModel(&load_ctx, load, &load_resp).ok());
      grpc::ClientContext reload_ctx;
      v1::ReloadModelRequest reload;
      reload.set_name(name);
      v1::ReloadModelResponse reload_resp;
      EXPECT_FALSE(stub_->ReloadModel(&reload_ctx, reload, &reload_resp).ok());
    }
  }
  grpc::ClientContext ctx;
  v1::ListModelsResponse after;
  ASSERT_TRUE(stub_->ListModels(&ctx, {}, &after).ok());
  EXPECT_EQ(after.models_size(), before.models_size());
  for (const v1::ModelStatus& m : after.models()) {
    EXPECT_TRUE(fs::is_directory(fs::path(repo_->path()) / m.name())) << m.name().substr(0, 40);
  }
}

// Issue 9 item 8: lenient parsing closed on both APIs.
TEST_F(ServerTest, OutOfRangeEnumsAndPaddedVersionsAreInvalidArgument) {
  auto kserve = inference::GRPCInferenceService::NewStub(
      grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  {
    grpc::ClientContext ctx;
    inference::ModelInferRequest req;
    req.set_model_name("tiny_bn");
    req.set_model_version(" 1");
    inference::ModelInferResponse resp;
    const grpc::Status s = kserve->ModelInfer(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("model_version \" 1\""));
  }
  {
    v1::PredictRequest req = TinyRequest();
    req.set_output_encoding(static_cast<v1::TensorEncoding>(7));
    v1::PredictResponse resp;
    const grpc::Status s = Predict(stub_.get(), req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("output_encoding 7"));
    EXPECT_THAT(s.error_message(), HasSubstr("TENSOR_ENCODING_FLOAT_DATA"));
  }
  {
    v1::PredictRequest req = TinyRequest();
    req.mutable_inputs(0)->set_dtype(static_cast<v1::DataType>(999));
    v1::PredictResponse resp;
    const grpc::Status s = Predict(stub_.get(), req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("unknown dtype 999"));
  }
}

// Issue 9 item 8: bytes that do not decode as the request message got UNIMPLEMENTED with
// empty details on both APIs (gRPC's callback path drops the decode status).
TEST_F(ServerTest, UndecodableBytesAreInvalidArgumentWithAReason) {
  auto channel = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
  grpc::GenericStub generic(channel);
  // Field 1, wire type 2 (length-delimited), with a length far past the end.
  const std::string garbage(
      "\x0a\xff\xff\xff\x0f"
      "abc",
      8);
  for (const std::string method :
       {"/normserve.v1.InferenceService/Predict", "/normserve.v1.InferenceService/LoadModel",
        "/inference.GRPCInferenceService/ModelInfer",
        "/inference.GRPCInferenceService/ModelMetadata"}) {
    grpc::Slice slice(garbage);
    grpc::ByteBuffer request(&slice, 1);
    grpc::ByteBuffer response;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    absl::Mutex mu;
    bool done = false;
    grpc::Status status;
    generic.UnaryCall(&ctx, method, grpc::StubOptions(), &request, &response, [&](grpc::Status s) {
      absl::MutexLock lock(&mu);
      status = std::move(s);
      done = true;
    });
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(&done));
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << method << ": " << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr("does not decode as")) << method;
    EXPECT_THAT(status.error_message(), HasSubstr("(8 bytes)")) << method;
  }
}

TEST_F(ServerTest, HealthOverallAndPerModel) {
  auto health = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  auto check = [&](const std::string& service, grpc::health::v1::HealthCheckResponse* resp) {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    return health->Check(&ctx, req, resp);
  };
  grpc::health::v1::HealthCheckResponse resp;
  ASSERT_TRUE(check("", &resp).ok());
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  ASSERT_TRUE(check("tiny_bn", &resp).ok());
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  ASSERT_TRUE(check("normserve.v1.InferenceService", &resp).ok());
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_EQ(check("no_such_model", &resp).error_code(), grpc::StatusCode::NOT_FOUND);
}

struct BadCase {
  const char* what;
  std::function<void(v1::PredictRequest*)> mutate;
  grpc::StatusCode code;
  const char* message;
};

TEST_F(ServerTest, EveryBadInputIsRefusedWithItsCodeAndMessage) {
  const BadCase cases[] = {
      {"wrong dtype",
       [](v1::PredictRequest* r) { r->mutable_inputs(0)->set_dtype(v1::DATA_TYPE_INT64); },
       grpc::StatusCode::INVALID_ARGUMENT,
       "datatype INT64 is not accepted; the model expects FP32"},
      {"wrong rank",
       [](v1::PredictRequest* r) { r->mutable_inputs(0)->mutable_shape()->RemoveLast(); },
       grpc::StatusCode::INVALID_ARGUMENT,
       "expected rank 4 (shape [-1,3,8,8]), got rank 3 [1,3,8]"},
      {"wrong dim", [](v1::PredictRequest* r) { r->mutable_inputs(0)->set_shape(2, 9); },
       grpc::StatusCode::INVALID_ARGUMENT, "dim 2 of [1,3,9,8] is 9, the model expects 8"},
      {"shape overflow",
       [](v1::PredictRequest* r) {
         r->mutable_inputs(0)->set_shape(0, std::numeric_limits<int64_t>::max() / 2);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "more elements than fit in int64"},
      {"byte size",
       [](v1::PredictRequest* r) { r->mutable_inputs(0)->mutable_raw_data()->pop_back(); },
       grpc::StatusCode::INVALID_ARGUMENT,
       "input \"input\": expected 768 bytes for shape [1,3,8,8] FP32, got 767"},
      {"NaN",
       [](v1::PredictRequest* r) {
         const float nan = std::numeric_limits<float>::quiet_NaN();
         std::memcpy(r->mutable_inputs(0)->mutable_raw_data()->data() + 4 * 70, &nan, 4);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "element [0,1,0,6] is NaN"},
      {"unknown input", [](v1::PredictRequest* r) { r->mutable_inputs(0)->set_name("pixels"); },
       grpc::StatusCode::INVALID_ARGUMENT, "unknown input \"pixels\""},
      {"unknown output", [](v1::PredictRequest* r) { r->add_output_filter("nope"); },
       grpc::StatusCode::INVALID_ARGUMENT, "unknown output \"nope\""},
      {"unknown model",
       [](v1::PredictRequest* r) { r->mutable_model_spec()->set_name("resnet9000"); },
       grpc::StatusCode::NOT_FOUND, "model \"resnet9000\" is not loaded"},
      {"unknown version", [](v1::PredictRequest* r) { r->mutable_model_spec()->set_version(7); },
       grpc::StatusCode::NOT_FOUND, "model \"tiny_bn\" has no version 7 serving (serving: 1)"},
      {"batch too large", [](v1::PredictRequest* r) { r->mutable_inputs(0)->set_shape(0, 100000); },
       grpc::StatusCode::INVALID_ARGUMENT, "batch size 100000"},
  };
  for (const BadCase& c : cases) {
    v1::PredictRequest req = TinyRequest();
    c.mutate(&req);
    v1::PredictResponse resp;
    grpc::Status s = Predict(stub_.get(), req, &resp);
    EXPECT_EQ(s.error_code(), c.code) << c.what << ": " << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(c.message)) << c.what;
  }
}

TEST_F(ServerTest, ExpiredDeadlineIsDeadlineExceeded) {
  v1::PredictResponse resp;
  grpc::Status s = Predict(stub_.get(), GnRequest("gn_small", 8), &resp, /*deadline_ms=*/0);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
}

TEST_F(ServerTest, UnloadAndLoadByApi) {
  auto health = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  {
    grpc::ClientContext ctx;
    v1::UnloadModelRequest req;
    req.set_name("gn_small");
    v1::UnloadModelResponse resp;
    ASSERT_TRUE(stub_->UnloadModel(&ctx, req, &resp).ok());
  }
  v1::PredictResponse out;
  EXPECT_EQ(Predict(stub_.get(), GnRequest("gn_small", 1), &out).error_code(),
            grpc::StatusCode::NOT_FOUND);
  {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    req.set_service("gn_small");
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(health->Check(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  }
  {
    grpc::ClientContext ctx;
    v1::UnloadModelRequest req;
    req.set_name("gn_small");
    v1::UnloadModelResponse resp;
    EXPECT_EQ(stub_->UnloadModel(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    v1::LoadModelRequest req;
    req.set_name("gn_small");
    v1::LoadModelResponse resp;
    grpc::Status s = stub_->LoadModel(&ctx, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_THAT(resp.status().versions(), ::testing::ElementsAre(1));
  }
  EXPECT_TRUE(Predict(stub_.get(), GnRequest("gn_small", 1), &out).ok());
  {
    grpc::ClientContext ctx;
    v1::LoadModelRequest req;
    req.set_name("gn_small");
    v1::LoadModelResponse resp;
    EXPECT_EQ(stub_->LoadModel(&ctx, req, &resp).error_code(),
              grpc::StatusCode::FAILED_PRECONDITION);
  }
  {
    grpc::ClientContext ctx;
    v1::LoadModelRequest req;
    req.set_name("not_in_repo");
    v1::LoadModelResponse resp;
    EXPECT_EQ(stub_->LoadModel(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  }
}

// A slow servable: gn_small allowed large batches, one worker, one intra-op thread.
class LimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repo_ = std::make_unique<TempDir>();
    AddModel(repo_->path(), "gn_big", 1, DefaultRepositoryModel("gn_small"));
    testing::WriteFile(repo_->path() + "/gn_big/config.json", R"({"max_batch_size": 4096})");
    // ResNet-50: ~4 GFLOP for a 600 KB request, so compute outlasts arrival by far.
    const std::string heavy = testing::TestDataDir() + "/resnet50/model.onnx";
    ASSERT_TRUE(fs::exists(heavy))
        << heavy << " missing (CTest fixture service.export_oracle_models)";
    AddModel(repo_->path(), "heavy", 1, heavy);
    auto server = ServerProcess::Start(
        repo_->path(),
        {"--workers=1", "--intra_op_threads=1", "--max_queue=1", "--max_message_bytes=16777216"});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    stub_ = NewStub(*server_);
  }

  std::unique_ptr<TempDir> repo_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<Stub> stub_;
};

// A ResNet-50 request: ~8 GFLOP a sample, hundreds of ms at batch 4 on one thread, so
// tests that need a request to still be running do not depend on the machine's speed.
v1::PredictRequest HeavyRequest(int64_t batch) {
  v1::PredictRequest req;
  req.mutable_model_spec()->set_name("heavy");
  v1::Tensor* t = req.add_inputs();
  t->set_dtype(v1::DATA_TYPE_FP32);
  for (int64_t d : {batch, int64_t{3}, int64_t{224}, int64_t{224}}) t->add_shape(d);
  t->set_raw_data(Raw(std::vector<float>(batch * 3 * 224 * 224, 0.5f)));
  return req;
}

TEST_F(LimitsTest, FullQueueIsResourceExhaustedAtOnce) {
  // ResNet-50 at batch 4 on one intra-op thread computes for far longer than 12 requests
  // of 2.4 MB take to arrive, each on its own connection, so a queue of 1 must overflow.
  const v1::PredictRequest req = HeavyRequest(4);
  std::atomic<int> ok{0}, exhausted{0}, other{0};
  std::vector<std::unique_ptr<Stub>> stubs;
  for (int i = 0; i < 12; ++i) stubs.push_back(NewStub(*server_, /*own_connection=*/true));
  std::vector<std::thread> clients;
  for (int i = 0; i < 12; ++i) {
    clients.emplace_back([&, i] {
      v1::PredictResponse resp;
      const grpc::Status s = Predict(stubs[i].get(), req, &resp, 60000);
      if (s.ok()) {
        ++ok;
      } else if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
        EXPECT_THAT(s.error_message(), HasSubstr("queue is full"));
        ++exhausted;
      } else {
        ADD_FAILURE() << s.error_message();
        ++other;
      }
    });
  }
  for (std::thread& t : clients) t.join();
  EXPECT_GE(ok.load(), 1);
  EXPECT_GE(exhausted.load(), 1) << "12 concurrent requests never overflowed a queue of 1 ("
                                 << ok.load() << " succeeded)";
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(server_->Terminate(), 0) << server_->Log();
}

TEST_F(LimitsTest, OversizedMessageIsRefused) {
  v1::PredictResponse resp;
  const grpc::Status s = Predict(stub_.get(), GnRequest("gn_big", 2048), &resp);  // 25 MB
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_EQ(server_->Terminate(), 0) << server_->Log();
}

TEST_F(LimitsTest, SigtermFinishesInFlightRequestsThenExitsZero) {
  const v1::PredictRequest req = HeavyRequest(4);
  std::vector<grpc::Status> results(2);
  std::vector<std::thread> clients;
  auto inflight = [&] {
    return testing::MetricValue(testing::HttpGet(server_->metrics_port(), "/metrics"),
                                "normserve_inflight_requests");
  };
  auto wait_inflight = [&](double n) {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    double seen = 0;
    while (std::chrono::steady_clock::now() < give_up && (seen = inflight()) < n) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return seen;
  };
  // One request runs, one waits in the queue (max_queue=1): both are in flight. The
  // second may arrive before a worker has taken the first off the queue and then finds
  // it full; it retries while the first is still running.
  clients.emplace_back([&] {
    v1::PredictResponse resp;
    results[0] = Predict(stub_.get(), req, &resp, 60000);
  });
  ASSERT_GE(wait_inflight(1), 1) << "the first request never arrived";
  clients.emplace_back([&] {
    v1::PredictResponse resp;
    for (int attempt = 0; attempt < 400; ++attempt) {
      results[1] = Predict(stub_.get(), req, &resp, 60000);
      if (results[1].error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  // SIGTERM only once the server counts both as in flight, three reads in a row: a retry
  // refused by the full queue is in flight for microseconds and can be caught by one read
  // (then SIGTERM found the second client between retries and it got UNAVAILABLE).
  double both = 0;
  for (int stable = 0; stable < 3;) {
    both = wait_inflight(2);
    if (both < 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    stable = inflight() >= 2 ? stable + 1 : 0;
  }
  if (both < 2) {
    for (std::thread& t : clients) t.join();
    FAIL() << "requests finished before SIGTERM could catch them in flight";
  }
  const auto start = std::chrono::steady_clock::now();
  const int code = server_->Terminate();
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(code, 0) << server_->Log();
  for (const grpc::Status& s : results) EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT(server_->Log(), HasSubstr("drained"));
  ::testing::Test::RecordProperty(
      "drain_ms", static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                       std::chrono::steady_clock::now() - start)
                                       .count()));
}

TEST_F(LimitsTest, QueuedWorkWhoseClientGaveUpIsSkipped) {
  const v1::PredictRequest slow = HeavyRequest(8);
  grpc::Status first;
  std::thread runner([&] {
    v1::PredictResponse resp;
    first = Predict(stub_.get(), slow, &resp, 60000);
  });
  // Once the slow request runs, queue one whose client gives up after 50 ms.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < give_up &&
         testing::MetricValue(testing::HttpGet(server_->metrics_port(), "/metrics"),
                              "normserve_inflight_requests") < 1) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // Inflight counts from arrival; give validation (a few ms for 4.8 MB) time to hand the
  // request to the worker, whose compute then takes well over a second. On a loaded
  // machine the worker may take it later still: a full queue (max_queue=1) is retried.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  v1::PredictResponse resp;
  grpc::Status queued;
  for (int attempt = 0; attempt < 100; ++attempt) {
    queued = Predict(stub_.get(), HeavyRequest(1), &resp, 50);
    if (queued.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(queued.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << queued.error_message();
  runner.join();
  ASSERT_TRUE(first.ok()) << first.error_message();
  // Wait for the skipped request to be answered, then check it never computed.
  std::string metrics;
  double skipped = 0;
  for (int i = 0; i < 200 && skipped < 1; ++i) {
    metrics = testing::HttpGet(server_->metrics_port(), "/metrics");
    skipped = std::max(
        testing::MetricValue(
            metrics, R"(normserve_requests_total{code="CANCELLED",model="heavy",version="1"})"),
        testing::MetricValue(
            metrics,
            R"(normserve_requests_total{code="DEADLINE_EXCEEDED",model="heavy",version="1"})"));
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(skipped, 1) << metrics;
  EXPECT_EQ(
      testing::MetricValue(metrics, R"(normserve_compute_duration_seconds_count{model="heavy"})"),
      1)
      << metrics;
  EXPECT_EQ(server_->Terminate(), 0) << server_->Log();
}

// Streams through the real binary: a throughput model runs two heavy requests at once on
// one thread each, the stream gauges show it, and the threads held never exceed --cores.
TEST(StreamsTest, ThroughputModelRunsConcurrentStreamsShownInMetrics) {
  TempDir repo;
  const std::string heavy = testing::TestDataDir() + "/resnet50/model.onnx";
  ASSERT_TRUE(fs::exists(heavy)) << heavy
                                 << " missing (CTest fixture service.export_oracle_models)";
  AddModel(repo.path(), "heavy", 1, heavy);
  testing::WriteFile(repo.path() + "/heavy/config.json", R"({"performance_hint": "throughput"})");
  AddModel(repo.path(), "tiny", 1, DefaultRepositoryModel("tiny_bn"));
  auto server = ServerProcess::Start(repo.path(),
                                     {"--cores=2", "--workers=2", "--max_message_bytes=16777216"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto metrics = [&] { return testing::HttpGet((*server)->metrics_port(), "/metrics"); };
  const std::string idle = metrics();
  EXPECT_EQ(testing::MetricValue(idle, "normserve_threads_budget"), 2) << idle;
  EXPECT_EQ(testing::MetricValue(idle, R"(normserve_streams_in_use{model="tiny"})"), 0) << idle;
  EXPECT_EQ(testing::MetricValue(idle, R"(normserve_queue_depth{model="heavy"})"), 0) << idle;

  const v1::PredictRequest req = HeavyRequest(4);
  std::vector<grpc::Status> results(2);
  std::vector<std::thread> clients;
  std::vector<std::unique_ptr<Stub>> stubs;
  for (int i = 0; i < 2; ++i) stubs.push_back(NewStub(**server, /*own_connection=*/true));
  for (int i = 0; i < 2; ++i) {
    clients.emplace_back([&, i] {
      v1::PredictResponse resp;
      results[i] = Predict(stubs[i].get(), req, &resp, 120000);
    });
  }
  // Batch 4 of ResNet-50 on one thread computes for seconds: both are seen running.
  double streams = 0, peak_threads = 0;
  std::string seen;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < give_up && streams < 2) {
    seen = metrics();
    streams = testing::MetricValue(seen, R"(normserve_streams_in_use{model="heavy"})");
    peak_threads = std::max(peak_threads, testing::MetricValue(seen, "normserve_threads_in_use"));
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(streams, 2) << seen;
  EXPECT_LE(peak_threads, 2) << seen;
  EXPECT_EQ(testing::MetricValue(seen, R"(normserve_stream_threads_in_use{model="heavy"})"), 2)
      << seen;
  for (const grpc::Status& s : results) EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT((*server)->Log(), HasSubstr("2 cores, up to 2 streams"));
  EXPECT_EQ((*server)->Terminate(), 0) << (*server)->Log();
}

TEST(NonFiniteTest, AllowedByFlagOrPerModelConfig) {
  TempDir repo;
  AddModel(repo.path(), "strict", 1, DefaultRepositoryModel("tiny_bn"));
  AddModel(repo.path(), "lenient", 1, DefaultRepositoryModel("tiny_bn"));
  testing::WriteFile(repo.path() + "/lenient/config.json", R"({"allow_non_finite": true})");
  auto server = ServerProcess::Start(repo.path());
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = NewStub(**server);
  v1::PredictResponse resp;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(Predict(stub.get(), TinyRequest("strict", 1, nan), &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(Predict(stub.get(), TinyRequest("lenient", 1, nan), &resp).ok());
  EXPECT_EQ((*server)->Terminate(), 0);

  auto all = ServerProcess::Start(repo.path(), {"--allow_non_finite"});
  ASSERT_TRUE(all.ok()) << all.status();
  stub = NewStub(**all);
  EXPECT_TRUE(Predict(stub.get(), TinyRequest("strict", 1, nan), &resp).ok());
  EXPECT_EQ((*all)->Terminate(), 0);
}

// Publishes v2 by API, refuses a corrupt v3, picks up v4 by polling, all while clients
// hammer the model: no request may fail.
TEST(ReloadTest, ReloadUnderLoadFailsNoRequest) {
  TempDir repo;
  const std::string model = DefaultRepositoryModel("tiny_bn");
  AddModel(repo.path(), "tiny", 1, model);
  auto server = ServerProcess::Start(repo.path(), {"--workers=2", "--poll_seconds=1"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = NewStub(**server);

  std::atomic<bool> stop{false};
  std::atomic<int> requests{0}, failures{0};
  absl::Mutex mu;
  std::set<int64_t> versions_seen;
  std::string first_failure;
  std::vector<std::thread> clients;
  for (int c = 0; c < 3; ++c) {
    clients.emplace_back([&] {
      auto own = NewStub(**server);
      const v1::PredictRequest req = TinyRequest("tiny");
      while (!stop.load()) {
        v1::PredictResponse resp;
        const grpc::Status s = Predict(own.get(), req, &resp);
        ++requests;
        absl::MutexLock lock(&mu);
        if (s.ok()) {
          versions_seen.insert(resp.model_spec().version());
        } else {
          if (failures++ == 0) first_failure = s.error_message();
        }
      }
    });
  }
  auto reload = [&](v1::ReloadModelResponse* resp) {
    grpc::ClientContext ctx;
    v1::ReloadModelRequest req;
    req.set_name("tiny");
    return stub->ReloadModel(&ctx, req, resp);
  };
  auto serving = [&]() {
    grpc::ClientContext ctx;
    v1::ListModelsResponse resp;
    EXPECT_TRUE(stub->ListModels(&ctx, {}, &resp).ok());
    for (const v1::ModelStatus& m : resp.models()) {
      if (m.name() == "tiny") return m;
    }
    return v1::ModelStatus();
  };
  std::this_thread::sleep_for(std::chrono::milliseconds(300));

  AddModel(repo.path(), "tiny", 2, model);
  v1::ReloadModelResponse resp;
  grpc::Status s = reload(&resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT(serving().versions(), ::testing::ElementsAre(2));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));

  testing::WriteFile(repo.path() + "/tiny/3/model.onnx", "this is not an onnx file");
  s = reload(&resp);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.error_message(), HasSubstr("version 3 refused (version 2 keeps serving)"));
  v1::ModelStatus status = serving();
  EXPECT_THAT(status.versions(), ::testing::ElementsAre(2));
  EXPECT_THAT(status.last_error(), HasSubstr("version 3 refused"));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));

  // The poller (every second) picks up v4 once the corrupt v3 is gone.
  fs::remove_all(repo.path() + "/tiny/3");
  AddModel(repo.path(), "tiny", 4, model);
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < give_up) {
    status = serving();
    if (status.versions_size() == 1 && status.versions(0) == 4) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_THAT(status.versions(), ::testing::ElementsAre(4));
  EXPECT_EQ(status.last_error(), "");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));

  stop = true;
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(failures.load(), 0) << first_failure;
  EXPECT_GT(requests.load(), 50);
  EXPECT_TRUE(versions_seen.count(1) && versions_seen.count(2) && versions_seen.count(4))
      << "versions seen: " << versions_seen.size();
  EXPECT_EQ((*server)->Terminate(), 0) << (*server)->Log();
}

TEST_F(ServerTest, SecondServerOnTheSamePortFailsToStart) {
  std::string output;
  const int code = testing::RunCommand(
      {testing::NormserveBinary(), "--host=127.0.0.1", absl::StrCat("--port=", server_->port()),
       "--metrics_port=-1", "--model_repository=" + repo_->path()},
      &output);
  EXPECT_EQ(code, 1) << output;
  EXPECT_THAT(output, HasSubstr("cannot listen on 127.0.0.1:"));
}

// Issue 9 item 5: a config.json symlinked out of the repository had its target's text
// echoed to unauthenticated callers, and version directories symlinked out were served.
TEST(RepositorySymlinkTest, OutsideRefusedWithoutItsContentInsideFollowed) {
  TempDir repo;
  TempDir outside;
  testing::WriteFile(outside.path() + "/secret.txt", "root:SECRET_PASSWORD_HASH:0:0\n");
  fs::create_directories(outside.path() + "/3");
  fs::copy_file(DefaultRepositoryModel("tiny_bn"), outside.path() + "/3/model.onnx");

  AddModel(repo.path(), "leak", 1, DefaultRepositoryModel("tiny_bn"));
  fs::create_symlink(outside.path() + "/secret.txt", repo.path() + "/leak/config.json");
  // The Kubernetes ConfigMap layout: config.json -> ..data/config.json, inside the root.
  AddModel(repo.path(), "configmap", 1, DefaultRepositoryModel("tiny_bn"));
  testing::WriteFile(repo.path() + "/configmap/..data/config.json", R"({"max_batch_size": 2})");
  fs::create_symlink("..data/config.json", repo.path() + "/configmap/config.json");
  AddModel(repo.path(), "escape", 1, DefaultRepositoryModel("tiny_bn"));
  fs::create_directory_symlink(outside.path() + "/3", repo.path() + "/escape/3");

  auto server = ServerProcess::Start(repo.path());
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = NewStub(**server);

  grpc::ClientContext list_ctx;
  v1::ListModelsResponse list;
  ASSERT_TRUE(stub->ListModels(&list_ctx, {}, &list).ok());
  std::map<std::string, v1::ModelStatus> by_name;
  for (const v1::ModelStatus& m : list.models()) by_name[m.name()] = m;
  ASSERT_EQ(by_name.count("configmap"), 1u);
  EXPECT_THAT(by_name["configmap"].versions(), ::testing::ElementsAre(1));
  for (const std::string name : {"leak", "escape"}) {
    ASSERT_EQ(by_name.count(name), 1u) << name;
    EXPECT_EQ(by_name[name].versions_size(), 0) << name;
    EXPECT_THAT(by_name[name].last_error(), HasSubstr("outside the model repository"));
    EXPECT_THAT(by_name[name].last_error(), ::testing::Not(HasSubstr("SECRET")));
  }
  grpc::ClientContext load_ctx;
  v1::LoadModelRequest load;
  load.set_name("leak");
  v1::LoadModelResponse load_resp;
  const grpc::Status s = stub->LoadModel(&load_ctx, load, &load_resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_THAT(s.error_message(), ::testing::Not(HasSubstr("SECRET")));
  v1::PredictResponse resp;
  EXPECT_TRUE(Predict(stub.get(), TinyRequest("configmap"), &resp).ok());
  EXPECT_EQ((*server)->Terminate(), 0) << (*server)->Log();

  // The operator's explicit choice: the flag lets the version directory outside serve.
  auto permissive = ServerProcess::Start(repo.path(), {"--allow_symlinks_outside_repository"});
  ASSERT_TRUE(permissive.ok()) << permissive.status();
  auto stub2 = NewStub(**permissive);
  v1::PredictRequest req = TinyRequest("escape");
  req.mutable_model_spec()->set_version(3);
  EXPECT_TRUE(Predict(stub2.get(), req, &resp).ok());
  EXPECT_EQ((*permissive)->Terminate(), 0) << (*permissive)->Log();
}

// Issue 9 item 7: a drain answered some late calls CANCELLED (0-6 a run under 8
// clients) instead of UNAVAILABLE. Clients here do what a well-behaved one does: call in a
// loop and stop at the first UNAVAILABLE. Three rounds, since the race is timing-bound.
TEST(DrainTest, ConcurrentClientsDuringSigtermGetOnlyOkOrUnavailable) {
  TempDir repo;
  AddModel(repo.path(), "tiny_bn", 1, DefaultRepositoryModel("tiny_bn"));
  for (int round = 0; round < 3; ++round) {
    auto server = ServerProcess::Start(repo.path(), {"--workers=2"});
    ASSERT_TRUE(server.ok()) << server.status();
    constexpr int kClients = 8;
    std::vector<std::unique_ptr<Stub>> stubs;
    for (int i = 0; i < kClients; ++i) stubs.push_back(NewStub(**server, /*own_connection=*/true));
    std::atomic<int> ok{0};
    absl::Mutex mu;
    std::vector<grpc::Status> last(kClients);
    std::vector<std::thread> clients;
    const v1::PredictRequest req = TinyRequest();
    for (int i = 0; i < kClients; ++i) {
      clients.emplace_back([&, i] {
        for (;;) {
          v1::PredictResponse resp;
          const grpc::Status s = Predict(stubs[i].get(), req, &resp, 10000);
          if (!s.ok()) {
            absl::MutexLock lock(&mu);
            last[i] = s;
            return;
          }
          ++ok;
        }
      });
    }
    while (ok.load() < 50) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    const auto start = std::chrono::steady_clock::now();
    const int code = (*server)->Terminate();
    const auto drain_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::steady_clock::now() - start)
                              .count();
    ::testing::Test::RecordProperty(absl::StrCat("drain_ms_round", round),
                                    static_cast<int>(drain_ms));
    // The lame duck is bounded (1 s) and ends once the clients have gone quiet.
    EXPECT_LT(drain_ms, 5000);
    for (std::thread& t : clients) t.join();
    EXPECT_EQ(code, 0) << (*server)->Log();
    for (int i = 0; i < kClients; ++i) {
      EXPECT_EQ(last[i].error_code(), grpc::StatusCode::UNAVAILABLE)
          << "round " << round << " client " << i << ": " << last[i].error_code() << " "
          << last[i].error_message();
    }
  }
}

TEST(FlagsTest, InvalidFlagsAreReportedTogetherAndExitTwo) {
  std::string output;
  const int code =
      testing::RunCommand({testing::NormserveBinary(), "--workers=-1", "--port=70000",
                           "--tls_cert=/x.pem", "--performance_hint=fastest", "--cores=-2"},
                          &output);
  EXPECT_EQ(code, 2);
  EXPECT_THAT(output, HasSubstr("--workers=-1 is outside [0, 256]"));
  EXPECT_THAT(output, HasSubstr("--cores=-2 is outside [0, 1024]"));
  EXPECT_THAT(output,
              HasSubstr("--performance_hint \"fastest\" is not one of latency, throughput, auto"));
  EXPECT_THAT(output, HasSubstr("--port=70000 is outside [0, 65535]"));
  EXPECT_THAT(output, HasSubstr("--tls_cert and --tls_key go together"));
}

TEST(FlagsTest, MissingRepositoryFailsToStart) {
  std::string output;
  const int code = testing::RunCommand({testing::NormserveBinary(), "--port=0", "--metrics_port=-1",
                                        "--model_repository=/nonexistent/normserve/repo"},
                                       &output);
  EXPECT_EQ(code, 1);
  EXPECT_THAT(output, HasSubstr("/nonexistent/normserve/repo"));
}

}  // namespace
}  // namespace normserve
