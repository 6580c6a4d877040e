// Version lifecycle on a temporary repository: publish, refuse a bad version while the
// old one serves, keep in-flight servables alive, policies, unload/load, observer calls.
#include "service/servable_manager.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace normserve {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::string kTiny =
    std::string(NORMSERVE_SOURCE_DIR) + "/models/repository/tiny_bn/1/model.onnx";

class RecordingObserver : public ServableObserver {
 public:
  void OnLoadResult(const std::string& model, int64_t version, const absl::Status& s) override {
    (s.ok() ? loads_ok : loads_failed)++;
  }
  void OnServingChanged(const std::string& model, const std::vector<int64_t>& versions,
                        const std::vector<std::string>& precisions) override {
    last[model] = versions;
  }
  int loads_ok = 0;
  int loads_failed = 0;
  std::map<std::string, std::vector<int64_t>> last;
};

class ServableManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("normserve_mgr_test_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    AddVersion("tiny", 1);
    manager_ = std::make_unique<ServableManager>(ModelRepository(root_.string()),
                                                 ServableOptions{1, false, 0}, &observer_);
  }
  void TearDown() override {
    manager_.reset();
    fs::remove_all(root_);
  }
  void AddVersion(const std::string& model, int version) {
    fs::create_directories(root_ / model / std::to_string(version));
    fs::copy_file(kTiny, root_ / model / std::to_string(version) / "model.onnx");
  }
  void Write(const fs::path& rel, const std::string& text) {
    fs::create_directories((root_ / rel).parent_path());
    std::ofstream(root_ / rel) << text;
  }

  fs::path root_;
  RecordingObserver observer_;
  std::unique_ptr<ServableManager> manager_;
};

absl::Status RunOnce(const Servable& s) {
  std::unique_ptr<ExecutionContext> ctx = s.compiled->NewContext();
  std::vector<float> x(192, 0.1f);
  std::vector<Tensor> out;
  return ctx->Run({TensorView{x.data(), {1, 3, 8, 8}}}, &out);
}

TEST_F(ServableManagerTest, NewVersionPublishesAndOldOneStaysUsableForItsHolders) {
  ASSERT_TRUE(manager_->LoadAll().ok());
  absl::StatusOr<std::shared_ptr<const Servable>> v1 = manager_->Get("tiny", 0);
  ASSERT_TRUE(v1.ok()) << v1.status();
  EXPECT_EQ((*v1)->version, 1);

  AddVersion("tiny", 2);
  ASSERT_TRUE(manager_->Reload("tiny").ok());
  EXPECT_EQ((*manager_->Get("tiny", 0))->version, 2);
  EXPECT_EQ(manager_->Get("tiny", 1).status().code(), absl::StatusCode::kNotFound);
  // A request that took v1 before the swap still runs on it.
  EXPECT_TRUE(RunOnce(**v1).ok());
  EXPECT_THAT(observer_.last["tiny"], ElementsAre(2));
  EXPECT_EQ(observer_.loads_ok, 2);
}

TEST_F(ServableManagerTest, BadVersionIsRefusedAndTheOldOneKeepsServing) {
  ASSERT_TRUE(manager_->LoadAll().ok());
  Write("tiny/2/model.onnx", "garbage");
  absl::StatusOr<std::vector<ModelStatusInfo>> r = manager_->Reload("tiny");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("version 2 refused (version 1 keeps serving)"));
  EXPECT_EQ((*manager_->Get("tiny", 0))->version, 1);
  std::vector<ModelStatusInfo> list = manager_->List();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_THAT(list[0].versions, ElementsAre(1));
  EXPECT_THAT(list[0].last_error, HasSubstr("version 2 refused"));
  EXPECT_EQ(observer_.loads_failed, 1);

  // A poll does not recompile the same broken file; fixing it publishes it.
  ASSERT_TRUE(manager_->Reload("").ok());
  EXPECT_EQ(observer_.loads_failed, 1);
  fs::remove(root_ / "tiny/2/model.onnx");
  fs::copy_file(kTiny, root_ / "tiny/2/model.onnx");
  ASSERT_TRUE(manager_->Reload("").ok());
  EXPECT_EQ((*manager_->Get("tiny", 0))->version, 2);
  EXPECT_EQ(manager_->List()[0].last_error, "");
}

TEST_F(ServableManagerTest, VersionPolicyAllAndSpecific) {
  AddVersion("tiny", 2);
  AddVersion("tiny", 3);
  Write("tiny/config.json", R"({"version_policy": {"all": {}}})");
  ASSERT_TRUE(manager_->LoadAll().ok());
  EXPECT_THAT(*manager_->Versions("tiny"), ElementsAre(1, 2, 3));
  EXPECT_EQ((*manager_->Get("tiny", 2))->version, 2);

  Write("tiny/config.json", R"({"version_policy": {"specific": {"versions": [1, 3]}}})");
  ASSERT_TRUE(manager_->Reload("tiny").ok());
  EXPECT_THAT(*manager_->Versions("tiny"), ElementsAre(1, 3));
  EXPECT_THAT(std::string(manager_->Get("tiny", 2).status().message()),
              HasSubstr("has no version 2 serving (serving: 1, 3)"));
}

