// TrainingManager state transitions against crashes and races (issue 9 items 4 and 9):
// a fault injected after each durable step of each transition, as an error and as a
// crash (the hook throws, the manager is dropped and a new one recovers the same state
// directory); a hammer of every session call on one id from several threads; and the
// version retention policy under Commit/Rollback. The oracle is the disk itself: the
// state directory and the repository are listed independently of the manager.
#include "service/training/training_manager.h"

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "service/model_repository.h"
#include "service/servable_manager.h"
#include "service/training/training_metrics.h"
#include "tests/service/temp_dir.h"

namespace normserve {
namespace {
namespace fs = std::filesystem;
using ::normserve::testing::TempDir;
using ::testing::HasSubstr;

constexpr char kModel[] = "fashion_bn_cnn";

struct CrashForTest {
  std::string step;
};

// One Fashion-MNIST-sized request of batch 1, deterministic per seed.
struct Request {
  std::string raw;
  RequestTensor tensor;
};
Request MakeRequest(const std::string& input, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise(0.3f, 0.3f);
  std::vector<float> data(784);
  for (float& v : data) v = noise(rng);
  Request r;
  r.raw.assign(reinterpret_cast<const char*>(data.data()), data.size() * sizeof(float));
  r.tensor.name = input;
  r.tensor.datatype = "FP32";
  r.tensor.shape = {1, 1, 28, 28};
  r.tensor.has_raw = true;
  return r;  // the caller points tensor.raw at raw once the Request has its final address
}

std::vector<std::string> DotEntries(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name[0] == '.') out.push_back(name);
  }
  return out;
}

std::set<std::string> SessionDirs(const fs::path& dir) {
  std::set<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name[0] != '.' && e.is_directory()) out.insert(name);
  }
  return out;
}

std::vector<int64_t> VersionDirs(const fs::path& model_dir) {
  std::vector<int64_t> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(model_dir, ec)) {
    int64_t v = 0;
    if (absl::SimpleAtoi(e.path().filename().string(), &v)) out.push_back(v);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// One server's worth of training state: repository + servables + training manager.
class Server {
 public:
  Server(const std::string& repo, TrainingOptions options)
      : registry_(std::make_shared<prometheus::Registry>()),
        metrics_(std::make_unique<TrainingMetrics>(registry_)) {
    ServableOptions so;
    so.intra_op_threads = 1;
    servables_ = std::make_unique<ServableManager>(ModelRepository(repo), so, nullptr);
    EXPECT_TRUE(servables_->LoadAll().ok());
    training_ = std::make_unique<TrainingManager>(std::move(options), repo, servables_.get(),
                                                  metrics_.get());
    absl::Status s = training_->Recover();
    EXPECT_TRUE(s.ok()) << s;
  }
  TrainingManager& training() { return *training_; }
  ServableManager& servables() { return *servables_; }
  std::string MetricsText() { return prometheus::TextSerializer().Serialize(registry_->Collect()); }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<TrainingMetrics> metrics_;
  std::unique_ptr<ServableManager> servables_;
  std::unique_ptr<TrainingManager> training_;
};

class TrainingManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repo_ = dir_.path() + "/repo";
    state_ = dir_.path() + "/state";
    const std::string src = std::string(NORMSERVE_SOURCE_DIR) + "/models/repository/" + kModel;
    fs::create_directories(fs::path(repo_) / kModel / "1");
    fs::copy_file(fs::path(src) / "config.json", fs::path(repo_) / kModel / "config.json");
    fs::copy_file(fs::path(src) / "1" / "model.onnx",
                  fs::path(repo_) / kModel / "1" / "model.onnx");
  }

  TrainingOptions Options() {
    TrainingOptions o;
    o.state_dir = state_;
    o.min_values_per_channel = 1;
    o.max_relative_sem = 1e300;  // the gate is not under test
    o.max_samples = 64;
    o.max_sessions = 4;
    o.keep_versions = 2;
    o.fault_hook = [this](absl::string_view step) -> absl::Status {
      if (step != arm_step_) return absl::OkStatus();
      arm_step_.clear();
      ++fired_;
      if (crash_) throw CrashForTest{std::string(step)};
      return absl::UnavailableError(absl::StrCat("injected fault at ", step));
    };
    return o;
  }

  std::unique_ptr<Server> Start() { return std::make_unique<Server>(repo_, Options()); }

  std::string Input(Server& server) {
    auto s = server.servables().Get(kModel, 0);
    return (*s)->model().inputs()[0].name;
  }

  absl::StatusOr<AccumulateOutcome> Add(Server& server, const std::string& session,
                                        const std::string& request_id, uint32_t seed) {
    Request r = MakeRequest(Input(server), seed);
    r.tensor.raw = r.raw;
    return server.training().Accumulate(session, request_id, absl::MakeConstSpan(&r.tensor, 1));
  }

  // Invariants that hold whenever no call is running: every session directory is a
  // listed session and the reverse, no staging or tombstone left, the limit holds.
  void ExpectConsistent(Server& server, const std::string& when) {
    EXPECT_THAT(DotEntries(state_), ::testing::IsEmpty()) << when;
    EXPECT_THAT(DotEntries(fs::path(repo_) / kModel), ::testing::IsEmpty()) << when;
    std::set<std::string> listed;
    int open = 0;
    for (const SessionListing& l : server.training().List()) {
      listed.insert(l.id);
      open += l.state == "open";
    }
    EXPECT_EQ(listed, SessionDirs(state_)) << when;
    EXPECT_LE(open, 4) << when;
    // The serving version's file is on disk.
    absl::StatusOr<std::vector<int64_t>> serving = server.servables().Versions(kModel);
    ASSERT_TRUE(serving.ok()) << when;
    for (int64_t v : *serving) {
      EXPECT_TRUE(fs::exists(fs::path(repo_) / kModel / std::to_string(v) / "model.onnx"))
          << when << " v" << v;
    }
  }

  const SessionListing* Find(const std::vector<SessionListing>& list, const std::string& id) {
    for (const SessionListing& l : list) {
      if (l.id == id) return &l;
    }
    return nullptr;
  }

  TempDir dir_;
  std::string repo_, state_;
  std::string arm_step_;
  bool crash_ = false;
  int fired_ = 0;
};

