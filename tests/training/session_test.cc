// Session unit tests on the real Fashion-MNIST BN-CNN (6 BN layers, one BatchNorm1d on
// 1 x 64): concurrency determinism, exactly-once, refusals, batch N, durability (fsync
// failure, recovery, torn tail, corrupt record). References are float64 two-pass
// statistics computed here from per-sample moments, and CalibrateLayerwise (checked
// against PyTorch's float64 layer-by-layer oracle in tests/kernels).
#include "service/training/session.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <limits>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/layerwise_calibration.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "service/inference_scheduler.h"
#include "service/servable.h"
#include "service/training/sample_log.h"
#include "service/training/training_metrics.h"
#include "tests/service/temp_dir.h"

namespace normserve {
namespace {
namespace fs = std::filesystem;
using ::normserve::testing::TempDir;
using ::testing::HasSubstr;

std::string ModelPath() {
  return std::string(NORMSERVE_SOURCE_DIR) + "/models/repository/fashion_bn_cnn/1/model.onnx";
}

// Fashion-MNIST-like images: per-image brightness offset (between-image spread) plus
// pixel noise, so means differ between requests as they do on real data.
std::vector<Tensor> Samples(int n, int batch, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> offset(0.3f, 0.2f), noise(0.0f, 0.3f);
  std::vector<Tensor> out;
  for (int i = 0; i < n; ++i) {
    Tensor t;
    t.shape = std::vector<int64_t>{batch, 1, 28, 28};
    t.data.resize(static_cast<size_t>(batch) * 28 * 28);
    for (int b = 0; b < batch; ++b) {
      const float o = offset(rng);
      for (int k = 0; k < 28 * 28; ++k) t.data[b * 784 + k] = o + noise(rng);
    }
    out.push_back(std::move(t));
  }
  return out;
}

// The request as a client would send it (raw little-endian FP32).
struct Request {
  std::string raw;
  RequestTensor tensor;
};
Request AsRequest(const Tensor& t, const std::string& input_name) {
  Request r;
  r.raw.assign(reinterpret_cast<const char*>(t.data.data()), t.data.size() * sizeof(float));
  r.tensor.name = input_name;
  r.tensor.datatype = "FP32";
  r.tensor.shape = t.shape;
  r.tensor.has_raw = true;
  return r;
}

class SessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = Model::LoadFile(ModelPath());
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = *m;
    input_ = model_->inputs()[0].name;
    registry_ = std::make_shared<prometheus::Registry>();
    metrics_ = std::make_unique<TrainingMetrics>(registry_);
  }

  SessionConfig Config(const std::string& id, int64_t max_samples = 1000) {
    SessionConfig c;
    c.id = id;
    c.model = "fashion_bn_cnn";
    c.base_version = 1;
    c.min_values_per_channel = 8;
    c.max_relative_sem = 0.5;
    c.max_samples = max_samples;
    return c;
  }

  std::shared_ptr<Session> NewSession(const std::string& id, int64_t max_samples = 1000,
                                      SessionEnv env = {}) {
    const std::string d = dir_.path() + "/" + id;
    fs::create_directories(d);
    env.metrics = metrics_.get();
    auto s = Session::Create(Config(id, max_samples), d, model_, env);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : nullptr;
  }

  absl::StatusOr<AccumulateOutcome> Add(Session& s, const std::string& id, const Tensor& t) {
    Request r = AsRequest(t, input_);
    r.tensor.raw = r.raw;
    return s.Accumulate(id, absl::MakeConstSpan(&r.tensor, 1));
  }

  std::string MetricsText() { return prometheus::TextSerializer().Serialize(registry_->Collect()); }

  TempDir dir_;
  std::shared_ptr<const Model> model_;
  std::string input_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<TrainingMetrics> metrics_;
};

