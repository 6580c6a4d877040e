// The check every training integration test makes of a published version: its BN
// statistics are those CalibrateLayerwise computes on the same samples from the base.
#ifndef NORMSERVE_TESTS_TRAINING_EXPECT_LAYERWISE_STATISTICS_H_
#define NORMSERVE_TESTS_TRAINING_EXPECT_LAYERWISE_STATISTICS_H_

#include <cmath>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/layerwise_calibration.h"
#include "kernels/model.h"
#include "kernels/tensor.h"

namespace normserve {
namespace testing {

// `published` carries, layer by layer, the statistics of `samples` through `base` (to
// 1e-6 relative: the ONNX file stores float32).
inline void ExpectLayerwiseStatistics(const std::shared_ptr<const Model>& base,
                                      const std::vector<Tensor>& samples, const Model& published) {
  auto oracle = CalibrateLayerwise(base, samples);
  ASSERT_TRUE(oracle.ok()) << oracle.status();
  for (const CalibratedLayer& l : oracle->layers) {
    auto stats = published.GetBnStatistics(l.info.name);
    ASSERT_TRUE(stats.ok()) << l.info.name;
    for (size_t c = 0; c < l.committed.mean.size(); ++c) {
      EXPECT_NEAR(stats->mean[c], l.committed.mean[c], 1e-6 * (1 + std::abs(l.committed.mean[c])))
          << l.info.name;
      EXPECT_NEAR(stats->var[c], l.committed.var[c], 1e-6 * (1 + l.committed.var[c]))
          << l.info.name;
    }
  }
}

}  // namespace testing
}  // namespace normserve

#endif  // NORMSERVE_TESTS_TRAINING_EXPECT_LAYERWISE_STATISTICS_H_
