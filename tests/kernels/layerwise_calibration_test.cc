// Layer-wise recalibration matches the PyTorch float64 oracle per channel, and one-layer
// calibration equals the float64 moments of the layer input.
#include "kernels/layerwise_calibration.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/npy_io.h"
#include "onnx/onnx_pb.h"
#include "tests/kernels/conv_bn_fixture.h"

namespace normserve {
namespace {

std::string TestData(const std::string& rel) {
  const char* dir = std::getenv("NORMSERVE_TESTDATA");
  return std::string(dir ? dir : "testdata") + "/" + rel;
}

// Every layer's committed mean and variance in `got` equal `want`'s within `rel` of the
// channel's standard deviation (variance).
void ExpectSameStatistics(const CalibrationResult& got, const CalibrationResult& want, double rel) {
  ASSERT_EQ(got.layers.size(), want.layers.size());
  for (size_t i = 0; i < want.layers.size(); ++i) {
    const BnStatistics& w = want.layers[i].committed;
    const BnStatistics& g = got.layers[i].committed;
    ASSERT_EQ(g.mean.size(), w.mean.size()) << want.layers[i].info.name;
    for (size_t ch = 0; ch < w.mean.size(); ++ch) {
      EXPECT_NEAR(g.mean[ch], w.mean[ch], rel * std::sqrt(w.var[ch]) + 1e-7)
          << want.layers[i].info.name << " channel " << ch;
      EXPECT_NEAR(g.var[ch], w.var[ch], rel * w.var[ch] + 1e-9)
          << want.layers[i].info.name << " channel " << ch;
    }
  }
}

TEST(LayerwiseCalibration, SingleLayerEqualsFloat64MomentsOfItsInput) {
  testing::ConvBnFixture f;
  auto m = Model::LoadBytes(f.onnx);
  ASSERT_TRUE(m.ok());
  std::mt19937 rng(31);
  std::vector<Tensor> samples;
  std::vector<float> all;
  for (int k = 0; k < 7; ++k) {
    auto x = testing::RandomVector(3 * 81, &rng, -2.f, 2.f);
    all.insert(all.end(), x.begin(), x.end());
    samples.push_back(Tensor{{1, 3, 9, 9}, x});
  }
  CalibrationOptions o;
  o.batch = 3;  // uneven split: 3 + 3 + 1
  auto r = CalibrateLayerwise(*m, samples, o);
  ASSERT_TRUE(r.ok()) << r.status();
  const auto conv = f.ConvRef(all, 7);
  for (int c = 0; c < 8; ++c) {
    double sum = 0, n = 0;
    for (int k = 0; k < 7; ++k)
      for (int i = 0; i < 25; ++i) sum += conv[(k * 8 + c) * 25 + i], ++n;
    const double mean = sum / n;
    double m2 = 0;
    for (int k = 0; k < 7; ++k)
      for (int i = 0; i < 25; ++i) m2 += std::pow(conv[(k * 8 + c) * 25 + i] - mean, 2);
    EXPECT_NEAR(r->layers[0].committed.mean[c], mean, 1e-5);
    EXPECT_NEAR(r->layers[0].committed.var[c], m2 / (n - 1), 1e-5 * m2 / n);
  }
  EXPECT_EQ(r->layers[0].accumulator.requests(), 7);
  auto stored = r->model->GetBnStatistics("bn");
  ASSERT_TRUE(stored.ok());
  EXPECT_NEAR(stored->var[3], r->layers[0].committed.var[3], 1e-6 * stored->var[3]);
}

// The oracle's samples, one batch-1 tensor each.
std::vector<Tensor> OracleSamples(const std::string& name) {
  auto samples_t = ReadNpyFile(TestData("oracle_" + name + "/samples.npy"));
  EXPECT_TRUE(samples_t.ok()) << samples_t.status();
  std::vector<Tensor> samples;
  if (!samples_t.ok()) return samples;
  const int64_t k = samples_t->shape[0];
  const size_t per = samples_t->data.size() / k;
  for (int64_t i = 0; i < k; ++i) {
    std::vector<int64_t> shape = samples_t->shape;
    shape[0] = 1;
    samples.push_back(Tensor{shape, std::vector<float>(samples_t->data.begin() + i * per,
                                                       samples_t->data.begin() + (i + 1) * per)});
  }
  return samples;
}

// The conv-BN-ReLU fixture with a head Reshape(shape) -> BatchNormalization(200 channels),
// where shape is [1, -1] (a model exported for batch 1: PyTorch bakes the batch into the
// reshape) or [0, -1] (the batch copied, a dynamic model).
std::string WithFlattenedBnHead(const std::string& conv_bn, bool fixed_batch) {
  onnx::ModelProto m;
  EXPECT_TRUE(m.ParseFromString(conv_bn));
  auto* g = m.mutable_graph();
  auto* shape = g->add_initializer();
  shape->set_name("flat_shape");
  shape->set_data_type(onnx::TensorProto::INT64);
  shape->add_dims(2);
  shape->add_int64_data(fixed_batch ? 1 : 0);
  shape->add_int64_data(-1);
  for (const char* name : {"g2", "b2", "m2", "v2"}) {
    auto* t = g->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    t->add_dims(200);
    for (int i = 0; i < 200; ++i)
      t->add_float_data(std::string(name) == "g2" || std::string(name) == "v2" ? 1.f : 0.f);
  }
  auto* reshape = g->add_node();
  reshape->set_op_type("Reshape");
  reshape->set_name("flatten");
  reshape->add_input("y");
  reshape->add_input("flat_shape");
  reshape->add_output("flat");
  auto* bn = g->add_node();
  bn->set_op_type("BatchNormalization");
  bn->set_name("bn2");
  for (const char* in : {"flat", "g2", "b2", "m2", "v2"}) bn->add_input(in);
  bn->add_output("z");
  auto* out = g->mutable_output(0);
  out->set_name("z");
  auto* dims = out->mutable_type()->mutable_tensor_type()->mutable_shape();
  dims->mutable_dim(1)->set_dim_value(200);
  while (dims->dim_size() > 2) dims->mutable_dim()->RemoveLast();
  return m.SerializeAsString();
}

// A model exported with a fixed batch of 1 cannot be batched (its reshape would fold
// samples together) nor keep cuts; it still calibrates, sample by sample, to the
// statistics of the same model with a dynamic batch.
TEST(LayerwiseCalibration, FixedBatchModelRunsSampleBySample) {
  testing::ConvBnFixture dynamic, fixed(7, 1);
  auto md = Model::LoadBytes(WithFlattenedBnHead(dynamic.onnx, false));
  auto mf = Model::LoadBytes(WithFlattenedBnHead(fixed.onnx, true));
  ASSERT_TRUE(md.ok() && mf.ok()) << md.status() << mf.status();
  std::mt19937 rng(3);
  std::vector<Tensor> samples;
  for (int k = 0; k < 5; ++k)
    samples.push_back(Tensor{{1, 3, 9, 9}, testing::RandomVector(3 * 81, &rng)});
  auto a = CalibrateLayerwise(*md, samples);
  auto b = CalibrateLayerwise(*mf, samples);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_GT(a->peak_cached_bytes, 0);
  EXPECT_EQ(b->peak_cached_bytes, 0);
  ASSERT_EQ(a->layers.size(), 2u);
  ExpectSameStatistics(*b, *a, 1e-5);
}

class OracleTest : public ::testing::TestWithParam<std::string> {};

TEST_P(OracleTest, MatchesPyTorchFloat64LayerByLayer) {
  const std::string name = GetParam();
  auto m = Model::LoadFile(TestData(name + "/model.onnx"));
  ASSERT_TRUE(m.ok()) << m.status();
  const std::vector<Tensor> samples = OracleSamples(name);
  ASSERT_FALSE(samples.empty());
  CalibrationOptions o;
  o.intra_op_threads = 2;
  auto r = CalibrateLayerwise(*m, samples, o);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_FALSE(r->layers.empty());
  // Every wave after the first starts from the kept cut (the default budget holds it).
  EXPECT_EQ(r->waves_from_cache, r->waves - 1);
  double worst_mean = 0, worst_var = 0;  // relative to the oracle's sd and variance
  for (const auto& l : r->layers) {
    std::string module = l.info.mean_initializer;
    module = module.substr(0, module.rfind(".running_mean"));
    auto mean = ReadNpyFile(TestData("oracle_" + name + "/" + module + ".mean.npy"));
    auto var = ReadNpyFile(TestData("oracle_" + name + "/" + module + ".var.npy"));
    ASSERT_TRUE(mean.ok() && var.ok()) << module;
    ASSERT_EQ(mean->data.size(), l.committed.mean.size());
    for (size_t c = 0; c < mean->data.size(); ++c) {
      const double sd = std::sqrt(var->data[c]);
      EXPECT_NEAR(l.committed.mean[c], mean->data[c], 1e-4 * sd + 1e-6)
          << l.info.name << " channel " << c;
      EXPECT_NEAR(l.committed.var[c], var->data[c], 1e-4 * var->data[c] + 1e-9)
          << l.info.name << " channel " << c;
      worst_mean = std::max(worst_mean, std::abs(l.committed.mean[c] - mean->data[c]) / sd);
      worst_var = std::max(worst_var, std::abs(l.committed.var[c] - var->data[c]) / var->data[c]);
    }
  }
  std::printf(
      "%s: %zu BN layers in %d waves, worst |mean error| / sd %.3g, worst |var error| / var %.3g\n",
      name.c_str(), r->layers.size(), r->waves, worst_mean, worst_var);
}

INSTANTIATE_TEST_SUITE_P(Models, OracleTest,
                         ::testing::Values("bn1d_head", "resnet18",
                                           // BN behind concatenations
                                           "densenet121",
                                           // BN behind channel splits (Slice)
                                           "shufflenet_v2"));

// Starting a wave from kept activations runs a different (sliced, partly unfolded) plan
// than replaying from the input; the statistics must not notice. The middle budget is
// below the ResNet-18 stem's cut (6 samples x 64x112x112 floats = 19.3 MB) and above
// every later one, so the first cached wave also starts from the input.
TEST(LayerwiseCalibration, KeptCutsGiveTheStatisticsOfReplaysFromTheInput) {
  auto m = Model::LoadFile(TestData("resnet18/model.onnx"));
  ASSERT_TRUE(m.ok()) << m.status();
  const std::vector<Tensor> samples = OracleSamples("resnet18");
  ASSERT_EQ(samples.size(), 6u);
  CalibrationOptions replay, middle, full;
  replay.max_cached_bytes = 0;
  middle.max_cached_bytes = 16 << 20;
  for (CalibrationOptions* o : {&replay, &middle, &full}) o->batch = 4;  // 4 + 2
  std::vector<CalibrationProgress> progress;
  middle.on_progress = [&](const CalibrationProgress& p) { progress.push_back(p); };
  auto a = CalibrateLayerwise(*m, samples, replay);
  auto b = CalibrateLayerwise(*m, samples, middle);
  auto c = CalibrateLayerwise(*m, samples, full);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok()) << a.status() << b.status() << c.status();
  EXPECT_EQ(a->waves_from_cache, 0);
  EXPECT_EQ(a->peak_cached_bytes, 0);
  EXPECT_EQ(b->waves_from_cache, b->waves - 2);
  EXPECT_GT(b->peak_cached_bytes, 0);
  EXPECT_LE(b->peak_cached_bytes, middle.max_cached_bytes);
  EXPECT_EQ(c->waves_from_cache, c->waves - 1);
  EXPECT_GE(c->peak_cached_bytes, int64_t{6} * 64 * 112 * 112 * 4);
  ExpectSameStatistics(*b, *a, 1e-5);
  ExpectSameStatistics(*c, *a, 1e-5);