// Every step of every transition, as an injected error and as a crash, then a restart.
TEST_F(TrainingManagerTest, FaultAtEveryStepKeepsStateConsistentAcrossRestart) {
  const std::vector<std::string> steps = {"start.staging_created", "start.staged",
                                          "start.renamed",         "accumulate.logged",
                                          "rebase.replayed",       "rebase.manifest_written",
                                          "commit.published",      "commit.manifest_written",
                                          "abort.begin",           "abort.renamed",
                                          "prune.retired"};
  for (bool crash : {false, true}) {
    for (const std::string& step : steps) {
      const std::string when = absl::StrCat(crash ? "crash" : "error", " at ", step);
      SCOPED_TRACE(when);
      fs::remove_all(state_);
      for (int64_t v : VersionDirs(fs::path(repo_) / kModel)) {
        if (v > 1) fs::remove_all(fs::path(repo_) / kModel / std::to_string(v));
      }
      arm_step_.clear();
      fired_ = 0;
      crash_ = crash;
      absl::Status answer;
      {
        std::unique_ptr<Server> server = Start();
        ASSERT_TRUE(server->training().StartSession(kModel, 0, {}, "a").ok());
        ASSERT_TRUE(Add(*server, "a", "r0", 1).ok());
        ASSERT_TRUE(Add(*server, "a", "r1", 2).ok());
        if (absl::StartsWith(step, "rebase.")) {
          ASSERT_TRUE(server->training().Rollback(kModel, 1).ok());  // v2 serves
        }
        if (step == "prune.retired") {
          for (int i = 0; i < 2; ++i) ASSERT_TRUE(server->training().Rollback(kModel, 1).ok());
        }
        arm_step_ = step;
        try {
          if (absl::StartsWith(step, "start.")) {
            answer = server->training().StartSession(kModel, 0, {}, "c").status();
          } else if (step == "accumulate.logged") {
            answer = Add(*server, "a", "r2", 3).status();
          } else if (absl::StartsWith(step, "rebase.")) {
            answer = server->training().Rebase("a").status();
          } else if (absl::StartsWith(step, "commit.")) {
            answer = server->training().Commit("a", /*force=*/true).status();
          } else if (absl::StartsWith(step, "abort.")) {
            answer = server->training().Abort("a");
          } else {
            answer = server->training().Rollback(kModel, 1).status();
          }
        } catch (const CrashForTest&) {
          answer = absl::AbortedError("crashed");
        }
        ASSERT_EQ(fired_, 1) << "the step was never reached";
        if (!crash) {
          // An injected error leaves no leftover and no half state behind, live.
          EXPECT_NE(answer.code(), absl::StatusCode::kInternal) << answer;
          ExpectConsistent(*server, when + " (live)");
        }
      }
      // Restart on the same disk.
      std::unique_ptr<Server> server = Start();
      ExpectConsistent(*server, when + " (after restart)");
      const std::vector<SessionListing> list = server->training().List();
      const SessionListing* a = Find(list, "a");
      if (absl::StartsWith(step, "abort.")) {
        if (step == "abort.begin") {
          ASSERT_NE(a, nullptr);  // the abort never happened
          EXPECT_EQ(a->requests_accepted, 2);
        } else {
          EXPECT_EQ(a, nullptr) << "an aborted session came back";
          EXPECT_TRUE(server->training().StartSession(kModel, 0, {}, "a").ok());
        }
        continue;
      }
      ASSERT_NE(a, nullptr);
      if (step == "commit.manifest_written") {
        EXPECT_EQ(a->state, "committed");
        EXPECT_FALSE(fs::exists(fs::path(state_) / "a" / "samples.wal"));
        EXPECT_EQ(VersionDirs(fs::path(repo_) / kModel), (std::vector<int64_t>{1, 2}));
        continue;
      }
      ASSERT_EQ(a->state, "open");
      // Acknowledged samples are all there, each once; the unacknowledged durable one is
      // there once too and its retry is a duplicate.
      const int64_t expected = step == "accumulate.logged" ? 3 : 2;
      EXPECT_EQ(a->requests_accepted, expected);
      absl::StatusOr<AccumulateOutcome> retry = Add(*server, "a", "r2", 3);
      ASSERT_TRUE(retry.ok()) << retry.status();
      EXPECT_EQ(retry->duplicate, step == "accumulate.logged");
      EXPECT_EQ(retry->requests_accepted, 3);
      if (step == "commit.published") {
        // Published exactly once: the restarted session is stale, a second Commit refused.
        EXPECT_EQ(VersionDirs(fs::path(repo_) / kModel), (std::vector<int64_t>{1, 2}));
        absl::Status again = server->training().Commit("a", true).status();
        EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition) << again;
      }
      if (absl::StartsWith(step, "rebase.")) {
        const int64_t base = a->base_version;
        EXPECT_TRUE(base == 1 || base == 2) << base;
        if (step == "rebase.manifest_written") {
          EXPECT_EQ(base, 2);
        }
        if (step == "rebase.replayed") {
          EXPECT_EQ(base, 1);
        }
        EXPECT_TRUE(server->training().Report("a", false).ok());
      }
      if (step == "prune.retired") {
        // The session's base (v1) survives every prune; serving v4, newest 2 (v3, v4).
        EXPECT_TRUE(fs::exists(fs::path(repo_) / kModel / "1" / "model.onnx"));
        EXPECT_LE(VersionDirs(fs::path(repo_) / kModel).size(), 3u);
      }
      if (absl::StartsWith(step, "start.")) {
        const SessionListing* c = Find(list, "c");
        if (c != nullptr) {
          EXPECT_EQ(c->state, "open");
          EXPECT_TRUE(Add(*server, "c", "x", 9).ok());
        } else {
          EXPECT_TRUE(server->training().StartSession(kModel, 0, {}, "c").ok());
        }
        // Before the rename nothing of "c" may survive; after it a whole session may.
        if (step != "start.renamed") {
          EXPECT_EQ(c, nullptr);
        }
      }
    }
  }
}

