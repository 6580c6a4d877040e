// Execution contexts: batch N equals N batch-1 runs, contexts run concurrently, and bad
// input is refused with the tensor's name.
#include "kernels/engine.h"

#include <array>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/npy_io.h"
#include "tests/kernels/conv_bn_fixture.h"

namespace normserve {
namespace {

using ::testing::HasSubstr;

std::shared_ptr<const CompiledModel> CompileFixture(CompileOptions o = {}) {
  testing::ConvBnFixture f;
  auto m = Model::LoadBytes(f.onnx);
  EXPECT_TRUE(m.ok()) << m.status();
  auto c = CompiledModel::Compile(*m, o);
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

// With compile_unlisted_batch_sizes the batch runs as one batch-5 plan; by default as five
// batch-1 runs (no compile on the request path). Both must equal the batch-1 outputs.
void ExpectEverySampleEqualsItsBatch1Output(const CompileOptions& o) {
  auto c = CompileFixture(o);
  auto ctx = c->NewContext();
  std::mt19937 rng(11);
  const int n = 5, per = 3 * 9 * 9;
  auto x = testing::RandomVector(n * per, &rng);
  std::vector<Tensor> batched;
  ASSERT_TRUE(ctx->Run({TensorView{x.data(), {n, 3, 9, 9}}}, &batched).ok());
  ASSERT_EQ(batched[0].shape, (std::vector<int64_t>{n, 8, 5, 5}));
  const size_t out_per = batched[0].data.size() / n;
  for (int s = 0; s < n; ++s) {
    std::vector<Tensor> single;
    ASSERT_TRUE(ctx->Run({TensorView{x.data() + s * per, {1, 3, 9, 9}}}, &single).ok());
    for (size_t i = 0; i < out_per; ++i)
      EXPECT_NEAR(single[0].data[i], batched[0].data[s * out_per + i], 1e-5);
  }
}

TEST(Engine, EverySampleOfABatchEqualsItsBatch1Output) {
  CompileOptions o;
  o.compile_unlisted_batch_sizes = true;
  ExpectEverySampleEqualsItsBatch1Output(o);
}

TEST(Engine, AnUnlistedBatchRunsAsPrecompiledBatchesWithoutCompiling) {
  CompileOptions o;
  o.precompile_batch_sizes = {1, 2};
  ExpectEverySampleEqualsItsBatch1Output(o);
  auto c = CompileFixture(o);
  std::vector<float> x(7 * 3 * 9 * 9, 0.25f);
  std::vector<Tensor> out;
  ASSERT_TRUE(c->NewContext()->Run({TensorView{x.data(), {7, 3, 9, 9}}}, &out).ok());
  EXPECT_EQ(out[0].shape, (std::vector<int64_t>{7, 8, 5, 5}));
  EXPECT_EQ(c->plan_cache_stats().compiles, 0);
  EXPECT_EQ(c->plan_cache_stats().entries, 2);  // the two precompiled plans only
}

// Issue 9: one request per batch size 1..32 grew a server by 5 GB. Whatever the batch
// sizes, the plans kept stay under the byte budget, and every run still gets its plan
// (an eviction once erased the entry it was about to return).
TEST(Engine, PlansForManyBatchSizesStayUnderTheByteBudget) {
  CompileOptions o;
  o.compile_unlisted_batch_sizes = true;
  const size_t pinned = static_cast<size_t>(CompileFixture(o)->plan_cache_stats().pinned_bytes);
  o.plan_cache_bytes = pinned * 3;  // room for a few small-batch plans
  auto c = CompileFixture(o);
  std::mt19937 rng(13);
  auto x = testing::RandomVector(12 * 3 * 9 * 9, &rng);
  auto ctx = c->NewContext();
  for (int64_t b = 2; b <= 12; ++b) {
    std::vector<Tensor> out;
    ASSERT_TRUE(ctx->Run({TensorView{x.data(), {b, 3, 9, 9}}}, &out).ok()) << b;
    std::vector<Tensor> again;
    ASSERT_TRUE(c->NewContext()->Run({TensorView{x.data(), {b, 3, 9, 9}}}, &again).ok()) << b;
    EXPECT_EQ(out[0].data, again[0].data);
    EXPECT_LE(c->plan_cache_stats().bytes - c->plan_cache_stats().pinned_bytes,
              static_cast<int64_t>(pinned * 3));
  }
  EXPECT_GT(c->plan_cache_stats().evictions, 0);
  EXPECT_EQ(c->plan_cache_stats().compiles, 11);
}

TEST(Engine, ContextsRunConcurrentlyWithIdenticalResults) {
  auto c = CompileFixture();
  std::mt19937 rng(12);
  auto x = testing::RandomVector(3 * 9 * 9, &rng);
  std::vector<Tensor> want;
  ASSERT_TRUE(c->NewContext()->Run({TensorView{x.data(), {1, 3, 9, 9}}}, &want).ok());
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0}, failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      auto ctx = c->NewContext();
      for (int i = 0; i < 200; ++i) {
        std::vector<Tensor> got;
        if (!ctx->Run({TensorView{x.data(), {1, 3, 9, 9}}}, &got).ok())
          ++failures;
        else if (got[0].data != want[0].data)
          ++mismatches;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
}

// Issue 8: a model exported with dynamic H and W is served at any size within the limit:
// the first run at a new size compiles its plan (counted), later ones hit the cache, and
// every size matches the float64 reference.
TEST(Engine, DynamicSpatialDimsServeEverySizeAgainstTheReference) {
  testing::ConvBnFixture f(7, -1, /*dynamic_spatial=*/true);
  auto m = Model::LoadBytes(f.onnx);
  ASSERT_TRUE(m.ok()) << m.status();
  CompileOptions o;
  o.max_dynamic_dim = 40;
  o.precompile_shapes = {{1, 3, 9, 9}};
  auto c = CompiledModel::Compile(*m, o);
  ASSERT_TRUE(c.ok()) << c.status();
  auto ctx = (*c)->NewContext();
  std::mt19937 rng(21);
  int compiles = 0;
  for (auto [n, h, w] : std::vector<std::array<int, 3>>{
           {1, 9, 9}, {1, 16, 12}, {2, 16, 12}, {1, 31, 7}, {1, 16, 12}}) {
    auto x = testing::RandomVector(static_cast<size_t>(n) * 3 * h * w, &rng);
    std::vector<Tensor> out;
    ASSERT_TRUE(ctx->Run({TensorView{x.data(), {n, 3, h, w}}}, &out).ok()) << h << "x" << w;
    const std::vector<double> want = f.Ref(x, n, h, w);
    ASSERT_EQ(out[0].data.size(), want.size());
    EXPECT_EQ(out[0].shape, (std::vector<int64_t>{n, 8, (h - 1) / 2 + 1, (w - 1) / 2 + 1}));
    for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(out[0].data[i], want[i], 1e-4) << i;
  }
  // New sizes 16x12 and 31x7 at batch 1 (batch 2 runs as two batch-1 runs); 9x9 is
  // precompiled and the second 16x12 is a hit.
  compiles = static_cast<int>((*c)->plan_cache_stats().compiles);
  EXPECT_EQ(compiles, 2);
  std::vector<float> big(3 * 41 * 9);
  std::vector<Tensor> out;
  auto s = ctx->Run({TensorView{big.data(), {1, 3, 41, 9}}}, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("dim 2 (41) is outside [1, 40] (max_dynamic_dim)"));
}

TEST(Engine, WrongShapeNamesTheInput) {
  auto c = CompileFixture();
  std::vector<float> x(3 * 8 * 9);
  std::vector<Tensor> out;
  auto s = c->NewContext()->Run({TensorView{x.data(), {1, 3, 8, 9}}}, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("input \"x\": expected shape [1,3,9,9], got [1,3,8,9]"));
}

TEST(Engine, BatchAboveLimitIsRefused) {
  CompileOptions o;
  o.max_batch = 4;
  auto c = CompileFixture(o);
  std::vector<float> x(5 * 3 * 9 * 9);
  std::vector<Tensor> out;
  auto s = c->NewContext()->Run({TensorView{x.data(), {5, 3, 9, 9}}}, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("batch 5 is outside [1, 4]"));
}

TEST(Engine, WrongInputCountIsRefused) {
  auto c = CompileFixture();
  std::vector<Tensor> out;
  EXPECT_EQ(c->NewContext()->Run({}, &out).code(), absl::StatusCode::kInvalidArgument);
}

// A model run in two slices (kept activation in between, written by RunInto into the
// caller's buffer) gives the float64 reference; the tail's batch norm starts from a plain
// input, which the planner reorders to the blocked layout.
TEST(ModelSlice, HeadThenTailEqualsTheFloat64Reference) {
  testing::ConvBnFixture f;
  auto m = Model::LoadBytes(f.onnx);
  ASSERT_TRUE(m.ok()) << m.status();
  auto head = (*m)->Slice({ValueSpec{"x", ElementType::kFloat32, {-1, 3, 9, 9}}}, {"c"});
  auto tail = (*m)->Slice({ValueSpec{"c", ElementType::kFloat32, {-1, 8, 5, 5}}}, {"y"});
  ASSERT_TRUE(head.ok() && tail.ok()) << head.status() << tail.status();
  EXPECT_EQ((*head)->bn_layers().size(), 0u);
  ASSERT_EQ((*tail)->bn_layers().size(), 1u);
  EXPECT_EQ((*tail)->outputs()[0].shape, (std::vector<int64_t>{-1, 8, 5, 5}));
  auto hc = CompiledModel::Compile(*head);
  auto tc = CompiledModel::Compile(*tail);
  ASSERT_TRUE(hc.ok() && tc.ok()) << hc.status() << tc.status();
  std::mt19937 rng(5);
  const int n = 3;
  auto x = testing::RandomVector(n * 3 * 9 * 9, &rng);
  std::vector<float> c(n * 8 * 5 * 5, -1.f);
  std::vector<float*> into = {c.data()};
  ASSERT_TRUE((*hc)->NewContext()->RunInto({TensorView{x.data(), {n, 3, 9, 9}}}, into).ok());
  std::vector<Tensor> y;
  ASSERT_TRUE((*tc)->NewContext()->Run({TensorView{c.data(), {n, 8, 5, 5}}}, &y).ok());
  const auto want = f.Ref(x, n);
  ASSERT_EQ(y[0].data.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(y[0].data[i], want[i], 1e-4) << i;
  auto bytes = (*tail)->SerializeOnnx();
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(ModelSlice, BadCutsNameTheValue) {
  testing::ConvBnFixture f;
  auto m = Model::LoadBytes(f.onnx);
  ASSERT_TRUE(m.ok());
  auto unknown = (*m)->Slice({ValueSpec{"nope", ElementType::kFloat32, {-1, 8}}}, {"y"});
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("\"nope\""));
  // "y" needs "x", which is neither given nor computable.
  auto missing = (*m)->Slice({ValueSpec{"n", ElementType::kFloat32, {-1, 8, 5, 5}}}, {"y", "c"});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("\"x\""));
}

TEST(Engine, RunIntoChecksTheOutputBuffers) {
  auto c = CompileFixture();
  std::vector<float> x(3 * 9 * 9, 0.5f), y(8 * 5 * 5);
  auto ctx = c->NewContext();
  auto none = ctx->RunInto({TensorView{x.data(), {1, 3, 9, 9}}}, {});
  EXPECT_EQ(none.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(none.message()), HasSubstr("expected 1 output buffers"));
  std::vector<float*> null_out = {nullptr};
  EXPECT_EQ(ctx->RunInto({TensorView{x.data(), {1, 3, 9, 9}}}, null_out).code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<float*> out = {y.data()};
  ASSERT_TRUE(ctx->RunInto({TensorView{x.data(), {1, 3, 9, 9}}}, out).ok());
  std::vector<Tensor> ref;
  ASSERT_TRUE(ctx->Run({TensorView{x.data(), {1, 3, 9, 9}}}, &ref).ok());
  EXPECT_EQ(ref[0].data, y);
}

TEST(NpyIo, RoundTripsAndRejectsTruncation) {
  Tensor t{{2, 3}, {1, 2, 3, 4, 5, 6}};
  const std::string bytes = SerializeNpy(t);
  auto back = ParseNpy(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->shape, t.shape);
  EXPECT_EQ(back->data, t.data);
  EXPECT_FALSE(ParseNpy(bytes.substr(0, bytes.size() - 1)).ok());
}

}  // namespace
}  // namespace normserve
