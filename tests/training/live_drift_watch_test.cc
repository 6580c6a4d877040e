// Live drift watch: the drift it exports for sampled requests equals the drift a training
// session reports for the same samples (same base statistics, same definition), queue
// overflow drops instead of blocking, and a fraction of 0 samples nothing.
#include "service/training/live_drift_watch.h"

#include <filesystem>
#include <random>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "service/training/session.h"
#include "tests/service/server_process.h"

namespace normserve {
namespace {
namespace fs = std::filesystem;

std::string ModelPath() {
  return std::string(NORMSERVE_SOURCE_DIR) + "/models/repository/fashion_bn_cnn/1/model.onnx";
}

TEST(LiveDriftWatchTest, ExportsTheDriftASessionReportsForTheSameSamples) {
  auto servable =
      LoadServable("fashion_bn_cnn", 1, ModelPath(), FileStamp{}, {}, ServableOptions{});
  ASSERT_TRUE(servable.ok()) << servable.status();
  auto registry = std::make_shared<prometheus::Registry>();
  TrainingMetrics metrics(registry);
  LiveDriftOptions options;
  options.fraction = 1;
  options.min_requests = 8;
  options.max_queue = 1000;
  LiveDriftWatch watch(options, &metrics);

  // The same 40 contrast-reduced images go to the watch and to a session.
  std::string tmpl = (fs::temp_directory_path() / "normserve_drift_XXXXXX").string();
  const std::string dir = ::mkdtemp(tmpl.data());
  SessionConfig config;
  config.id = "ref";
  config.model = "fashion_bn_cnn";
  config.base_version = 1;
  config.max_samples = 100;
  auto session = Session::Create(config, dir, (*servable)->compiled->model_ptr(), SessionEnv{});
  ASSERT_TRUE(session.ok()) << session.status();
  std::mt19937 rng(4);
  std::normal_distribution<float> noise(0.0f, 0.1f);
  for (int i = 0; i < 40; ++i) {
    Tensor t{{1, 1, 28, 28}, std::vector<float>(784)};
    for (float& v : t.data) v = 0.3f * (0.5f + noise(rng));
    ASSERT_TRUE(watch.Sample());
    std::string raw(reinterpret_cast<const char*>(t.data.data()), t.data.size() * 4);
    RequestTensor rt;
    rt.datatype = "FP32";
    rt.shape = t.shape;
    rt.has_raw = true;
    rt.raw = raw;
    ASSERT_TRUE((*session)->Accumulate(absl::StrCat(i), absl::MakeConstSpan(&rt, 1)).ok());
    watch.Offer(*servable, {t});
  }
  watch.Flush();
  const std::string text = prometheus::TextSerializer().Serialize(registry->Collect());
  EXPECT_EQ(
      testing::MetricValue(
          text,
          "normserve_live_drift_requests_total{model=\"fashion_bn_cnn\",result=\"observed\"}"),
      40);
  auto report = (*session)->Report(false);
  ASSERT_TRUE(report.ok());
  for (const LayerSummary& l : report->layers) {
    const std::string labels =
        absl::StrCat("{layer=\"", l.info.name, "\",model=\"fashion_bn_cnn\"}");
    EXPECT_NEAR(testing::MetricValue(text, "normserve_live_drift_mean_shift" + labels),
                l.drift.mean_shift, 1e-9 * (1 + l.drift.mean_shift));
    EXPECT_NEAR(testing::MetricValue(text, "normserve_live_drift_log_var_ratio" + labels),
                l.drift.log_var_ratio, 1e-9 * (1 + l.drift.log_var_ratio));
    EXPECT_NEAR(testing::MetricValue(text, "normserve_live_drift_kl" + labels), l.drift.kl,
                1e-9 * (1 + l.drift.kl));
    EXPECT_GT(l.drift.kl, 0);
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
}

TEST(LiveDriftWatchTest, OffSamplesNothingAndAFullQueueDrops) {
  auto registry = std::make_shared<prometheus::Registry>();
  TrainingMetrics metrics(registry);
  {
    LiveDriftWatch off(LiveDriftOptions{}, &metrics);
    for (int i = 0; i < 100; ++i) EXPECT_FALSE(off.Sample());
  }
  auto servable =
      LoadServable("fashion_bn_cnn", 1, ModelPath(), FileStamp{}, {}, ServableOptions{});
  ASSERT_TRUE(servable.ok());
  LiveDriftOptions options;
  options.fraction = 1;
  options.max_queue = 2;
  LiveDriftWatch watch(options, &metrics);
  Tensor t{{1, 1, 28, 28}, std::vector<float>(784, 0.5f)};
  for (int i = 0; i < 50; ++i) watch.Offer(*servable, {t});
  watch.Flush();
  const std::string text = prometheus::TextSerializer().Serialize(registry->Collect());
  const double observed = testing::MetricValue(
      text, "normserve_live_drift_requests_total{model=\"fashion_bn_cnn\",result=\"observed\"}");
  const double dropped = testing::MetricValue(
      text, "normserve_live_drift_requests_total{model=\"fashion_bn_cnn\",result=\"dropped\"}");
  EXPECT_GT(dropped, 0);
  EXPECT_EQ(observed + dropped, 50);
}

// A model without BatchNorm (GroupNorm only) has nothing to watch; offering its requests
// must neither crash nor export drift for it (this crashed the server once).
TEST(LiveDriftWatchTest, AModelWithoutBatchNormIsIgnored) {
  auto registry = std::make_shared<prometheus::Registry>();
  TrainingMetrics metrics(registry);
  auto servable = LoadServable(
      "gn_small", 1, std::string(NORMSERVE_SOURCE_DIR) + "/models/repository/gn_small/1/model.onnx",
      FileStamp{}, {}, ServableOptions{});
  ASSERT_TRUE(servable.ok()) << servable.status();
  ASSERT_TRUE((*servable)->model().bn_layers().empty());
  LiveDriftOptions options;
  options.fraction = 1;
  LiveDriftWatch watch(options, &metrics);
  Tensor t{{1, 3, 32, 32}, std::vector<float>(3 * 32 * 32, 0.5f)};
  for (int i = 0; i < 40; ++i) watch.Offer(*servable, {t});
  watch.Flush();
  const std::string text = prometheus::TextSerializer().Serialize(registry->Collect());
  EXPECT_EQ(text.find("normserve_live_drift_mean_shift{model=\"gn_small\""), std::string::npos)
      << text;
}

}  // namespace
}  // namespace normserve
