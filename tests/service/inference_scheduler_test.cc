// The scheduler on a real (tiny) compiled model: results, queue limit, deadlines,
// cancellation and shutdown, with a gate that holds a worker deterministically; and the
// adaptive streams: FIFO start order across shape switches, no request lost under
// concurrent load, never more threads counted than cores.
#include "service/inference_scheduler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
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

// `base` with stream variants of the given thread counts (most first). They all run the
// one-thread compile: these tests check the scheduler's accounting and order, and the
// TSan run has one OpenMP thread (libgomp is not instrumented); stream_variants_test
// checks the real per-thread-count compiles.
std::shared_ptr<const Servable> WithVariants(const std::shared_ptr<const Servable>& base,
                                             const std::string& name, PerformanceHint hint,
                                             const std::vector<int>& threads, int cores) {
  auto s = std::make_shared<Servable>(*base);
  s->name = name;
  s->performance_hint = hint;
  s->variants.clear();
  for (int t : threads) {
    StreamVariant v;
    v.threads = t;
    v.compiled = base->compiled;
    v.contexts = std::make_shared<ContextPool>(base->compiled, cores / t, /*warm=*/false);
    s->variants.push_back(std::move(v));
  }
  return s;
}

// What the test sees of the runs, independently of the scheduler's own counters: the
// threads counted between `started` and `done` (the scheduler releases them only after
// `done` returns, so this can never be above its own count).
struct ThreadLedger {
  std::atomic<int> in_use{0};
  std::atomic<int> peak{0};
  void Start(int t) {
    const int now = in_use.fetch_add(t) + t;
    int seen = peak.load();
    while (now > seen && !peak.compare_exchange_weak(seen, now)) {
    }
  }
  void End(int t) { in_use.fetch_sub(t); }
};

struct Record {
  absl::Notification done;
  absl::StatusOr<InferenceResult> result = absl::UnknownError("not run");
  std::atomic<int> calls{0};
};

InferenceTask Recorded(const std::shared_ptr<const Servable>& s, Record* record,
                       ThreadLedger* ledger) {
  InferenceTask task;
  task.servable = s;
  task.inputs = {TinyInput()};
  task.started = [ledger](int threads) { ledger->Start(threads); };
  task.done = [record, ledger](absl::StatusOr<InferenceResult> r) {
    if (r.ok()) ledger->End(r->threads);
    record->result = std::move(r);
    record->calls.fetch_add(1);
    record->done.Notify();
  };
  return task;
}

// Lone requests get every core; a pile-up is cut into one-thread streams; the lone ones
// get every core again once the recent arrivals say the load is gone. Requests start in
// the order they were submitted throughout.
TEST(AdaptiveStreamsTest, ShapeFollowsLoadAndStartOrderIsSubmissionOrder) {
  auto tiny = TinyServable();
  ASSERT_NE(tiny, nullptr);
  constexpr int kCores = 4;
  auto servable = WithVariants(tiny, "auto_model", PerformanceHint::kAuto, {4, 2, 1}, kCores);
  InferenceScheduler::Options options;
  options.workers = kCores;
  options.cores = kCores;
  options.max_queue = 64;
  options.load_window = 4;
  InferenceScheduler scheduler(options);
  ThreadLedger ledger;
  std::vector<std::unique_ptr<Record>> records;
  auto submit = [&](InferenceTask task) { EXPECT_TRUE(scheduler.Submit(std::move(task)).ok()); };

  // 1. One request alone: the whole budget.
  records.push_back(std::make_unique<Record>());
  submit(Recorded(servable, records.back().get(), &ledger));
  records.back()->done.WaitForNotification();
  scheduler.WaitUntilIdle();
  ASSERT_TRUE(records[0]->result.ok()) << records[0]->result.status();
  EXPECT_EQ(records[0]->result->threads, kCores);

  // 2. A gate holds a lone request (all cores) while 8 more pile up behind it: the
  //    arrivals saw 2..9 requests in the scheduler, so they run as one-thread streams.
  absl::Notification gate_entered, release;
  records.push_back(std::make_unique<Record>());
  InferenceTask gate = Recorded(servable, records.back().get(), &ledger);
  gate.cancelled = [&] {
    gate_entered.Notify();
    release.WaitForNotification();
    return false;
  };
  submit(std::move(gate));
  gate_entered.WaitForNotification();
  const size_t first_burst = records.size();
  for (int i = 0; i < 8; ++i) {
    records.push_back(std::make_unique<Record>());
    submit(Recorded(servable, records.back().get(), &ledger));
  }
  InferenceScheduler::Stats held = scheduler.stats();
  EXPECT_EQ(held.queued, 8);
  EXPECT_EQ(held.streams_in_use, 1);
  EXPECT_EQ(held.threads_in_use, kCores);
  EXPECT_EQ(held.target_streams, kCores);
  EXPECT_EQ(held.models["auto_model"].queued, 8);
  release.Notify();
  for (size_t i = first_burst; i < records.size(); ++i) {
    records[i]->done.WaitForNotification();
    ASSERT_TRUE(records[i]->result.ok()) << records[i]->result.status();
    EXPECT_EQ(records[i]->result->threads, 1) << "request " << i;
  }
  scheduler.WaitUntilIdle();

  // 3. Lone requests again: once the window holds only them, each gets every core.
  for (int i = 0; i < 4; ++i) {
    records.push_back(std::make_unique<Record>());
    submit(Recorded(servable, records.back().get(), &ledger));
    records.back()->done.WaitForNotification();
    scheduler.WaitUntilIdle();
  }
  ASSERT_TRUE(records.back()->result.ok());
  EXPECT_EQ(records.back()->result->threads, kCores);
  EXPECT_EQ(scheduler.stats().target_streams, 1);

  uint64_t previous = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    ASSERT_TRUE(records[i]->result.ok()) << i;
    EXPECT_EQ(records[i]->calls.load(), 1);
    EXPECT_GT(records[i]->result->start_order, previous) << "request " << i << " started early";
    previous = records[i]->result->start_order;
  }
  EXPECT_LE(ledger.peak.load(), kCores);
  EXPECT_LE(scheduler.stats().peak_threads_in_use, kCores);
}

