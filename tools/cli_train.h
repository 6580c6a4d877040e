// normserve-cli train ...: the statistics training endpoint (normserve.v1.TrainingService)
// from an operator's shell: start, accumulate, report, commit, abort, sessions, rebase,
// rollback, export. Each returns the exit code (cli_client.h).
#ifndef NORMSERVE_TOOLS_CLI_TRAIN_H_
#define NORMSERVE_TOOLS_CLI_TRAIN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "tools/cli_client.h"

namespace normserve::cli {

struct TrainOptions {
  // start
  int64_t min_values_per_channel = 0;
  double max_relative_sem = 0;
  double prior_strength = 0;
  int64_t max_samples = 0;
  std::string session_id;
  // report, commit
  bool per_channel = false;
  bool exact = false;
  bool force = false;
  std::string precision;  // commit: CommitRequest.precision
  // export
  std::string output;
  // accumulate: seconds between progress lines when stderr is not a terminal.
  double progress_interval_s = 10;
};

// The usage lines of the train subcommands.
std::string TrainUsage();
// `args` = {"train", SUBCOMMAND, ...}.
int Train(const CliOptions& options, const TrainOptions& train,
          const std::vector<std::string>& args);

// The request id accumulate sends for a file: "sha256:" + the hex SHA-256 of its bytes, so
// that re-running the same command (after a crash or Ctrl-C) counts every file once: the
// server acknowledges a repeated id as a duplicate without counting it again.
std::string ContentRequestId(const std::string& bytes);

}  // namespace normserve::cli

#endif  // NORMSERVE_TOOLS_CLI_TRAIN_H_
