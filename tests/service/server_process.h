// Test helper: runs the real `normserve` binary on loopback with free ports and a
// temporary model repository, and stops it with SIGTERM like an orchestrator would.
#ifndef NORMSERVE_TESTS_SERVICE_SERVER_PROCESS_H_
#define NORMSERVE_TESTS_SERVICE_SERVER_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tests/service/temp_dir.h"

namespace normserve::testing {

// A free TCP port on 127.0.0.1 (bound then released: a tiny race, fine on a test box).
int FreePort();

// Copies `model_onnx` to <repo>/<name>/<version>/model.onnx.
void AddModel(const std::string& repo, const std::string& name, int version,
              const std::string& model_onnx);
void WriteFile(const std::string& path, const std::string& contents);

class ServerProcess {
 public:
  // Starts normserve on `repo` with `flags` added, and waits (up to `timeout_s`) until
  // KServe ServerReady, asked in plaintext, says true (`wait_ready` false: returns at
  // once, e.g. for a TLS server). The error carries the server's log.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(const std::string& repo,
                                                              std::vector<std::string> flags = {},
                                                              int timeout_s = 60,
                                                              bool wait_ready = true);
  ~ServerProcess();

  std::string address() const;
  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }
  // SIGTERM, then the exit code (128 + signal if killed by one, -1 on timeout).
  int Terminate(int timeout_s = 60);
  std::string Log() const;

 private:
  ServerProcess() = default;
  pid_t pid_ = -1;
  int port_ = 0;
  int metrics_port_ = 0;
  std::string log_path_;
  std::unique_ptr<TempDir> log_dir_;
};

// The binary under test (set by CMake).
std::string NormserveBinary();
// <source>/models/repository/<name>/1/model.onnx.
std::string DefaultRepositoryModel(const std::string& name);
// The oracle exports' directory (NORMSERVE_SERVICE_TESTDATA), "" when unset.
std::string TestDataDir();

// The body of GET http://127.0.0.1:<port><path>, "" on any failure.
std::string HttpGet(int port, const std::string& path);
// The value of the sample line starting with `series` (e.g. `m{a="b"}`), -1 if absent.
double MetricValue(const std::string& text, const std::string& series);

// Runs `argv` to completion, returning the exit code and filling `output` (stdout+stderr).
int RunCommand(const std::vector<std::string>& argv, std::string* output);

}  // namespace normserve::testing

#endif  // NORMSERVE_TESTS_SERVICE_SERVER_PROCESS_H_