// Throughput: as many one-thread runs at once as cores, and the next waits for a thread.
TEST(AdaptiveStreamsTest, ThroughputRunsOneThreadStreamsUpToTheBudget) {
  auto tiny = TinyServable();
  ASSERT_NE(tiny, nullptr);
  constexpr int kCores = 3;
  auto servable = WithVariants(tiny, "tp", PerformanceHint::kThroughput, {1}, kCores);
  InferenceScheduler scheduler({kCores, 16, kCores});
  ThreadLedger ledger;
  absl::Mutex mu;
  int entered = 0;
  absl::Notification release;
  std::vector<std::unique_ptr<Record>> records;
  for (int i = 0; i < kCores + 1; ++i) {
    records.push_back(std::make_unique<Record>());
    InferenceTask task = Recorded(servable, records.back().get(), &ledger);
    task.cancelled = [&] {
      {
        absl::MutexLock lock(&mu);
        ++entered;
      }
      release.WaitForNotification();
      return false;
    };
    ASSERT_TRUE(scheduler.Submit(std::move(task)).ok());
  }
  {
    absl::MutexLock lock(&mu);
    auto all_cores_busy = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return entered == kCores; };
    mu.Await(absl::Condition(&all_cores_busy));
  }
  // Every core holds one run; the last request waits for a free thread.
  InferenceScheduler::Stats s = scheduler.stats();
  EXPECT_EQ(s.streams_in_use, kCores);
  EXPECT_EQ(s.threads_in_use, kCores);
  EXPECT_EQ(s.queued, 1);
  EXPECT_EQ(s.models["tp"].streams, kCores);
  release.Notify();
  for (auto& r : records) {
    r->done.WaitForNotification();
    ASSERT_TRUE(r->result.ok()) << r->result.status();
    EXPECT_EQ(r->result->threads, 1);
  }
  EXPECT_LE(ledger.peak.load(), kCores);
}