void ExpectClose(const std::vector<double>& a, const std::vector<double>& b, double rel,
                 const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t c = 0; c < a.size(); ++c) {
    EXPECT_NEAR(a[c], b[c], rel * std::max(1e-300, std::max(std::abs(a[c]), std::abs(b[c]))))
        << what << " channel " << c;
  }
}

// Accumulate's observed pass runs on serving's scheduler: it waits in the same FIFO
// behind a request holding every core, starts once the cores are free, and gives the
// statistics an inline pass gives (one thread count, so bit for bit).
TEST_F(SessionTest, AccumulateQueuesBehindServingInTheSharedScheduler) {
  constexpr int kCores = 2;
  InferenceScheduler::Options options;
  options.workers = kCores;
  options.cores = kCores;
  options.max_queue = 8;
  InferenceScheduler scheduler(options);
  // A serving request counted for every core, held at its start by a gate.
  auto serving = LoadServable("fashion_bn_cnn", 1, ModelPath(), FileStamp{}, {}, ServableOptions{});
  ASSERT_TRUE(serving.ok()) << serving.status();
  absl::Notification gate_entered, release, gate_done;
  InferenceTask gate;
  gate.servable = *serving;
  gate.inputs = Samples(1, 1, 5);
  gate.cancelled = [&] {
    gate_entered.Notify();
    release.WaitForNotification();
    return false;
  };
  gate.done = [&](absl::StatusOr<InferenceResult> r) {
    EXPECT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->threads, kCores);
    gate_done.Notify();
  };
  ASSERT_TRUE(scheduler.Submit(std::move(gate)).ok());
  gate_entered.WaitForNotification();

  const std::string d = dir_.path() + "/queued";
  fs::create_directories(d);
  SessionEnv env;
  env.scheduler = &scheduler;
  env.servable.cores = kCores;
  env.servable.max_streams = kCores;
  auto queued = Session::Create(Config("queued"), d, model_, env);
  ASSERT_TRUE(queued.ok()) << queued.status();
  auto inline_session = NewSession("inline");
  ASSERT_NE(inline_session, nullptr);

  const std::vector<Tensor> samples = Samples(3, 1, 11);
  std::atomic<bool> accumulated{false};
  absl::StatusOr<AccumulateOutcome> outcome = absl::UnknownError("not run");
  std::thread client([&] {
    outcome = Add(**queued, "q0", samples[0]);
    accumulated = true;
  });
  // The pass waits in the scheduler's queue while the gate holds the cores.
  while (scheduler.stats().models["training"].queued < 1) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_FALSE(accumulated.load());
  EXPECT_EQ(scheduler.stats().threads_in_use, kCores);
  release.Notify();
  client.join();
  gate_done.WaitForNotification();
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_EQ(outcome->requests_accepted, 1);
  for (size_t i = 1; i < samples.size(); ++i) {
    ASSERT_TRUE(Add(**queued, absl::StrCat("q", i), samples[i]).ok());
  }
  for (size_t i = 0; i < samples.size(); ++i) {
    ASSERT_TRUE(Add(*inline_session, absl::StrCat("q", i), samples[i]).ok());
  }
  auto q = (*queued)->Report(false);
  auto l = inline_session->Report(false);
  ASSERT_TRUE(q.ok() && l.ok());
  ASSERT_EQ(q->layers.size(), l->layers.size());
  for (size_t li = 0; li < q->layers.size(); ++li) {
    EXPECT_EQ(q->layers[li].mean, l->layers[li].mean) << q->layers[li].info.name;
    EXPECT_EQ(q->layers[li].variance, l->layers[li].variance) << q->layers[li].info.name;
  }
  scheduler.Shutdown();
  EXPECT_LE(scheduler.stats().peak_threads_in_use, kCores);
}