// The issue-9 reproduction and more: every session call on the same ids from several
// threads. No call may answer INTERNAL (or anything outside its contract), and the
// disk, the table and a restarted server must agree.
TEST_F(TrainingManagerTest, ConcurrentCallsOnOneSessionKeepTableDiskAndRestartConsistent) {
  std::map<std::string, std::pair<int64_t, std::string>> before;  // id -> (requests, state)
  {
    std::unique_ptr<Server> server = Start();
    TrainingManager& t = server->training();
    const std::string input = Input(*server);
    std::vector<Request> requests;
    for (int i = 0; i < 8; ++i) requests.push_back(MakeRequest(input, 100 + i));
    for (Request& r : requests) r.tensor.raw = r.raw;
    std::atomic<int> internal{0}, outside{0};
    std::mutex failures_mu;
    std::vector<std::string> failures;
    auto check = [&](const char* op, const absl::Status& s,
                     std::initializer_list<absl::StatusCode> allowed) {
      if (s.ok()) return;
      if (std::find(allowed.begin(), allowed.end(), s.code()) != allowed.end()) return;
      (s.code() == absl::StatusCode::kInternal ? internal : outside)++;
      std::lock_guard<std::mutex> lock(failures_mu);
      if (failures.size() < 10) failures.push_back(absl::StrCat(op, ": ", s.ToString()));
    };
    using C = absl::StatusCode;
    constexpr int kThreads = 4, kRounds = 150;
    std::vector<std::thread> threads;
    for (int th = 0; th < kThreads; ++th) {
      threads.emplace_back([&, th] {
        std::mt19937 rng(th * 7919 + 1);
        for (int i = 0; i < kRounds; ++i) {
          const std::string id = rng() % 4 == 0 ? "h2" : "h1";
          const Request& r = requests[rng() % requests.size()];
          switch (rng() % 8) {
            case 0:
              check("StartSession", t.StartSession(kModel, 0, {}, id).status(),
                    {C::kAlreadyExists, C::kResourceExhausted, C::kFailedPrecondition});
              break;
            case 1:
            case 2:
              check(
                  "Accumulate",
                  t.Accumulate(id, absl::StrCat("t", th, "_", i), absl::MakeConstSpan(&r.tensor, 1))
                      .status(),
                  {C::kNotFound, C::kFailedPrecondition, C::kResourceExhausted});
              break;
            case 3:
              check("Report", t.Report(id, false).status(), {C::kNotFound});
              break;
            case 4:
              check("Rebase", t.Rebase(id).status(), {C::kNotFound, C::kFailedPrecondition});
              break;
            case 5:
              check("Commit", t.Commit(id, true).status(), {C::kNotFound, C::kFailedPrecondition});
              break;
            case 6:
              check("Abort", t.Abort(id), {C::kNotFound});
              break;
            case 7: {
              absl::StatusOr<std::vector<int64_t>> v = server->servables().Versions(kModel);
              if (v.ok()) {
                check("Rollback", t.Rollback(kModel, v->front()).status(), {C::kNotFound});
              }
              break;
            }
          }
        }
      });
    }
    for (std::thread& th : threads) th.join();
    EXPECT_EQ(internal.load(), 0);
    EXPECT_EQ(outside.load(), 0);
    for (const std::string& f : failures) ADD_FAILURE() << f;
    ExpectConsistent(*server, "after the hammer");
    // Retention held throughout: at most v1 (the operator's) + keep (2) + serving (1) + session
    // bases (2).
    EXPECT_LE(VersionDirs(fs::path(repo_) / kModel).size(), 6u);
    for (const SessionListing& l : t.List()) before[l.id] = {l.requests_accepted, l.state};
    // Every open session's directory holds its log; a committed one does not.
    for (const auto& [id, rs] : before) {
      EXPECT_EQ(fs::exists(fs::path(state_) / id / "samples.wal"), rs.second == "open") << id;
    }
  }
  std::unique_ptr<Server> server = Start();
  ExpectConsistent(*server, "after restart");
  std::map<std::string, std::pair<int64_t, std::string>> after;
  for (const SessionListing& l : server->training().List()) {
    // Committed listings do not keep their count across a restart (0 by design).
    after[l.id] = {l.state == "open" ? l.requests_accepted : 0, l.state};
  }
  for (auto& [id, rs] : before) {
    if (rs.second != "open") rs.first = 0;
  }
  EXPECT_EQ(before, after);
  // Below the limit a new session starts.
  EXPECT_TRUE(server->training().StartSession(kModel, 0, {}, "fresh").ok());
}

