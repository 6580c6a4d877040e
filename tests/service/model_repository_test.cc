// Repository layout, config.json parsing and version policies, on temporary directories.
#include "service/model_repository.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace normserve {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

class ModelRepositoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("normserve_repo_test_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  void Write(const fs::path& rel, const std::string& text) {
    fs::create_directories((root_ / rel).parent_path());
    std::ofstream(root_ / rel) << text;
  }

  fs::path root_;
};

normserve::v1::VersionPolicy Policy(const std::string& json_kind, int n = 0) {
  normserve::v1::VersionPolicy p;
  if (json_kind == "all") p.mutable_all();
  if (json_kind == "latest") p.mutable_latest()->set_num_versions(n);
  if (json_kind == "specific") {
    p.mutable_specific()->add_versions(2);
    p.mutable_specific()->add_versions(9);
  }
  return p;
}

TEST(SelectVersionsTest, Policies) {
  const std::vector<int64_t> on_disk = {1, 2, 5};
  EXPECT_THAT(SelectVersions({}, on_disk), ElementsAre(5));
  EXPECT_THAT(SelectVersions(Policy("latest", 2), on_disk), ElementsAre(2, 5));
  EXPECT_THAT(SelectVersions(Policy("latest", 9), on_disk), ElementsAre(1, 2, 5));
  EXPECT_THAT(SelectVersions(Policy("all"), on_disk), ElementsAre(1, 2, 5));
  EXPECT_THAT(SelectVersions(Policy("specific"), on_disk), ElementsAre(2));
  EXPECT_TRUE(SelectVersions({}, {}).empty());
}

TEST_F(ModelRepositoryTest, ListsModelDirectoriesOnly) {
  Write("b/1/model.onnx", "x");
  Write("a/1/model.onnx", "x");
  Write("README.md", "not a model");
  Write(".hidden/1/model.onnx", "x");
  ModelRepository repo(root_.string());
  absl::StatusOr<std::vector<std::string>> names = repo.ListModels();
  ASSERT_TRUE(names.ok()) << names.status();
  EXPECT_THAT(*names, ElementsAre("a", "b"));
}

TEST_F(ModelRepositoryTest, MissingRootIsNotFound) {
  ModelRepository repo((root_ / "nope").string());
  EXPECT_EQ(repo.ListModels().status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ModelRepositoryTest, ReadsVersionsAscendingAndSkipsIncompleteOnes) {
  Write("m/10/model.onnx", "ten");
  Write("m/2/model.onnx", "two");
  Write("m/3/notes.txt", "no model yet");
  Write("m/tmp/model.onnx", "not a version");
  Write("m/0/model.onnx", "zero is not a version");
  ModelRepository repo(root_.string());
  absl::StatusOr<ModelOnDisk> m = repo.ReadModel("m");
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->versions.size(), 2u);
  EXPECT_EQ(m->versions[0].version, 2);
  EXPECT_EQ(m->versions[1].version, 10);
  EXPECT_EQ(m->versions[1].stamp.size, 3);
  EXPECT_THAT(m->versions[0].path, HasSubstr("m/2/model.onnx"));
}

TEST_F(ModelRepositoryTest, ParsesTritonStyleAndPolicyConfig) {
  Write("m/1/model.onnx", "x");
  Write("m/config.json", R"({"name": "m", "platform": "onnx", "max_batch_size": 8,
      "labels": ["cat", "dog"], "version_policy": {"latest": {"num_versions": 2}}})");
  absl::StatusOr<ModelOnDisk> m = ModelRepository(root_.string()).ReadModel("m");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->config.max_batch_size(), 8);
  EXPECT_EQ(m->config.labels_size(), 2);
  EXPECT_EQ(m->config.version_policy().latest().num_versions(), 2u);
}

