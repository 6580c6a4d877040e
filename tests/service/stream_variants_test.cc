// Stream variants as LoadServable builds them: one real compile per thread count the hint
// allows, contexts made and warmed at load, the same answers from every variant, and a
// clear refusal of a bad hint. Runs real multi-thread OpenMP, so it is not in the TSan run.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <omp.h>

#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "service/inference_scheduler.h"
#include "service/servable.h"

namespace normserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string TinyPath() {
  return std::string(NORMSERVE_SOURCE_DIR) + "/models/repository/tiny_bn/1/model.onnx";
}

absl::StatusOr<std::shared_ptr<const Servable>> Load(const std::string& json_hint,
                                                     PerformanceHint server_hint, int cores,
                                                     int config_threads = 0) {
  normserve::v1::ModelConfig config;
  config.set_performance_hint(json_hint);
  config.set_intra_op_threads(config_threads);
  ServableOptions options;
  options.cores = cores;
  options.max_streams = cores;
  options.performance_hint = server_hint;
  return LoadServable("tiny_bn", 1, TinyPath(), {}, config, options);
}

std::vector<int> Threads(const Servable& s) {
  std::vector<int> out;
  for (const StreamVariant& v : s.variants) {
    // What the engine was compiled for and runs with must be what the scheduler counts.
    EXPECT_EQ(v.compiled->options().intra_op_threads, v.threads);
    out.push_back(v.threads);
  }
  return out;
}

TEST(StreamVariantsTest, EachHintCompilesItsThreadCounts) {
  auto a = Load("", PerformanceHint::kAuto, 4);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(Threads(**a), ElementsAre(4, 2, 1));
  EXPECT_EQ((*a)->compiled, (*a)->variants[0].compiled);
  // As many contexts as streams of that size fit in the budget, made at load.
  EXPECT_EQ((*a)->variants[0].contexts->prepared(), 1);
  EXPECT_EQ((*a)->variants[1].contexts->prepared(), 2);
  EXPECT_EQ((*a)->variants[2].contexts->prepared(), 4);

  auto latency = Load("latency", PerformanceHint::kAuto, 4);
  ASSERT_TRUE(latency.ok()) << latency.status();
  EXPECT_THAT(Threads(**latency), ElementsAre(4));
  EXPECT_EQ((*latency)->performance_hint, PerformanceHint::kLatency);

  auto throughput = Load("", PerformanceHint::kThroughput, 4);
  ASSERT_TRUE(throughput.ok()) << throughput.status();
  EXPECT_THAT(Threads(**throughput), ElementsAre(1));
  EXPECT_EQ((*throughput)->variants[0].contexts->prepared(), 4);

  // An explicit thread count fixes the shape, whatever the hint.
  auto fixed = Load("auto", PerformanceHint::kAuto, 4, /*config_threads=*/2);
  ASSERT_TRUE(fixed.ok()) << fixed.status();
  EXPECT_THAT(Threads(**fixed), ElementsAre(2));

  // A budget that is not a power of two halves down to one thread.
  auto six = Load("auto", PerformanceHint::kLatency, 6);
  ASSERT_TRUE(six.ok()) << six.status();
  EXPECT_THAT(Threads(**six), ElementsAre(6, 3, 1));
}

TEST(StreamVariantsTest, DynamicBatchingPrecompilesItsSizesAndIsBounded) {
  normserve::v1::ModelConfig config;
  config.mutable_dynamic_batching()->set_max_batch_size(8);
  config.mutable_dynamic_batching()->set_max_queue_delay_microseconds(250);
  ServableOptions options;
  auto s = LoadServable("tiny_bn", 1, TinyPath(), {}, config, options);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ((*s)->batch_limit, 8);
  EXPECT_EQ((*s)->batch_delay, absl::Microseconds(250));
  EXPECT_THAT((*s)->compiled->options().precompile_batch_sizes, ElementsAre(1, 2, 4, 8));

  config.set_max_batch_size(4);
  auto over = LoadServable("tiny_bn", 1, TinyPath(), {}, config, options);
  ASSERT_FALSE(over.ok());
  EXPECT_THAT(over.status().message(),
              HasSubstr("dynamic_batching.max_batch_size 8 is above the model's max_batch_size 4"));
}

TEST(StreamVariantsTest, BadHintInConfigIsRefusedNamingTheFileAndValue) {
  auto bad = Load("fastest", PerformanceHint::kAuto, 2);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("tiny_bn/1/model.onnx"));
  EXPECT_THAT(bad.status().message(), HasSubstr("\"fastest\""));
  EXPECT_THAT(bad.status().message(), HasSubstr("latency, throughput, auto"));
  EXPECT_FALSE(ParsePerformanceHint("Latency", "--performance_hint").ok());
}

// Every variant answers the same (only the threads differ), and the scheduler runs them
// with the contexts prepared at load.
TEST(StreamVariantsTest, VariantsAgreeAndRunFromPreparedContexts) {
  auto s = Load("auto", PerformanceHint::kAuto, 2);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_THAT(Threads(**s), ElementsAre(2, 1));
  Tensor x;
  x.shape = {1, 3, 8, 8};
  for (int i = 0; i < 192; ++i) x.data.push_back(0.01f * static_cast<float>(i % 37) - 0.2f);
  const std::vector<TensorView> views = {{x.data.data(), x.shape}};
  std::vector<std::vector<float>> answers;
  for (const StreamVariant& v : (*s)->variants) {
    std::unique_ptr<ExecutionContext> ctx = v.contexts->Acquire();
    ASSERT_NE(ctx, nullptr);
    std::vector<Tensor> out;
    ASSERT_TRUE(ctx->Run(views, &out).ok());
    // The run used the variant's thread count (set by the engine on this thread).
    EXPECT_EQ(omp_get_max_threads(), v.threads);
    v.contexts->Release(std::move(ctx));
    answers.push_back(out[0].data);
  }
  ASSERT_EQ(answers.size(), 2u);
  ASSERT_EQ(answers[0].size(), answers[1].size());
  for (size_t i = 0; i < answers[0].size(); ++i) {
    EXPECT_NEAR(answers[0][i], answers[1][i], 1e-5f * (1.0f + std::abs(answers[0][i])));
  }

  InferenceScheduler scheduler({2, 16, 2});
  std::vector<std::unique_ptr<absl::Notification>> done;
  std::vector<absl::StatusOr<InferenceResult>> results(8, absl::UnknownError("not run"));
  for (int i = 0; i < 8; ++i) {
    done.push_back(std::make_unique<absl::Notification>());
    InferenceTask task;
    task.servable = *s;
    task.inputs = {x};
    task.done = [&results, &done, i](absl::StatusOr<InferenceResult> r) {
      results[i] = std::move(r);
      done[i]->Notify();
    };
    ASSERT_TRUE(scheduler.Submit(std::move(task)).ok());
  }
  for (int i = 0; i < 8; ++i) {
    done[i]->WaitForNotification();
    ASSERT_TRUE(results[i].ok()) << results[i].status();
    for (size_t k = 0; k < answers[0].size(); ++k) {
      EXPECT_NEAR(results[i]->outputs[0].data[k], answers[0][k],
                  1e-5f * (1.0f + std::abs(answers[0][k])));
    }
  }
  scheduler.Shutdown();
  for (const StreamVariant& v : (*s)->variants) EXPECT_EQ(v.contexts->created_on_demand(), 0);
}

}  // namespace
}  // namespace normserve