// The reproduction: Abort and Rebase of the same session at the same moment.
// Before the fix Abort deleted the directory without the session's lock while Rebase
// wrote its manifest into it: INTERNAL from both, manifest-only directories that
// blocked the id and came back as sessions after a restart.
TEST_F(TrainingManagerTest, AbortRacingRebaseLeavesNothingBehind) {
  constexpr int kRounds = 60;
  int rebased = 0, not_found = 0;
  {
    std::unique_ptr<Server> server = Start();
    TrainingManager& t = server->training();
    for (int round = 0; round < kRounds; ++round) {
      SCOPED_TRACE(absl::StrCat("round ", round));
      ASSERT_TRUE(t.StartSession(kModel, 0, {}, "r").ok());
      ASSERT_TRUE(Add(*server, "r", "x", round).ok());
      absl::StatusOr<std::vector<int64_t>> serving = server->servables().Versions(kModel);
      ASSERT_TRUE(t.Rollback(kModel, serving->back()).ok());  // the session is now stale
      std::atomic<int> ready{0};
      absl::Status abort, rebase;
      std::thread a([&] {
        ready++;
        while (ready.load() < 2) {
        }
        abort = t.Abort("r");
      });
      std::thread b([&] {
        ready++;
        while (ready.load() < 2) {
        }
        rebase = t.Rebase("r").status();
      });
      a.join();
      b.join();
      EXPECT_TRUE(abort.ok()) << abort;
      EXPECT_TRUE(rebase.ok() || absl::IsNotFound(rebase)) << rebase;
      rebased += rebase.ok();
      not_found += absl::IsNotFound(rebase);
      EXPECT_FALSE(fs::exists(fs::path(state_) / "r"));
      EXPECT_THAT(DotEntries(state_), ::testing::IsEmpty());
      EXPECT_TRUE(t.List().empty());
    }
  }
  std::cout << "Rebase before Abort " << rebased << ", after " << not_found << " of " << kRounds
            << "\n";
  std::unique_ptr<Server> server = Start();
  EXPECT_TRUE(server->training().List().empty());
  EXPECT_TRUE(server->training().StartSession(kModel, 0, {}, "r").ok());
}