TEST_F(ModelRepositoryTest, BadConfigsNameTheFile) {
  ModelRepository repo(root_.string());
  Write("typo/config.json", R"({"max_batch_sise": 8})");
  absl::Status s = repo.ReadModel("typo").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("typo/config.json"));

  Write("other/config.json", R"({"name": "different"})");
  EXPECT_THAT(repo.ReadModel("other").status().message(), HasSubstr("differs"));

  Write("tf/config.json", R"({"platform": "tensorflow_savedmodel"})");
  EXPECT_THAT(repo.ReadModel("tf").status().message(), HasSubstr("is not served"));

  Write("broken/config.json", "{not json");
  EXPECT_EQ(repo.ReadModel("broken").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ModelRepositoryTest, PerformanceHintIsOneOfThreeNamesAndBadValuesAreNamed) {
  ModelRepository repo(root_.string());
  for (const char* hint : {"latency", "throughput", "auto"}) {
    const std::string model = std::string("ok_") + hint;
    Write(model + "/config.json", absl::StrCat(R"({"performance_hint": ")", hint, R"("})"));
    absl::StatusOr<ModelOnDisk> m = repo.ReadModel(model);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->config.performance_hint(), hint);
  }
  // Empty means the server's default.
  Write("unset/config.json", R"({"max_batch_size": 2})");
  ASSERT_TRUE(repo.ReadModel("unset").ok());
  EXPECT_EQ(repo.ReadModel("unset")->config.performance_hint(), "");

  // Case matters, as it does for every other key and value of config.json.
  for (const char* bad : {"fast", "LATENCY", " auto"}) {
    Write("bad/config.json", absl::StrCat(R"({"performance_hint": ")", bad, R"("})"));
    const absl::Status s = repo.ReadModel("bad").status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(s.message(), HasSubstr("bad/config.json")) << s;
    EXPECT_THAT(s.message(), HasSubstr("performance_hint")) << s;
    EXPECT_THAT(s.message(), HasSubstr("latency, throughput, auto")) << s;
  }
  // A long value is echoed truncated, never whole.
  const std::string long_value(500, 'x');
  Write("long/config.json", absl::StrCat(R"({"performance_hint": ")", long_value, R"("})"));
  const absl::Status s = repo.ReadModel("long").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), Not(HasSubstr(long_value)));

  Write("number/config.json", R"({"performance_hint": 3})");
  EXPECT_EQ(repo.ReadModel("number").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ModelRepositoryTest, DynamicBatchingBoundsAreChecked) {
  ModelRepository repo(root_.string());
  Write("ok/config.json",
        R"({"dynamic_batching": {"max_batch_size": 8, "max_queue_delay_microseconds": 500}})");
  absl::StatusOr<ModelOnDisk> m = repo.ReadModel("ok");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->config.dynamic_batching().max_batch_size(), 8);
  EXPECT_EQ(m->config.dynamic_batching().max_queue_delay_microseconds(), 500);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"({"max_batch_size": 1})", "dynamic_batching.max_batch_size 1 is outside [2, 4096]"},
      {R"({"max_batch_size": 8, "max_queue_delay_microseconds": -1})",
       "dynamic_batching.max_queue_delay_microseconds -1 is outside [0, 1000000]"},
      {R"({"max_batch_size": 8, "max_queue_delay_microseconds": 2000000})",
       "dynamic_batching.max_queue_delay_microseconds 2000000 is outside [0, 1000000]"},
      {R"({})", "dynamic_batching.max_batch_size 0 is outside [2, 4096]"}};
  for (const auto& [json, message] : bad) {
    Write("bad/config.json", absl::StrCat(R"({"dynamic_batching": )", json, "}"));
    const absl::Status s = repo.ReadModel("bad").status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << json;
    EXPECT_THAT(s.message(), HasSubstr("bad/config.json")) << s;
    EXPECT_THAT(s.message(), HasSubstr(message)) << s;
  }
}

TEST_F(ModelRepositoryTest, RejectsPathLikeNames) {
  ModelRepository repo(root_.string());
  EXPECT_EQ(repo.ReadModel("../etc").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(repo.ReadModel("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(repo.ReadModel("absent").status().code(), absl::StatusCode::kNotFound);
}

// A config.json that does not parse is reported by file, byte offset, line and the
// parser's reason; nothing of its text (values, unknown keys, the line around the error).
TEST_F(ModelRepositoryTest, ConfigErrorsLocateTheProblemWithoutEchoingTheFile) {
  ModelRepository repo(root_.string());
  Write("passwd/config.json", "root:x:0:0:SECRET_A:/root:/bin/bash\n");
  absl::Status s = repo.ReadModel("passwd").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("passwd/config.json"));
  EXPECT_THAT(s.message(), HasSubstr("at byte 0 (line 1)"));
  EXPECT_THAT(s.message(), ::testing::Not(HasSubstr("root:x")));

  Write("syntax/config.json", "{\"max_batch_size\": 8,\n \"labels\": [\"SECRET_B\"] 7}");
  s = repo.ReadModel("syntax").status();
  EXPECT_THAT(s.message(), HasSubstr("(line 2)"));
  EXPECT_THAT(s.message(), ::testing::Not(HasSubstr("SECRET_B")));

  Write("unknown/config.json", R"({"max_batch_size": 8, "SECRET_C": "SECRET_D"})");
  s = repo.ReadModel("unknown").status();
  EXPECT_THAT(s.message(), HasSubstr("unknown key"));
  EXPECT_THAT(s.message(), HasSubstr("at byte 22"));
  EXPECT_THAT(s.message(), ::testing::Not(HasSubstr("SECRET")));

  Write("enum/config.json", R"({"version_policy": {"latest": {"num_versions": "SECRET_E"}}})");
  s = repo.ReadModel("enum").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), ::testing::Not(HasSubstr("SECRET")));
  EXPECT_LT(s.message().size(), 400u) << s.message();
}