// Many clients on models of every hint, in bursts that move the auto shape back and
// forth: every accepted request is answered exactly once and correctly, each client's
// requests start in its order, the threads counted never exceed the cores, and no
// context is made on the request path.
TEST(AdaptiveStreamsTest, NoRequestLostAndNeverMoreThreadsThanCoresUnderConcurrentLoad) {
  auto tiny = TinyServable();
  ASSERT_NE(tiny, nullptr);
  constexpr int kCores = 4;
  const std::vector<std::shared_ptr<const Servable>> servables = {
      WithVariants(tiny, "auto", PerformanceHint::kAuto, {4, 2, 1}, kCores),
      WithVariants(tiny, "latency", PerformanceHint::kLatency, {4}, kCores),
      WithVariants(tiny, "throughput", PerformanceHint::kThroughput, {1}, kCores),
      WithVariants(tiny, "fixed2", PerformanceHint::kAuto, {2}, kCores)};
  InferenceScheduler::Options options;
  options.workers = kCores;
  options.cores = kCores;
  options.max_queue = 1024;
  options.load_window = 8;
  InferenceScheduler scheduler(options);
  ThreadLedger ledger;
  // The latency model must run alone: it takes every core.
  std::atomic<int> latency_running{0}, latency_overlap{0};

  constexpr int kClients = 6, kPerClient = 120;
  std::vector<std::vector<std::unique_ptr<Record>>> records(kClients);
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      std::mt19937 rng(c);
      for (int i = 0; i < kPerClient;) {
        // A burst of 1..8 requests without waiting, then wait for all of them.
        const int burst = std::min<int>(1 + rng() % 8, kPerClient - i);
        const size_t first = records[c].size();
        for (int b = 0; b < burst; ++b, ++i) {
          const auto& s = servables[rng() % servables.size()];
          records[c].push_back(std::make_unique<Record>());
          InferenceTask task = Recorded(s, records[c].back().get(), &ledger);
          if (s->name == "latency") {
            task.started = [&ledger, &latency_running, &latency_overlap](int threads) {
              ledger.Start(threads);
              if (latency_running.fetch_add(1) > 0) latency_overlap.fetch_add(1);
            };
            auto done = std::move(task.done);
            task.done = [&latency_running, done](absl::StatusOr<InferenceResult> r) {
              latency_running.fetch_sub(1);
              done(std::move(r));
            };
          }
          ASSERT_TRUE(scheduler.Submit(std::move(task)).ok());
        }
        for (size_t k = first; k < records[c].size(); ++k)
          records[c][k]->done.WaitForNotification();
      }
    });
  }
  for (std::thread& t : clients) t.join();
  scheduler.WaitUntilIdle();

  for (int c = 0; c < kClients; ++c) {
    ASSERT_EQ(records[c].size(), static_cast<size_t>(kPerClient));
    uint64_t previous = 0;
    for (auto& r : records[c]) {
      EXPECT_EQ(r->calls.load(), 1);
      ASSERT_TRUE(r->result.ok()) << r->result.status();
      ASSERT_EQ(r->result->outputs.size(), 1u);
      // The documented answer for an all-0.5 input (README): argmax 8.
      const std::vector<float>& y = r->result->outputs[0].data;
      ASSERT_EQ(y.size(), 10u);
      EXPECT_EQ(std::max_element(y.begin(), y.end()) - y.begin(), 8);
      EXPECT_GT(r->result->start_order, previous);
      previous = r->result->start_order;
    }
  }
  EXPECT_LE(ledger.peak.load(), kCores);
  EXPECT_EQ(ledger.in_use.load(), 0);
  EXPECT_EQ(latency_overlap.load(), 0);
  const InferenceScheduler::Stats s = scheduler.stats();
  EXPECT_LE(s.peak_threads_in_use, kCores);
  EXPECT_EQ(s.threads_in_use, 0);
  EXPECT_EQ(s.queued, 0);
  EXPECT_TRUE(s.models.empty());
  for (const auto& servable : servables) {
    for (const StreamVariant& v : servable->variants) {
      EXPECT_EQ(v.contexts->created_on_demand(), 0) << servable->name << " x" << v.threads;
    }
  }
}

// tiny_bn joining up to `limit` samples a run, waiting up to `delay` for them.
std::shared_ptr<const Servable> Batched(const std::shared_ptr<const Servable>& base, int64_t limit,
                                        absl::Duration delay) {
  auto s =
      std::make_shared<Servable>(*WithVariants(base, "batched", PerformanceHint::kAuto, {1}, 1));
  s->batch_limit = limit;
  s->batch_delay = delay;
  return s;
}

Tensor DistinctInput(int seed) {
  Tensor t;
  t.shape = {1, 3, 8, 8};
  for (int i = 0; i < 192; ++i)
    t.data.push_back(0.01f * static_cast<float>((i * 7 + seed * 13) % 41) - 0.2f);
  return t;
}

// The answer for `input` alone, from a context of its own: what a joined run must give.
std::vector<float> Alone(const Servable& s, const Tensor& input) {
  std::unique_ptr<ExecutionContext> ctx = s.compiled->NewContext();
  std::vector<Tensor> out;
  EXPECT_TRUE(ctx->Run({TensorView{input.data.data(), input.shape}}, &out).ok());
  return out.empty() ? std::vector<float>() : out[0].data;
}