TEST_F(SessionTest, ConcurrentAccumulationMatchesOneThreadAndTwoPassReference) {
  const std::vector<Tensor> samples = Samples(48, 1, 7);
  auto parallel = NewSession("parallel");
  auto serial = NewSession("serial");
  ASSERT_NE(parallel, nullptr);
  ASSERT_NE(serial, nullptr);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = t; i < samples.size(); i += 8) {
        auto r = Add(*parallel, absl::StrCat("r", i), samples[i]);
        EXPECT_TRUE(r.ok()) << r.status();
      }
    });
  }
  for (auto& th : threads) th.join();
  std::vector<size_t> order(samples.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937(3));
  for (size_t i : order) ASSERT_TRUE(Add(*serial, absl::StrCat("r", i), samples[i]).ok());

  auto p = parallel->Report(false);
  auto s = serial->Report(false);
  ASSERT_TRUE(p.ok() && s.ok());
  EXPECT_EQ(p->requests_accepted, 48);
  ASSERT_EQ(p->layers.size(), 6u);

  // Independent float64 two-pass reference from the per-sample moments of each layer.
  auto compiled = CompiledModel::Compile(model_, LiveStatisticsOptions(*model_, 0));
  ASSERT_TRUE(compiled.ok());
  auto ctx = (*compiled)->NewContext();
  std::vector<BnObservations> obs(samples.size());
  for (size_t i = 0; i < samples.size(); ++i) {
    std::vector<Tensor> out;
    TensorView v{samples[i].data.data(), samples[i].shape};
    ASSERT_TRUE(ctx->Run({v}, &out, &obs[i]).ok());
  }
  for (size_t li = 0; li < p->layers.size(); ++li) {
    const LayerSummary& lp = p->layers[li];
    const LayerSummary& ls = s->layers[li];
    EXPECT_EQ(lp.requests, 48);
    ExpectClose(lp.mean, ls.mean, 1e-12, lp.info.name + " mean parallel vs serial");
    ExpectClose(lp.variance, ls.variance, 1e-12, lp.info.name + " var parallel vs serial");
    const int64_t channels = lp.info.channels;
    std::vector<double> mean(channels, 0), var(channels, 0);
    double n = 0;
    for (const auto& o : obs) n += static_cast<double>(o.per_layer.at(lp.info.name)[0].count);
    for (int64_t c = 0; c < channels; ++c) {
      double sum = 0;
      for (const auto& o : obs) {
        const ChannelMoments& m = o.per_layer.at(lp.info.name)[0];
        sum += m.mean[c] * static_cast<double>(m.count);
      }
      mean[c] = sum / n;
      double ss = 0;
      for (const auto& o : obs) {
        const ChannelMoments& m = o.per_layer.at(lp.info.name)[0];
        const double d = m.mean[c] - mean[c];
        ss += m.m2[c] + static_cast<double>(m.count) * d * d;
      }
      var[c] = ss / (n - 1);
    }
    EXPECT_EQ(lp.values_per_channel, static_cast<int64_t>(n));
    ExpectClose(lp.mean, mean, 1e-10, lp.info.name + " mean vs two-pass");
    ExpectClose(lp.variance, var, 1e-10, lp.info.name + " var vs two-pass");
  }
}

// Issue 8 item 6: a torch.onnx.export with the default training=EVAL folds every BN into
// its convolution; the refusal says how to export instead. (gn_small has no BN either.)
TEST_F(SessionTest, AModelWithoutBatchNormIsRefusedWithHowToExport) {
  auto gn = Model::LoadFile(std::string(NORMSERVE_SOURCE_DIR) +
                            "/models/repository/gn_small/1/model.onnx");
  ASSERT_TRUE(gn.ok()) << gn.status();
  ASSERT_TRUE((*gn)->bn_layers().empty());
  const std::string d = dir_.path() + "/nobn";
  fs::create_directories(d);
  SessionEnv env;
  env.metrics = metrics_.get();
  auto s = Session::Create(Config("nobn"), d, *gn, env);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.status().message()),
              ::testing::HasSubstr("export with training=torch.onnx.TrainingMode.PRESERVE"));
}

