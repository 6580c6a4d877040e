// normserve-cli's serving subcommands (normserve.v1 InferenceService and gRPC health):
// health, list, metadata, predict, load, unload, reload. Each returns the exit code.
#ifndef NORMSERVE_TOOLS_CLI_SERVING_H_
#define NORMSERVE_TOOLS_CLI_SERVING_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "normserve/v1/inference.grpc.pb.h"
#include "tools/cli_client.h"

namespace normserve::cli {

struct PredictOptions {
  std::string input;
  std::string raw_shape;  // "1,3,224,224"
  int top = 5;
};

int Health(const CliOptions& options, const std::vector<std::string>& args);
int List(const CliOptions& options);
int Metadata(const CliOptions& options, const std::vector<std::string>& args);
int Predict(const CliOptions& options, const PredictOptions& predict,
            const std::vector<std::string>& args);
int Admin(const CliOptions& options, const std::vector<std::string>& args);

// GetModelMetadata of `model` at `version` on the serving port (train accumulate uses it to
// read the input's name, shape and preprocessing).
absl::StatusOr<::normserve::v1::GetModelMetadataResponse> FetchMetadata(const CliOptions& options,
                                                                        const std::string& model,
                                                                        int64_t version);

}  // namespace normserve::cli

#endif  // NORMSERVE_TOOLS_CLI_SERVING_H_