// Requests queued right behind a run's first one join it (same model, up to the limit),
// in order; a request of another model stops the join; an expired one is answered alone
// and not joined; each gets exactly its own rows of the answer.
TEST(DynamicBatchingTest, JoinsTheQueuedRunInOrderAndSplitsTheAnswers) {
  auto tiny = TinyServable();
  ASSERT_NE(tiny, nullptr);
  auto batched = Batched(tiny, 4, absl::ZeroDuration());
  auto other = WithVariants(tiny, "other", PerformanceHint::kAuto, {1}, 1);
  InferenceScheduler scheduler({1, 32, 1});
  ThreadLedger ledger;
  absl::Notification entered, release;
  std::vector<std::unique_ptr<Record>> records;
  auto add = [&](const std::shared_ptr<const Servable>& s, int seed) {
    records.push_back(std::make_unique<Record>());
    InferenceTask task = Recorded(s, records.back().get(), &ledger);
    task.inputs = {DistinctInput(seed)};
    return task;
  };
  // The gate holds the only worker while the rest queue up.
  InferenceTask gate = add(other, 0);
  gate.cancelled = [&] {
    entered.Notify();
    release.WaitForNotification();
    return false;
  };
  ASSERT_TRUE(scheduler.Submit(std::move(gate)).ok());
  entered.WaitForNotification();
  // 1..6: batched, batched (expires), batched, other, batched x5 (limit 4: 4 + 1).
  const std::vector<int> model_of = {0, 1, 1, 1, 0, 1, 1, 1, 1, 1};  // 1: batched
  for (size_t i = 1; i < model_of.size(); ++i) {
    InferenceTask task = add(model_of[i] ? batched : other, static_cast<int>(i));
    if (i == 2) task.deadline = absl::Now() + absl::Milliseconds(1);
    ASSERT_TRUE(scheduler.Submit(std::move(task)).ok());
  }
  absl::SleepFor(absl::Milliseconds(20));  // request 2's deadline passes in the queue
  release.Notify();
  for (auto& r : records) r->done.WaitForNotification();
  scheduler.WaitUntilIdle();

  EXPECT_EQ(records[2]->result.status().code(), absl::StatusCode::kDeadlineExceeded);
  const std::vector<int> joined = {1, 2, -1, 2, 1, 4, 4, 4, 4, 1};
  uint64_t previous = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    EXPECT_EQ(records[i]->calls.load(), 1);
    if (i == 2) continue;
    ASSERT_TRUE(records[i]->result.ok()) << i << ": " << records[i]->result.status();
    EXPECT_EQ(records[i]->result->joined, joined[i]) << "request " << i;
    EXPECT_GT(records[i]->result->start_order, previous) << "request " << i;
    previous = records[i]->result->start_order;
    ASSERT_EQ(records[i]->result->outputs.size(), 1u);
    EXPECT_EQ(records[i]->result->outputs[0].shape, (std::vector<int64_t>{1, 10}));
    const std::vector<float> want = Alone(*tiny, DistinctInput(static_cast<int>(i)));
    const std::vector<float>& got = records[i]->result->outputs[0].data;
    ASSERT_EQ(got.size(), want.size());
    for (size_t k = 0; k < want.size(); ++k) {
      EXPECT_NEAR(got[k], want[k], 1e-5f * (1.0f + std::abs(want[k]))) << "request " << i;
    }
  }
}

// With a delay, a run's first request waits for a second one to arrive and joins it; the
// run starts as soon as the limit is reached, not at the end of the (long) delay.
TEST(DynamicBatchingTest, DelayLetsALaterRequestJoin) {
  auto tiny = TinyServable();
  ASSERT_NE(tiny, nullptr);
  auto batched = Batched(tiny, 2, absl::Seconds(30));
  InferenceScheduler scheduler({1, 8, 1});
  ThreadLedger ledger;
  Record first, second;
  ASSERT_TRUE(scheduler.Submit(Recorded(batched, &first, &ledger)).ok());
  ASSERT_TRUE(scheduler.Submit(Recorded(batched, &second, &ledger)).ok());
  first.done.WaitForNotification();
  second.done.WaitForNotification();
  ASSERT_TRUE(first.result.ok()) << first.result.status();
  ASSERT_TRUE(second.result.ok()) << second.result.status();
  EXPECT_EQ(first.result->joined, 2);
  EXPECT_EQ(second.result->joined, 2);
  EXPECT_LT(first.result->start_order, second.result->start_order);
  // Shutdown ends a wait for more at once.
  Record lone;
  ASSERT_TRUE(scheduler.Submit(Recorded(batched, &lone, &ledger)).ok());
  scheduler.Shutdown();
  ASSERT_TRUE(lone.result.ok()) << lone.result.status();
  EXPECT_EQ(lone.result->joined, 1);
}

}  // namespace
}  // namespace normserve