TEST_F(SessionTest, RetriedRequestIdIsCountedOnce) {
  auto s = NewSession("dup");
  const std::vector<Tensor> samples = Samples(2, 1, 1);
  auto a = Add(*s, "same", samples[0]);
  ASSERT_TRUE(a.ok());
  EXPECT_FALSE(a->duplicate);
  auto b = Add(*s, "same", samples[1]);  // a retry (content ignored: the id was applied)
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(b->duplicate);
  EXPECT_EQ(b->requests_accepted, 1);
  const std::string text = MetricsText();
  EXPECT_THAT(text, HasSubstr("normserve_training_requests_total{model=\"fashion_bn_cnn\",result="
                              "\"duplicate\",session=\"dup\"} 1"));
}

TEST_F(SessionTest, NonFiniteInputIsRefusedWholeAndCounted) {
  auto s = NewSession("nan");
  std::vector<Tensor> samples = Samples(1, 1, 2);
  samples[0].data[100] = std::numeric_limits<float>::quiet_NaN();
  auto r = Add(*s, "bad", samples[0]);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr(input_));
  samples[0].data[100] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(Add(*s, "bad2", samples[0]).ok());
  // Finite input that overflows float32 inside the network: refused as an activation.
  std::vector<Tensor> huge = Samples(1, 1, 3);
  for (float& v : huge[0].data) v = 3e38f;
  auto h = Add(*s, "huge", huge[0]);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), absl::StatusCode::kInvalidArgument);
  auto rep = s->Report(false);
  ASSERT_TRUE(rep.ok());
  EXPECT_EQ(rep->requests_accepted, 0);
  EXPECT_EQ(rep->requests_refused, 3);
  for (const LayerSummary& l : rep->layers) EXPECT_EQ(l.requests, 0);
  const std::string text = MetricsText();
  EXPECT_THAT(text, HasSubstr("normserve_training_refused_total{model=\"fashion_bn_cnn\",reason="
                              "\"non_finite_input\"} 2"));
  EXPECT_THAT(text, HasSubstr("normserve_training_refused_total{model=\"fashion_bn_cnn\",reason="
                              "\"non_finite_activation\"} 1"));
}

TEST_F(SessionTest, BatchNCountsEachSampleAsOneRequest) {
  const std::vector<Tensor> batch = Samples(1, 4, 11);
  auto a = NewSession("batch");
  auto b = NewSession("single");
  auto r = Add(*a, "b", batch[0]);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->requests_accepted, 4);
  for (int i = 0; i < 4; ++i) {
    Tensor one;
    one.shape = std::vector<int64_t>{1, 1, 28, 28};
    one.data.assign(batch[0].data.begin() + i * 784, batch[0].data.begin() + (i + 1) * 784);
    ASSERT_TRUE(Add(*b, absl::StrCat(i), one).ok());
  }
  auto ra = a->Report(false);
  auto rb = b->Report(false);
  for (size_t li = 0; li < ra->layers.size(); ++li) {
    EXPECT_EQ(ra->layers[li].requests, 4);
    // Statistics plans run direct convolutions at every batch size, so batch 4 gives the
    // activations of four batch-1 runs and the merge is exact.
    ExpectClose(ra->layers[li].mean, rb->layers[li].mean, 1e-12, "batch mean");
    ExpectClose(ra->layers[li].variance, rb->layers[li].variance, 1e-12, "batch var");
  }
}

TEST_F(SessionTest, MaxSamplesRefusesBeyondTheLimit) {
  auto s = NewSession("limit", 3);
  const std::vector<Tensor> samples = Samples(4, 1, 5);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Add(*s, absl::StrCat(i), samples[i]).ok());
  auto r = Add(*s, "3", samples[3]);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("max_samples=3"));
}