  // Progress: every wave announced at its start, forward chunks of 4 then 2 samples, the
  // end reported whole, never going back.
  ASSERT_FALSE(progress.empty());
  std::vector<int> starts;
  for (size_t i = 0; i < progress.size(); ++i) {
    const CalibrationProgress& p = progress[i];
    EXPECT_EQ(p.waves_total, b->waves);
    EXPECT_EQ(p.samples_total, 6);
    EXPECT_TRUE(p.samples_done == 0 || p.samples_done == 4 || p.samples_done == 6) << i;
    if (p.samples_done == 0) starts.push_back(p.waves_done);
    if (i > 0) {
      const CalibrationProgress& q = progress[i - 1];
      EXPECT_TRUE(p.waves_done > q.waves_done ||
                  (p.waves_done == q.waves_done && p.samples_done > q.samples_done))
          << "report " << i << " is not after report " << i - 1;
    }
  }
  std::vector<int> every_wave(b->waves);
  std::iota(every_wave.begin(), every_wave.end(), 0);
  EXPECT_EQ(starts, every_wave);
  EXPECT_EQ(progress.back().waves_done, b->waves);
  EXPECT_EQ(progress.back().samples_done, 6);
}

// MobileNetV2: depthwise convolutions, ReLU6 (Clip), residual Adds without an activation,
// 52 waves. Kept cuts give the replay's statistics.
TEST(LayerwiseCalibration, KeptCutsMatchTheReplayOnMobileNetV2) {
  auto m = Model::LoadFile(TestData("mobilenet_v2/model.onnx"));
  ASSERT_TRUE(m.ok()) << m.status();
  std::mt19937 rng(17);
  std::vector<Tensor> samples;
  for (int k = 0; k < 3; ++k)
    samples.push_back(Tensor{{1, 3, 224, 224}, testing::RandomVector(3 * 224 * 224, &rng)});
  CalibrationOptions replay, kept;
  replay.max_cached_bytes = 0;
  auto a = CalibrateLayerwise(*m, samples, replay);
  auto b = CalibrateLayerwise(*m, samples, kept);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
  EXPECT_EQ(b->waves_from_cache, b->waves - 1);
  ExpectSameStatistics(*b, *a, 1e-4);
}

TEST(LayerwiseCalibration, WavesFollowBnDependencies) {
  auto m = Model::LoadFile(TestData("resnet18/model.onnx"));
  ASSERT_TRUE(m.ok());
  const auto waves = BnLayerWaves(**m);
  ASSERT_EQ(waves.size(), 20u);
  EXPECT_EQ(waves[0], 0);  // the stem BN has no BN upstream
  // A downsample BN sees only the block input, so it is in an earlier wave than bn2 of
  // the same block would be followed by: it never depends on that block's own BNs.
  int max_wave = *std::max_element(waves.begin(), waves.end());
  EXPECT_LT(max_wave, 20);
  for (size_t i = 1; i < waves.size(); ++i) EXPECT_GE(waves[i], 1);
}

}  // namespace
}  // namespace normserve
