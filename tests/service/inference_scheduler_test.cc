// The worker pool on a real (tiny) compiled model: results, queue limit, deadlines,
// cancellation and shutdown, with a gate that holds the single worker deterministically.
#include "service/inference_scheduler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/synchronization/notification.h"

namespace normserve {
namespace {

std::shared_ptr<const Servable> TinyServable() {
  const std::string path =
      std::string(NORMSERVE_SOURCE_DIR) + "/models/repository/tiny_bn/1/model.onnx";
  absl::StatusOr<std::shared_ptr<const Servable>> s =
      LoadServable("tiny_bn", 1, path, {}, {}, ServableOptions{1, false, 0});
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : nullptr;
}

Tensor TinyInput() {
  Tensor t;
  t.shape = {1, 3, 8, 8};
  t.data.assign(192, 0.5f);
  return t;
}

struct Outcome {
  absl::Notification done;
  absl::StatusOr<InferenceResult> result = absl::UnknownError("not run");
};

InferenceTask Task(const std::shared_ptr<const Servable>& s, Outcome* outcome) {
  InferenceTask task;
  task.servable = s;
  task.inputs = {TinyInput()};
  task.done = [outcome](absl::StatusOr<InferenceResult> r) {
    outcome->result = std::move(r);
    outcome->done.Notify();
  };
  return task;
}

TEST(InferenceSchedulerTest, RunsAndTimes) {
  auto servable = TinyServable();
  ASSERT_NE(servable, nullptr);
  InferenceScheduler scheduler({2, 8});
  Outcome a;
  ASSERT_TRUE(scheduler.Submit(Task(servable, &a)).ok());
  a.done.WaitForNotification();
  ASSERT_TRUE(a.result.ok()) << a.result.status();
  ASSERT_EQ(a.result->outputs.size(), 1u);
  EXPECT_EQ(a.result->outputs[0].shape, (std::vector<int64_t>{1, 10}));
  EXPECT_GT(a.result->compute_time, absl::ZeroDuration());
}

TEST(InferenceSchedulerTest, FullQueueRefusesAtOnceAndSkipsExpiredAndCancelledWork) {
  auto servable = TinyServable();
  ASSERT_NE(servable, nullptr);
  InferenceScheduler scheduler({1, 2});
  absl::Notification running, release;
  Outcome blocker, expired, cancelled;
  InferenceTask hold = Task(servable, &blocker);
  // The worker calls `cancelled` first thing: a gate that keeps the only worker busy.
  hold.cancelled = [&] {
    running.Notify();
    release.WaitForNotification();
    return false;
  };
  ASSERT_TRUE(scheduler.Submit(std::move(hold)).ok());
  running.WaitForNotification();

  InferenceTask late = Task(servable, &expired);
  late.deadline = absl::Now() + absl::Milliseconds(1);
  ASSERT_TRUE(scheduler.Submit(std::move(late)).ok());
  InferenceTask gone = Task(servable, &cancelled);
  gone.cancelled = [] { return true; };
  ASSERT_TRUE(scheduler.Submit(std::move(gone)).ok());
  EXPECT_EQ(scheduler.queued(), 2);

  Outcome refused;
  const absl::Status full = scheduler.Submit(Task(servable, &refused));
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(full.message()), ::testing::HasSubstr("queue is full"));
  EXPECT_FALSE(refused.done.HasBeenNotified());

  absl::SleepFor(absl::Milliseconds(20));  // the queued task's deadline passes
  release.Notify();
  blocker.done.WaitForNotification();
  expired.done.WaitForNotification();
  cancelled.done.WaitForNotification();
  EXPECT_TRUE(blocker.result.ok()) << blocker.result.status();
  EXPECT_EQ(expired.result.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(cancelled.result.status().code(), absl::StatusCode::kCancelled);
}

TEST(InferenceSchedulerTest, ShutdownRunsQueuedWorkThenRefuses) {
  auto servable = TinyServable();
  ASSERT_NE(servable, nullptr);
  InferenceScheduler scheduler({1, 16});
  std::vector<std::unique_ptr<Outcome>> outcomes;
  for (int i = 0; i < 8; ++i) {
    outcomes.push_back(std::make_unique<Outcome>());
    ASSERT_TRUE(scheduler.Submit(Task(servable, outcomes.back().get())).ok());
  }
  scheduler.Shutdown();
  for (auto& o : outcomes) {
    EXPECT_TRUE(o->done.HasBeenNotified());
    EXPECT_TRUE(o->result.ok()) << o->result.status();
  }
  Outcome after;
  EXPECT_EQ(scheduler.Submit(Task(servable, &after)).code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace normserve