TEST_F(SessionTest, ExactReportEqualsLayerwiseCalibrationAndGateNamesLayers) {
  auto s = NewSession("exact");
  const std::vector<Tensor> samples = Samples(6, 1, 9);
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(Add(*s, absl::StrCat(i), samples[i]).ok());
  auto exact = s->Report(true);
  ASSERT_TRUE(exact.ok()) << exact.status();
  EXPECT_TRUE(exact->exact);
  auto ref = CalibrateLayerwise(model_, samples);
  ASSERT_TRUE(ref.ok());
  ASSERT_EQ(exact->layers.size(), ref->layers.size());
  for (size_t i = 0; i < ref->layers.size(); ++i) {
    ExpectClose(exact->layers[i].mean, ref->layers[i].committed.mean, 1e-12, "exact mean");
    ExpectClose(exact->layers[i].variance, ref->layers[i].committed.var, 1e-12, "exact var");
  }
  // 6 requests: the BatchNorm1d layer (1 value per request) has 6 values per channel < 8.
  EXPECT_FALSE(exact->gate_passed);
  const std::string failures = GateFailures(*exact);
  EXPECT_THAT(failures, HasSubstr("6 values per channel < 8"));
  for (const LayerSummary& l : exact->layers) {
    if (l.info.values_per_channel == 1) {
      EXPECT_THAT(failures, HasSubstr("\"" + l.info.name + "\""));
    }
  }
}

// A replay holds the session's lock from start to end (seconds on a large model); the CLI
// polls Progress() meanwhile, so it must answer without that lock, from another thread.
TEST_F(SessionTest, ProgressAnswersWhileTheReplayHoldsTheSession) {
  std::shared_ptr<Session> s;
  std::vector<ReplayProgress> seen;
  int timed_out = 0;
  SessionEnv env;
  env.fault_hook = [&](absl::string_view step) {
    if (step != "replay.progress" || timed_out > 0) return absl::OkStatus();
    // Detached: if Progress() waited for the session, the replay (this thread) would never
    // let it finish; the test then fails instead of hanging.
    auto answer = std::make_shared<std::promise<ReplayProgress>>();
    std::future<ReplayProgress> got = answer->get_future();
    std::thread([answer, session = s] { answer->set_value(session->Progress()); }).detach();
    if (got.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
      ++timed_out;
    } else {
      seen.push_back(got.get());
    }
    return absl::OkStatus();
  };
  s = NewSession("progress", 1000, env);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->Progress().operation, "");  // no replay yet
  const std::vector<Tensor> samples = Samples(6, 1, 5);
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(Add(*s, absl::StrCat(i), samples[i]).ok());
  ASSERT_TRUE(s->Report(true).ok());

  EXPECT_EQ(timed_out, 0) << "Progress() waited for the replay's session lock";
  ASSERT_FALSE(seen.empty());
  const int waves = seen.back().calibration.waves_total;
  EXPECT_GT(waves, 1);
  for (size_t i = 0; i < seen.size(); ++i) {
    EXPECT_TRUE(seen[i].running) << i;
    EXPECT_EQ(seen[i].operation, "report");
    EXPECT_EQ(seen[i].calibration.samples_total, 6);
    EXPECT_EQ(seen[i].calibration.waves_total, waves);
    if (i == 0) continue;
    const CalibrationProgress &a = seen[i - 1].calibration, &b = seen[i].calibration;
    EXPECT_TRUE(b.waves_done > a.waves_done ||
                (b.waves_done == a.waves_done && b.samples_done >= a.samples_done))
        << "progress went back at report " << i;
  }
  const ReplayProgress done = s->Progress();
  EXPECT_FALSE(done.running);
  EXPECT_EQ(done.calibration.waves_done, waves);
  EXPECT_EQ(done.calibration.samples_done, 6);
  EXPECT_GE(done.finished, done.started);
}