TEST_F(ServableManagerTest, UnloadLoadAndVanishedModels) {
  AddVersion("other", 1);
  ASSERT_TRUE(manager_->LoadAll().ok());
  ASSERT_TRUE(manager_->Unload("tiny").ok());
  EXPECT_EQ(manager_->Get("tiny", 0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(observer_.last["tiny"].empty());
  // A rescan does not bring back a model unloaded by API.
  ASSERT_TRUE(manager_->Reload("").ok());
  EXPECT_FALSE(manager_->Get("tiny", 0).ok());
  EXPECT_EQ(manager_->Load("other").status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(manager_->Load("tiny").ok());
  EXPECT_TRUE(manager_->Get("tiny", 0).ok());

  fs::remove_all(root_ / "other");
  ASSERT_TRUE(manager_->Reload("").ok());
  EXPECT_EQ(manager_->Get("other", 0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(manager_->Load("absent").status().code(), absl::StatusCode::kNotFound);
}

// Issue 9 item 3: every Load/Reload of an invalid or unknown name used to add a
// permanent List entry (300 calls with 100 KB names: +230 MB, a 60 MB ListModels).
TEST_F(ServableManagerTest, NamesNotInTheRepositoryLeaveNoEntry) {
  ASSERT_TRUE(manager_->LoadAll().ok());
  const std::string long_name(100 << 10, 'q');
  for (int i = 0; i < 50; ++i) {
    const std::string bad = std::to_string(i) + "/../x";
    EXPECT_EQ(manager_->Load(bad).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(manager_->Reload(bad).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(manager_->Load("absent" + std::to_string(i)).status().code(),
              absl::StatusCode::kNotFound);
    EXPECT_EQ(manager_->Reload("absent" + std::to_string(i)).status().code(),
              absl::StatusCode::kNotFound);
  }
  const absl::Status s = manager_->Load(long_name).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_LT(s.message().size(), 300u);
  const std::vector<ModelStatusInfo> list = manager_->List();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].name, "tiny");

  // A model with a broken config is listed with its error while its directory exists,
  // and forgotten once it is gone.
  Write("broken/config.json", "{");
  AddVersion("broken", 1);
  ASSERT_FALSE(manager_->Reload("broken").ok());
  ASSERT_EQ(manager_->List().size(), 2u);
  fs::remove_all(root_ / "broken");
  ASSERT_TRUE(manager_->Reload("").ok());
  ASSERT_EQ(manager_->List().size(), 1u);
}

TEST_F(ServableManagerTest, PollingPicksUpNewVersions) {
  ASSERT_TRUE(manager_->LoadAll().ok());
  manager_->StartPolling(absl::Milliseconds(50));
  AddVersion("tiny", 5);
  const absl::Time give_up = absl::Now() + absl::Seconds(20);
  while (absl::Now() < give_up && (*manager_->Get("tiny", 0))->version != 5) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ((*manager_->Get("tiny", 0))->version, 5);
  manager_->StopPolling();
}

}  // namespace
}  // namespace normserve

namespace normserve {
namespace {

// Small models get one intra-op thread when the server chooses threads; a model's config
// and large models keep theirs.
TEST(LoadServableTest, SmallModelsRunOnOneThreadUnlessConfigured) {
  ServableOptions options;
  options.intra_op_threads = 2;
  options.single_thread_below_flops = 50e6;
  auto tiny = LoadServable("tiny_bn", 1, kTiny, {}, {}, options);
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  EXPECT_LT((*tiny)->compiled->FlopsPerSample(), 50e6);
  EXPECT_EQ((*tiny)->compiled->options().intra_op_threads, 1);

  normserve::v1::ModelConfig config;
  config.set_intra_op_threads(2);
  auto configured = LoadServable("tiny_bn", 1, kTiny, {}, config, options);
  ASSERT_TRUE(configured.ok()) << configured.status();
  EXPECT_EQ((*configured)->compiled->options().intra_op_threads, 2);

  options.single_thread_below_flops = 0;
  auto off = LoadServable("tiny_bn", 1, kTiny, {}, {}, options);
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_EQ((*off)->compiled->options().intra_op_threads, 2);

  // A model above the threshold keeps the server's threads.
  options.single_thread_below_flops = (*tiny)->compiled->FlopsPerSample() / 2;
  auto above = LoadServable("tiny_bn", 1, kTiny, {}, {}, options);
  ASSERT_TRUE(above.ok()) << above.status();
  EXPECT_EQ((*above)->compiled->options().intra_op_threads, 2);
}

}  // namespace
}  // namespace normserve
