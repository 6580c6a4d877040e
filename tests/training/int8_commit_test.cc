// QuantizeForCommit's choice of requests: every fifth held out, at most
// max_calibration_requests of the rest calibrating, evenly spaced. The oracle is
// QuantizeInt8 (tested against ONNX Runtime in tests/kernels) on the subset the header
// documents, picked here by hand: the published file must be the same bytes.
#include "service/training/int8_commit.h"

#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/int8_quantization.h"
#include "kernels/precision.h"

namespace normserve {
namespace {

std::shared_ptr<const Model> LoadModel() {
  auto m = Model::LoadFile(std::string(NORMSERVE_SOURCE_DIR) +
                           "/models/repository/fashion_bn_cnn/1/model.onnx");
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *m : nullptr;
}

std::vector<Tensor> Requests(int n) {
  std::mt19937 rng(11);
  std::normal_distribution<float> offset(0.3f, 0.2f), noise(0.0f, 0.3f);
  std::vector<Tensor> out(n);
  for (Tensor& t : out) {
    t.shape = {1, 1, 28, 28};
    const float o = offset(rng);
    for (int k = 0; k < 28 * 28; ++k) t.data.push_back(o + noise(rng));
  }
  return out;
}

class Int8CommitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CheckPrecisionSupported(Precision::kInt8, dnnl::get_effective_cpu_isa()).ok()) {
      GTEST_SKIP() << "no int8 instructions on this CPU";
    }
    model_ = LoadModel();
    ASSERT_NE(model_, nullptr);
  }
  std::string Expected(const std::vector<Tensor>& requests, const std::vector<int>& picked) {
    std::vector<const Tensor*> subset;
    for (int i : picked) subset.push_back(&requests[i]);
    Int8QuantizationOptions q;
    q.intra_op_threads = 1;
    auto r = QuantizeInt8(model_, absl::MakeConstSpan(subset), q);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->qdq_onnx : "";
  }
  std::shared_ptr<const Model> model_;
};

// 12 requests: 4 and 9 (0-based) held out; the other 10 calibrate, or 3 of them spaced
// floor((2k + 1) 10 / 6) = 1, 5, 8 into that list: requests 1, 6 and 10.
TEST_F(Int8CommitTest, CalibratesOnAnEvenlySpacedSubsetOfTheRequestsNotHeldOut) {
  const std::vector<Tensor> requests = Requests(12);
  Int8GateOptions options;
  options.intra_op_threads = 1;
  options.max_calibration_requests = 3;
  auto capped = QuantizeForCommit(model_, requests, options);
  ASSERT_TRUE(capped.ok()) << capped.status();
  EXPECT_EQ(capped->quality.calibration_samples, 3);
  EXPECT_EQ(capped->quality.held_out_samples, 2);
  EXPECT_TRUE(capped->qdq_onnx == Expected(requests, {1, 6, 10}))
      << "the capped calibration used other requests than 1, 6 and 10";

  options.max_calibration_requests = 10;  // no cap in effect
  auto all = QuantizeForCommit(model_, requests, options);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->quality.calibration_samples, 10);
  EXPECT_TRUE(all->qdq_onnx == Expected(requests, {0, 1, 2, 3, 5, 6, 7, 8, 10, 11}));
  EXPECT_FALSE(all->qdq_onnx == capped->qdq_onnx) << "the subset made no difference: no test";
}

}  // namespace
}  // namespace normserve