TEST_F(SessionTest, FailedFsyncIsNotAppliedAndRetrySucceedsOnce) {
  auto s = NewSession("fsync");
  const std::vector<Tensor> samples = Samples(1, 1, 4);
  InjectSampleLogFsyncFailureForTest();
  auto r = Add(*s, "x", samples[0]);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(s->requests_accepted(), 0);
  auto again = Add(*s, "x", samples[0]);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->duplicate);
  EXPECT_EQ(again->requests_accepted, 1);
  EXPECT_THAT(MetricsText(), HasSubstr("normserve_training_wal_fsync_failures_total 1"));
  // The log holds exactly the one acknowledged record.
  auto rec = SampleLog::Recover(s->dir() + "/samples.wal");
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->records.size(), 1u);
  EXPECT_FALSE(rec->torn_tail);
}

double SyncsTotal(const std::string& metrics) {
  const std::string name = "\nnormserve_training_wal_syncs_total ";  // not the HELP line
  const size_t at = metrics.find(name);
  return at == std::string::npos ? -1 : std::stod(metrics.substr(at + name.size()));
}

// Until the session's log is longer than `than` bytes (a record written, its sync next).
void WaitForLogBytes(const Session& s, uintmax_t than = 0) {
  const std::string wal = s.dir() + "/samples.wal";
  while (fs::file_size(wal) <= than) absl::SleepFor(absl::Milliseconds(1));
}

// Restores the sync delay however the test ends.
struct SlowDisk {
  explicit SlowDisk(absl::Duration d) { SetSampleLogSyncDelayForTest(d); }
  ~SlowDisk() { SetSampleLogSyncDelayForTest(absl::ZeroDuration()); }
};

// Group commit on a slow disk (100 ms a sync): eight writers share syncs, every
// acknowledged record is in the log once, and Commit hands the samples over in log order
// (the order recovery rebuilds, so an int8 commit holds out the same requests after a
// restart).
TEST_F(SessionTest, ConcurrentWritersShareSyncsInLogOrder) {
  auto s = NewSession("group");
  ASSERT_NE(s, nullptr);
  const std::vector<Tensor> samples = Samples(32, 1, 21);
  {
    SlowDisk slow(absl::Milliseconds(100));
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&, t] {
        for (size_t i = t; i < samples.size(); i += 8) {
          auto r = Add(*s, absl::StrCat("g", i), samples[i]);
          EXPECT_TRUE(r.ok()) << r.status();
        }
      });
    }
    for (auto& th : threads) th.join();
  }
  EXPECT_EQ(s->requests_accepted(), 32);
  const double syncs = SyncsTotal(MetricsText());
  EXPECT_GE(syncs, 1);
  // One sync a record without group commit; with it, writers that arrive during a
  // 100 ms sync share the next (about 5 syncs here, more under TSan's slowdown).
  EXPECT_LT(syncs, 32) << "writers did not share syncs";

  auto rec = SampleLog::Recover(s->dir() + "/samples.wal");
  ASSERT_TRUE(rec.ok()) << rec.status();
  ASSERT_EQ(rec->records.size(), 32u);
  std::set<std::string> ids;
  for (const SampleRecord& r : rec->records) ids.insert(r.request_id);
  EXPECT_EQ(ids.size(), 32u);
  std::vector<Tensor> handed;
  auto c = s->Commit([&](const SessionConfig&, SessionSummary&,
                         absl::Span<const Tensor> kept) -> absl::StatusOr<int64_t> {
    handed.assign(kept.begin(), kept.end());
    return 2;
  });
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(handed.size(), 32u);
  for (size_t i = 0; i < handed.size(); ++i) {
    EXPECT_EQ(handed[i].data, rec->records[i].inputs[0].data) << "sample " << i << " out of order";
  }
}

