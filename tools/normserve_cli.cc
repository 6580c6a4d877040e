// normserve-cli: a command-line client for normserve's own API (normserve.v1), the
// standard health service and the statistics training endpoint. Flags live here and fill
// the options structs; each subcommand is in cli_serving.cc or cli_train.cc.
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "tools/cli_client.h"
#include "tools/cli_serving.h"
#include "tools/cli_train.h"

ABSL_FLAG(std::string, server, "localhost:8001", "normserve address (host:port).");
ABSL_FLAG(std::string, training_server, "localhost:8003",
          "train: the training endpoint's address (the server's --training_port).");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA certificate: connect with TLS.");
ABSL_FLAG(std::string, tls_client_cert, "",
          "PEM client certificate (with --tls_client_key) for a training endpoint that takes "
          "client certificates (the server's --training_client_ca).");
ABSL_FLAG(std::string, tls_client_key, "", "PEM private key of --tls_client_cert.");
ABSL_FLAG(std::string, token_file, "",
          "train: file holding the training bearer token (else env NORMSERVE_TRAINING_TOKEN).");
ABSL_FLAG(int64_t, version, 0, "Model version (0: the latest serving).");
ABSL_FLAG(std::string, input, "",
          "predict: .npy (float32), .raw (float32 LE), .png, .jpg/.jpeg, .pgm or .ppm.");
ABSL_FLAG(std::string, shape, "",
          "predict: shape of a .raw input, e.g. 1,3,224,224 (default: the model's, batch 1).");
ABSL_FLAG(std::string, preprocess, "",
          "Image preprocessing as JSON (or @FILE.json) overriding the model's config.json "
          "\"preprocess\", e.g. {\"resize_shorter_side\":256,\"center_crop\":[224,224],"
          "\"mean\":[0.485,0.456,0.406],\"std\":[0.229,0.224,0.225]}.");
ABSL_FLAG(int, top, 5, "predict: how many of the largest outputs to print per row.");
ABSL_FLAG(double, timeout_s, 30, "RPC deadline in seconds (per call).");
ABSL_FLAG(int64_t, min_values_per_channel, 0, "train start: quality gate (0: server default).");
ABSL_FLAG(double, max_relative_sem, 0, "train start: quality gate (0: server default).");
ABSL_FLAG(double, prior_strength, 0,
          "train start: blend with the frozen statistics as N prior samples (0: new only).");
ABSL_FLAG(int64_t, max_samples, 0, "train start: most samples kept (0: server default).");
ABSL_FLAG(std::string, session_id, "", "train start: the session id (empty: the server's).");
ABSL_FLAG(bool, per_channel, false, "train report: every channel's statistics too.");
ABSL_FLAG(bool, exact, false, "train report: the exact layer-wise statistics commit publishes.");
ABSL_FLAG(bool, force, false, "train commit: publish even if the quality gate fails.");
ABSL_FLAG(std::string, precision, "",
          "train commit: int8 (a QDQ version calibrated on the session's samples), fp32, or "
          "empty (the base version's kind).");
ABSL_FLAG(std::string, o, "", "train export: the ONNX file to write.");
ABSL_FLAG(double, progress_interval_s, 10,
          "train accumulate: seconds between progress lines when stderr is not a terminal.");

int main(int argc, char** argv) {
  using namespace normserve::cli;  // NOLINT: the CLI's own namespace
  absl::SetProgramUsageMessage(
      absl::StrCat("normserve-cli [--server=HOST:PORT] COMMAND\n"
                   "  health [MODEL]        grpc.health.v1 status of the server or a model\n"
                   "  list                  models, serving versions, last load errors\n"
                   "  metadata MODEL        signature, image preprocessing and BatchNorm analysis\n"
                   "  predict MODEL --input=FILE.npy|.raw|.png|.jpg|.pgm|.ppm [--top=5]\n"
                   "  load MODEL | unload MODEL | reload [MODEL]\n",
                   TrainUsage(), "\n", ExitCodeHelp()));
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  std::vector<std::string> args(positional.begin() + 1, positional.end());
  if (args.empty()) {
    std::cerr << absl::ProgramUsageMessage() << "\n";
    return kExitUsage;
  }
  CliOptions options;
  options.server = absl::GetFlag(FLAGS_server);
  options.training_server = absl::GetFlag(FLAGS_training_server);
  options.tls_ca = absl::GetFlag(FLAGS_tls_ca);
  options.tls_client_cert = absl::GetFlag(FLAGS_tls_client_cert);
  options.tls_client_key = absl::GetFlag(FLAGS_tls_client_key);
  options.token_file = absl::GetFlag(FLAGS_token_file);
  options.timeout_s = absl::GetFlag(FLAGS_timeout_s);
  options.version = absl::GetFlag(FLAGS_version);
  options.preprocess = absl::GetFlag(FLAGS_preprocess);

  const std::string& cmd = args[0];
  auto need = [&](size_t n) {
    if (args.size() >= n) return true;
    std::cerr << cmd << ": missing MODEL\n" << absl::ProgramUsageMessage() << "\n";
    return false;
  };
  if (cmd == "health") return Health(options, args);
  if (cmd == "list") return List(options);
  if (cmd == "metadata") return need(2) ? Metadata(options, args) : kExitUsage;
  if (cmd == "predict") {
    PredictOptions predict;
    predict.input = absl::GetFlag(FLAGS_input);
    predict.raw_shape = absl::GetFlag(FLAGS_shape);
    predict.top = absl::GetFlag(FLAGS_top);
    return need(2) ? Predict(options, predict, args) : kExitUsage;
  }
  if (cmd == "load" || cmd == "unload") return need(2) ? Admin(options, args) : kExitUsage;
  if (cmd == "reload") return Admin(options, args);
  if (cmd == "train") {
    TrainOptions train;
    train.min_values_per_channel = absl::GetFlag(FLAGS_min_values_per_channel);
    train.max_relative_sem = absl::GetFlag(FLAGS_max_relative_sem);
    train.prior_strength = absl::GetFlag(FLAGS_prior_strength);
    train.max_samples = absl::GetFlag(FLAGS_max_samples);
    train.session_id = absl::GetFlag(FLAGS_session_id);
    train.per_channel = absl::GetFlag(FLAGS_per_channel);
    train.exact = absl::GetFlag(FLAGS_exact);
    train.force = absl::GetFlag(FLAGS_force);
    train.precision = absl::GetFlag(FLAGS_precision);
    train.output = absl::GetFlag(FLAGS_o);
    train.progress_interval_s = absl::GetFlag(FLAGS_progress_interval_s);
    return Train(options, train, args);
  }
  std::cerr << "unknown command \"" << cmd.substr(0, 32) << "\"\n"
            << absl::ProgramUsageMessage() << "\n";
  return kExitUsage;
}