// Symlinks that stay inside the root are followed (Kubernetes ConfigMaps mount
// config.json as ..data/config.json); ones that leave it are refused unless allowed.
TEST_F(ModelRepositoryTest, SymlinksInsideAreFollowedOutsideRefused) {
  const fs::path outside = root_.string() + "_outside";
  fs::remove_all(outside);
  fs::create_directories(outside / "7");
  std::ofstream(outside / "secret.json") << R"({"SECRET_F": 1})";
  std::ofstream(outside / "7" / "model.onnx") << "x";

  Write("inside/1/model.onnx", "x");
  Write("inside/..data/config.json", R"({"max_batch_size": 3})");
  fs::create_symlink("..data/config.json", root_ / "inside" / "config.json");

  Write("cfg_out/1/model.onnx", "x");
  fs::create_symlink(outside / "secret.json", root_ / "cfg_out" / "config.json");

  Write("ver_out/1/model.onnx", "x");
  fs::create_directory_symlink(outside / "7", root_ / "ver_out" / "7");

  fs::create_directory_symlink(outside, root_ / "dir_out");

  ModelRepository repo(root_.string());
  absl::StatusOr<ModelOnDisk> inside = repo.ReadModel("inside");
  ASSERT_TRUE(inside.ok()) << inside.status();
  EXPECT_EQ(inside->config.max_batch_size(), 3);

  for (const std::string name : {"cfg_out", "ver_out", "dir_out"}) {
    const absl::Status s = repo.ReadModel(name).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << name << ": " << s;
    EXPECT_THAT(s.message(), HasSubstr("outside the model repository"));
    EXPECT_THAT(s.message(), ::testing::Not(HasSubstr("SECRET")));
    EXPECT_THAT(s.message(), ::testing::Not(HasSubstr(outside.string())));
    EXPECT_TRUE(repo.Contains(name)) << name;
  }

  RepositoryOptions allow;
  allow.allow_symlinks_outside = true;
  ModelRepository permissive(root_.string(), allow);
  absl::StatusOr<ModelOnDisk> ver = permissive.ReadModel("ver_out");
  ASSERT_TRUE(ver.ok()) << ver.status();
  EXPECT_EQ(ver->versions.size(), 2u);
  fs::remove_all(outside);
}

TEST(ModelConfigTest, PrecisionIsOneOfTheServedNames) {
  for (const char* p : {"fp32", "bf16", "int8"}) {
    absl::StatusOr<normserve::v1::ModelConfig> c =
        ParseModelConfig(absl::StrCat(R"({"precision": ")", p, R"("})"), "m/config.json");
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->precision(), p);
  }
  absl::StatusOr<normserve::v1::ModelConfig> bad =
      ParseModelConfig(R"({"precision": "FP16"})", "m/config.json");
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(),
            "m/config.json: precision \"FP16\" is not a precision (fp32, bf16, int8)");
  // A long value is echoed as a short prefix.
  bad = ParseModelConfig(absl::StrCat(R"({"precision": ")", std::string(5000, 'x'), R"("})"),
                         "m/config.json");
  EXPECT_LT(bad.status().message().size(), 400u);
}

// A bad preprocess declaration fails the load, not the first client that applies it.
TEST(ModelConfigTest, PreprocessIsCheckedAtParse) {
  absl::StatusOr<normserve::v1::ModelConfig> ok = ParseModelConfig(
      R"({"preprocess": {"resize_shorter_side": 256, "center_crop": [224, 224],
          "channel_order": "BGR", "mean": [0.485, 0.456, 0.406], "std": [0.229]}})",
      "m/config.json");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->preprocess().center_crop_size(), 2);
  const std::pair<const char*, const char*> bad_cases[] = {
      {R"({"preprocess": {"channel_order": "RBG"}})",
       "m/config.json: preprocess.channel_order is \"RBG\", expected RGB or BGR"},
      {R"({"preprocess": {"center_crop": [224]}})",
       "m/config.json: preprocess.center_crop is [224], expected [] or [height, width] in "
       "1..65536"},
      {R"({"preprocess": {"std": [0.5, 0]}})", "m/config.json: preprocess.std has 0, expected > 0"},
      {R"({"preprocess": {"resize_shorter_side": -1}})",
       "m/config.json: preprocess.resize_shorter_side is -1, expected 0..65536"},
  };
  for (const auto& [json, message] : bad_cases) {
    absl::StatusOr<normserve::v1::ModelConfig> bad = ParseModelConfig(json, "m/config.json");
    ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << json;
    EXPECT_EQ(bad.status().message(), message);
  }
}

TEST(DefaultRepositoryTest, CommittedConfigsParse) {
  const fs::path repo_dir = fs::path(NORMSERVE_SOURCE_DIR) / "models" / "repository";
  if (!fs::exists(repo_dir)) GTEST_SKIP() << repo_dir << " not present";
  ModelRepository repo(repo_dir.string());
  absl::StatusOr<std::vector<std::string>> names = repo.ListModels();
  ASSERT_TRUE(names.ok()) << names.status();
  for (const std::string& name : *names) {
    EXPECT_TRUE(repo.ReadModel(name).ok()) << repo.ReadModel(name).status();
  }
}

}  // namespace
}  // namespace normserve