// A failed sync refuses every record it would have covered, the leader's and those
// written while it ran: none is applied, the log is cut back, and each retry succeeds once.
TEST_F(SessionTest, FailedGroupSyncRefusesEveryPendingRecord) {
  auto s = NewSession("groupfail");
  ASSERT_NE(s, nullptr);
  const std::vector<Tensor> samples = Samples(6, 1, 22);
  std::vector<absl::StatusOr<AccumulateOutcome>> results(6, absl::UnknownError("not run"));
  {
    SlowDisk slow(absl::Milliseconds(1000));
    InjectSampleLogFsyncFailureForTest();
    std::vector<std::thread> threads;
    threads.emplace_back([&] { results[0] = Add(*s, "f0", samples[0]); });
    WaitForLogBytes(*s);  // f0 is written and leads the failing sync
    for (int i = 1; i < 6; ++i) {
      threads.emplace_back([&, i] { results[i] = Add(*s, absl::StrCat("f", i), samples[i]); });
    }
    for (auto& th : threads) th.join();
  }
  for (int i = 0; i < 6; ++i) {
    ASSERT_FALSE(results[i].ok()) << "f" << i << " was acknowledged";
    EXPECT_EQ(results[i].status().code(), absl::StatusCode::kUnavailable) << results[i].status();
    EXPECT_THAT(results[i].status().message(), HasSubstr("retry with the same request_id"));
  }
  EXPECT_EQ(s->requests_accepted(), 0);
  auto empty = SampleLog::Recover(s->dir() + "/samples.wal");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->records.empty());
  EXPECT_FALSE(empty->torn_tail);
  for (int i = 0; i < 6; ++i) {
    auto again = Add(*s, absl::StrCat("f", i), samples[i]);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_FALSE(again->duplicate);
  }
  EXPECT_EQ(s->requests_accepted(), 6);
  auto rec = SampleLog::Recover(s->dir() + "/samples.wal");
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->records.size(), 6u);
  EXPECT_THAT(MetricsText(), HasSubstr("normserve_training_wal_fsync_failures_total 1"));
}

// Commit waits for a record whose sync is running and includes it: an Accumulate that is
// being made durable is never cut off by a commit (nor applied to a committed session).
TEST_F(SessionTest, CommitWaitsForARecordBeingSynced) {
  auto s = NewSession("drain");
  ASSERT_NE(s, nullptr);
  const std::vector<Tensor> samples = Samples(3, 1, 23);
  ASSERT_TRUE(Add(*s, "d0", samples[0]).ok());
  ASSERT_TRUE(Add(*s, "d1", samples[1]).ok());
  absl::StatusOr<AccumulateOutcome> late = absl::UnknownError("not run");
  size_t committed_samples = 0;
  {
    SlowDisk slow(absl::Milliseconds(500));
    const uintmax_t before = fs::file_size(s->dir() + "/samples.wal");
    std::thread writer([&] { late = Add(*s, "d2", samples[2]); });
    WaitForLogBytes(*s, before);  // d2 is written and its sync is running
    auto c = s->Commit([&](const SessionConfig&, SessionSummary&,
                           absl::Span<const Tensor> kept) -> absl::StatusOr<int64_t> {
      committed_samples = kept.size();
      return 2;
    });
    writer.join();
    ASSERT_TRUE(c.ok()) << c.status();
  }
  ASSERT_TRUE(late.ok()) << late.status();
  EXPECT_EQ(late->requests_accepted, 3);
  EXPECT_EQ(committed_samples, 3u);
}

