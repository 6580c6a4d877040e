// Per-model metric handles: made once per serving version, and the exposition they
// produce is the one dashboards and alerts (deploy/) are written against.
#include "service/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace normserve {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(MetricsTest, HandlesAreMadeOncePerServingVersion) {
  Metrics metrics;
  metrics.SetModelVersions("m", {1, 2});
  const std::shared_ptr<ModelMetrics> v1 = metrics.ForModel("m", 1);
  EXPECT_EQ(metrics.ForModel("m", 1), v1);
  EXPECT_NE(metrics.ForModel("m", 2), v1);
  // Version 1 stops serving: its handles leave the map (a holder keeps its own).
  metrics.SetModelVersions("m", {2});
  EXPECT_NE(metrics.ForModel("m", 1), v1);
  EXPECT_EQ(metrics.ForModel("m", 2), metrics.ForModel("m", 2));
  EXPECT_EQ(metrics.Unresolved(), metrics.Unresolved());
}

TEST(MetricsTest, ModelInfoCarriesEachVersionsPrecision) {
  Metrics metrics;
  metrics.SetModelVersions("m", {1, 2}, {"fp32", "bf16"});
  std::string text = metrics.Serialize();
  EXPECT_THAT(text,
              HasSubstr("normserve_model_info{model=\"m\",precision=\"fp32\",version=\"1\"} 1"));
  EXPECT_THAT(text,
              HasSubstr("normserve_model_info{model=\"m\",precision=\"bf16\",version=\"2\"} 1"));
  // Version 2 reloaded in fp32: one series for it, with the new label.
  metrics.SetModelVersions("m", {1, 2}, {"fp32", "fp32"});
  text = metrics.Serialize();
  EXPECT_THAT(text, Not(HasSubstr("precision=\"bf16\"")));
  EXPECT_THAT(text,
              HasSubstr("normserve_model_info{model=\"m\",precision=\"fp32\",version=\"2\"} 1"));
}

TEST(MetricsTest, ExpositionKeepsItsNamesAndLabels) {
  Metrics metrics;
  metrics.SetModelVersions("resnet", {3});
  // Series appear on first use, as before the handles existed.
  EXPECT_THAT(metrics.Serialize(), Not(HasSubstr("normserve_request_duration_seconds_count")));
  std::shared_ptr<ModelMetrics> r = metrics.ForModel("resnet", 3);
  for (int i = 0; i < 2; ++i) {
    metrics.RequestStarted();
    r->ObserveQueue(absl::Milliseconds(1));
    r->ObserveCompute(absl::Milliseconds(2));
    r->RequestFinished(absl::StatusCode::kOk, absl::Milliseconds(3));
    metrics.RequestEnded();
  }
  metrics.RequestStarted();
  metrics.Unresolved()->RequestFinished(absl::StatusCode::kNotFound, absl::Milliseconds(1));
  metrics.RequestEnded();
  const std::string text = metrics.Serialize();
  EXPECT_THAT(text,
              HasSubstr("normserve_requests_total{code=\"OK\",model=\"resnet\",version=\"3\"} 2"));
  EXPECT_THAT(text,
              HasSubstr("normserve_requests_total{code=\"NOT_FOUND\",model=\"\",version=\"\"} 1"));
  EXPECT_THAT(text, HasSubstr("normserve_request_duration_seconds_count{model=\"resnet\"} 2"));
  EXPECT_THAT(text, HasSubstr("normserve_queue_duration_seconds_count{model=\"resnet\"} 2"));
  EXPECT_THAT(text, HasSubstr("normserve_compute_duration_seconds_count{model=\"resnet\"} 2"));
  EXPECT_THAT(
      text, HasSubstr("normserve_model_info{model=\"resnet\",precision=\"fp32\",version=\"3\"} 1"));
  EXPECT_THAT(text, HasSubstr("normserve_inflight_requests 0"));
}

}  // namespace
}  // namespace normserve