// Issue 9 item 9: Commit/Rollback rounds leave at most keep + serving + based-on
// version directories, a session's base survives, and the disk metric follows.
// Pruning keeps the serving versions, the newest keep_versions, every session's base and
// every version this endpoint did not publish (v1, the operator's, is the rollback target
// of last resort: the recalibration experiment rolls back to it after 8 publications).
TEST_F(TrainingManagerTest, RetentionKeepsNewestServingSessionBasesAndOperatorVersions) {
  std::unique_ptr<Server> server = Start();
  TrainingManager& t = server->training();
  for (int round = 0; round < 12; ++round) {
    if (round % 2 == 0) {
      const std::string id = absl::StrCat("c", round);
      ASSERT_TRUE(t.StartSession(kModel, 0, {}, id).ok());
      ASSERT_TRUE(Add(*server, id, "r0", round).ok());
      ASSERT_TRUE(Add(*server, id, "r1", round + 100).ok());
      absl::StatusOr<SessionSummary> c = t.Commit(id, true);
      ASSERT_TRUE(c.ok()) << c.status();
      if (round == 0) {
        ASSERT_TRUE(t.StartSession(kModel, 0, {}, "pinned").ok());  // pins v2
      }
    } else {
      absl::StatusOr<std::vector<int64_t>> serving = server->servables().Versions(kModel);
      ASSERT_TRUE(serving.ok());
      ASSERT_TRUE(t.Rollback(kModel, serving->back() - 1).ok());
    }
    const std::vector<int64_t> dirs = VersionDirs(fs::path(repo_) / kModel);
    const int64_t latest = (*server->servables().Versions(kModel)).back();
    EXPECT_EQ(latest, round + 2);
    // v1 (not published here) + v2 for "pinned" + keep_versions=2 newest (serving is the newest).
    std::vector<int64_t> expected = {1, 2};
    for (int64_t v = std::max<int64_t>(3, latest - 1); v <= latest; ++v) expected.push_back(v);
    EXPECT_EQ(dirs, expected) << "round " << round;
    EXPECT_THAT(DotEntries(fs::path(repo_) / kModel), ::testing::IsEmpty());
  }
  // The metric equals the bytes on disk, measured independently.
  int64_t bytes = 0;
  for (const auto& e : fs::recursive_directory_iterator(fs::path(repo_) / kModel)) {
    if (e.is_regular_file()) bytes += static_cast<int64_t>(e.file_size());
  }
  EXPECT_THAT(
      server->MetricsText(),
      HasSubstr(absl::StrCat("normserve_repository_disk_bytes{model=\"fashion_bn_cnn\"} ", bytes)));
  // Once the pin goes, the next publication prunes v2; v1 stays.
  ASSERT_TRUE(t.Abort("pinned").ok());
  ASSERT_TRUE(t.Rollback(kModel, 13).ok());
  EXPECT_EQ(VersionDirs(fs::path(repo_) / kModel), (std::vector<int64_t>{1, 13, 14}));
}

// Before the fix an aborted session left its manifest behind (a Rebase rewrote it into
// the half-deleted directory) and came back at restart past the session limit; state
// written that way is cleaned up, never resurrected.
TEST_F(TrainingManagerTest, ManifestOnlyDirectoryFromOldAbortIsNotResurrected) {
  {
    std::unique_ptr<Server> server = Start();
    for (const char* id : {"s1", "s2", "s3", "s4"})
      ASSERT_TRUE(server->training().StartSession(kModel, 0, {}, id).ok());
  }
  for (const char* id : {"s2", "s3", "s4"}) fs::remove(fs::path(state_) / id / "samples.wal");
  std::unique_ptr<Server> server = Start();
  std::vector<SessionListing> list = server->training().List();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].id, "s1");
  ExpectConsistent(*server, "after restart");
  EXPECT_TRUE(server->training().StartSession(kModel, 0, {}, "s2").ok());
}

}  // namespace
}  // namespace normserve