TEST(SampleLogTest, HardwareCrc32cMatchesTheTable) {
  std::mt19937 rng(5);
  std::string data(4099, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  // Every length 0..64 at every offset 0..7 (the 8-byte loop's head and tail), then long.
  for (size_t offset = 0; offset < 8; ++offset) {
    for (size_t len = 0; len <= 64; ++len) {
      const absl::string_view v(data.data() + offset, len);
      ASSERT_EQ(Crc32c(v), Crc32cPortable(v)) << "offset " << offset << " length " << len;
    }
  }
  EXPECT_EQ(Crc32c(data), Crc32cPortable(data));
  EXPECT_EQ(Crc32cPortable("123456789"), 0xE3069283u);
}

TEST_F(SessionTest, RecoveryReplaysTheLogExactlyOnce) {
  const std::vector<Tensor> samples = Samples(5, 1, 12);
  std::string dir;
  SessionSummary before;
  {
    auto s = NewSession("recover");
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(Add(*s, absl::StrCat("id", i), samples[i]).ok());
    before = *s->Report(false);
    dir = s->dir();
  }
  SessionEnv env;
  env.metrics = metrics_.get();
  auto r = Session::Recover(Config("recover"), dir, model_, env);
  ASSERT_TRUE(r.ok()) << r.status();
  auto after = (*r)->Report(false);
  EXPECT_EQ(after->requests_accepted, 5);
  for (size_t li = 0; li < before.layers.size(); ++li) {
    ExpectClose(after->layers[li].mean, before.layers[li].mean, 1e-12, "recovered mean");
    ExpectClose(after->layers[li].variance, before.layers[li].variance, 1e-12, "recovered var");
  }
  auto dup = Add(**r, "id3", samples[3]);
  ASSERT_TRUE(dup.ok());
  EXPECT_TRUE(dup->duplicate);
}

TEST_F(SessionTest, TornTailIsTruncatedAndCounted) {
  const std::vector<Tensor> samples = Samples(3, 1, 13);
  std::string dir;
  {
    auto s = NewSession("torn");
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(Add(*s, absl::StrCat(i), samples[i]).ok());
    dir = s->dir();
  }
  const std::string wal = dir + "/samples.wal";
  const auto good_size = fs::file_size(wal);
  {
    // Half of a fourth record: a crash in the middle of an append.
    const std::string rec = EncodeSampleRecord({"3", {samples[0]}});
    std::ofstream(wal, std::ios::binary | std::ios::app).write(rec.data(), rec.size() / 2);
  }
  SessionEnv env;
  env.metrics = metrics_.get();
  auto r = Session::Recover(Config("torn"), dir, model_, env);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->requests_accepted(), 3);
  EXPECT_EQ(fs::file_size(wal), good_size);
  EXPECT_THAT(MetricsText(), HasSubstr("normserve_training_wal_torn_tails_total 1"));
  // The session goes on: the next append follows the last good record.
  ASSERT_TRUE(Add(**r, "3", samples[0]).ok());
  auto rec = SampleLog::Recover(wal);
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->records.size(), 4u);
  EXPECT_FALSE(rec->torn_tail);
}

TEST_F(SessionTest, CorruptRecordIsReportedNeverUsed) {
  const std::vector<Tensor> samples = Samples(3, 1, 14);
  std::string dir;
  {
    auto s = NewSession("corrupt");
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(Add(*s, absl::StrCat(i), samples[i]).ok());
    dir = s->dir();
  }
  const std::string wal = dir + "/samples.wal";
  const int64_t record = static_cast<int64_t>(fs::file_size(wal)) / 3;
  {
    // One flipped byte inside the second record's tensor data.
    std::fstream f(wal, std::ios::binary | std::ios::in | std::ios::out);
    f.seekg(record + 200);
    char c = 0;
    f.read(&c, 1);
    c ^= 0x10;
    f.seekp(record + 200);
    f.write(&c, 1);
  }
  SessionEnv env;
  auto r = Session::Recover(Config("corrupt"), dir, model_, env);
  ASSERT_TRUE(r.ok()) << r.status();
  auto a = Add(**r, "new", samples[0]);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(a.status().message()), HasSubstr(wal));
  EXPECT_THAT(std::string(a.status().message()), HasSubstr(absl::StrCat("offset ", record)));
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("checksum"));
  auto c = (*r)->Commit([](const SessionConfig&, SessionSummary&,
                           absl::Span<const Tensor>) -> absl::StatusOr<int64_t> { return 2; });
  EXPECT_EQ(c.status().code(), absl::StatusCode::kDataLoss);
}

TEST(SampleLogTest, Crc32cKnownAnswer) {
  // RFC 3720 B.4: CRC-32C of "123456789" is 0xE3069283.
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
}

}  // namespace
}  // namespace normserve
