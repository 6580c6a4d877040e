// fork/exec of the server binary, readiness polling, SIGTERM and exit status.
#include "server_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "kserve/grpc_predict_v2.grpc.pb.h"

namespace normserve::testing {
namespace fs = std::filesystem;

int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

void WriteFile(const std::string& path, const std::string& contents) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << contents;
}

void AddModel(const std::string& repo, const std::string& name, int version,
              const std::string& model_onnx) {
  const fs::path dir = fs::path(repo) / name / std::to_string(version);
  fs::create_directories(dir);
  fs::copy_file(model_onnx, dir / "model.onnx", fs::copy_options::overwrite_existing);
}

namespace {

// Starts `args` with stdout and stderr going to `out_path`; returns the child's pid.
pid_t Spawn(std::vector<std::string> args, const std::string& out_path) {
  // Everything the child needs is prepared before fork: between fork and exec a
  // multithreaded parent's child may only make async-signal-safe calls (no malloc).
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fd, STDOUT_FILENO);
    ::dup2(fd, STDERR_FILENO);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(fd);
  return pid;
}

}  // namespace

std::string NormserveBinary() { return NORMSERVE_BINARY; }

std::string DefaultRepositoryModel(const std::string& name) {
  return absl::StrCat(NORMSERVE_SOURCE_DIR, "/models/repository/", name, "/1/model.onnx");
}

std::string TestDataDir() {
  const char* dir = std::getenv("NORMSERVE_SERVICE_TESTDATA");
  return dir == nullptr ? "" : dir;
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(const std::string& repo,
                                                                    std::vector<std::string> flags,
                                                                    int timeout_s,
                                                                    bool wait_ready) {
  std::unique_ptr<ServerProcess> p(new ServerProcess());
  p->port_ = FreePort();
  p->metrics_port_ = FreePort();
  while (p->metrics_port_ == p->port_) p->metrics_port_ = FreePort();
  p->log_dir_ = std::make_unique<TempDir>();
  p->log_path_ = p->log_dir_->path() + "/normserve.log";

  std::vector<std::string> args = {NormserveBinary(),
                                   "--host=127.0.0.1",
                                   absl::StrCat("--port=", p->port_),
                                   absl::StrCat("--metrics_port=", p->metrics_port_),
                                   absl::StrCat("--model_repository=", repo),
                                   "--intra_op_threads=1"};
  args.insert(args.end(), flags.begin(), flags.end());
  const pid_t pid = Spawn(std::move(args), p->log_path_);
  p->pid_ = pid;
  if (!wait_ready) return p;

  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (std::chrono::steady_clock::now() < give_up) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      p->pid_ = -1;
      return absl::InternalError(
          absl::StrCat("normserve exited early (status ", status, "):\n", p->Log()));
    }
    // A fresh channel with its own subchannel pool per attempt: a channel that saw
    // "connection refused" backs off for seconds before it tries again.
    grpc::ChannelArguments channel_args;
    channel_args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    auto stub = inference::GRPCInferenceService::NewStub(
        grpc::CreateCustomChannel(p->address(), grpc::InsecureChannelCredentials(), channel_args));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    inference::ServerReadyResponse ready;
    if (stub->ServerReady(&ctx, {}, &ready).ok() && ready.ready()) return p;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("normserve not ready after ", timeout_s, " s:\n", p->Log()));
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

std::string ServerProcess::address() const { return absl::StrCat("127.0.0.1:", port_); }

int ServerProcess::Terminate(int timeout_s) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (std::chrono::steady_clock::now() < give_up) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

std::string ServerProcess::Log() const {
  std::ifstream in(log_path_);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string HttpGet(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return "";
  }
  const std::string request =
      absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  if (::write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    ::close(fd);
    return "";
  }
  std::string response;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) response.append(buf, n);
  ::close(fd);
  const size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

double MetricValue(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  return -1;
}

int RunCommand(const std::vector<std::string>& argv_in, std::string* output) {
  TempDir dir;
  const std::string out_path = dir.path() + "/out.txt";
  const pid_t pid = Spawn(argv_in, out_path);
  int status = 0;
  ::waitpid(pid, &status, 0);
  std::ifstream in(out_path);
  std::stringstream s;
  s << in.rdbuf();
  *output = s.str();
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace normserve::testing
