// Atomic publication of model versions (temp dir + fsync + rename + fsync of the parent).
#include "service/training/version_publisher.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace normserve {
namespace fs = std::filesystem;
namespace {

absl::Status Errno(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::Status WriteAndFsync(const std::string& path, absl::string_view contents) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("cannot create", path);
  size_t written = 0;
  while (written < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + written, contents.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      absl::Status s = Errno("cannot write", path);
      ::close(fd);
      return s;
    }
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    absl::Status s = Errno("cannot fsync", path);
    ::close(fd);
    return s;
  }
  if (::close(fd) != 0) return Errno("cannot close", path);
  return absl::OkStatus();
}

// Dot-names: ModelRepository only takes positive-integer directory names.
constexpr char kPublishPrefix[] = ".publish.";
constexpr char kRetiredPrefix[] = ".retired.";
// Inside a version directory this endpoint wrote: only those are ever pruned, so the
// versions an operator put in the repository (the baseline a rollback returns to) stay.
constexpr char kPublishedMarker[] = ".published_by_training";

std::string RandomSuffix() {
  std::random_device rd;
  return absl::StrCat(rd(), "_", ::getpid());
}

}  // namespace

absl::Status FsyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno("cannot open directory", dir);
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Errno("cannot fsync directory", dir);
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents) {
  const fs::path p(path);
  const std::string tmp =
      (p.parent_path() / absl::StrCat(".", p.filename().string(), ".tmp.", RandomSuffix()))
          .string();
  if (absl::Status s = WriteAndFsync(tmp, contents); !s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status s = Errno("cannot rename into", path);
    ::unlink(tmp.c_str());
    return s;
  }
  return FsyncDirectory(p.parent_path().string());
}

std::string VersionPublisher::ModelPath(const std::string& model, int64_t version) const {
  return (fs::path(root_) / model / std::to_string(version) / "model.onnx").string();
}

absl::StatusOr<std::vector<int64_t>> VersionPublisher::VersionsOnDisk(
    const std::string& model) const {
  std::error_code ec;
  std::vector<int64_t> versions;
  for (const auto& entry : fs::directory_iterator(fs::path(root_) / model, ec)) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(entry.path().filename().string(), &v) || v <= 0) continue;
    if (fs::exists(entry.path() / "model.onnx")) versions.push_back(v);
  }
  if (ec) {
    return absl::NotFoundError(absl::StrCat("model \"", model, "\": cannot list ",
                                            (fs::path(root_) / model).string(), ": ",
                                            ec.message()));
  }
  std::sort(versions.begin(), versions.end());
  return versions;
}

absl::StatusOr<int64_t> VersionPublisher::LatestOnDisk(const std::string& model) const {
  absl::StatusOr<std::vector<int64_t>> versions = VersionsOnDisk(model);
  if (!versions.ok()) return versions.status();
  return versions->empty() ? 0 : versions->back();
}

absl::Status VersionPublisher::Retire(const std::string& model, int64_t version) const {
  const fs::path model_dir = fs::path(root_) / model;
  const fs::path dir = model_dir / std::to_string(version);
  const fs::path tombstone = model_dir / absl::StrCat(kRetiredPrefix, version, ".", RandomSuffix());
  if (::rename(dir.c_str(), tombstone.c_str()) != 0) return Errno("cannot retire", dir.string());
  if (absl::Status s = FsyncDirectory(model_dir.string()); !s.ok()) return s;
  std::error_code ec;
  fs::remove_all(tombstone, ec);  // a leftover is deleted by RemoveLeftovers at start-up
  return absl::OkStatus();
}

int VersionPublisher::RemoveLeftovers(const std::string& model) const {
  std::error_code ec;
  std::vector<fs::path> leftovers;
  for (const auto& entry : fs::directory_iterator(fs::path(root_) / model, ec)) {
    const std::string name = entry.path().filename().string();
    if (absl::StartsWith(name, kRetiredPrefix) || absl::StartsWith(name, kPublishPrefix)) {
      leftovers.push_back(entry.path());
    }
  }
  for (const fs::path& p : leftovers) fs::remove_all(p, ec);
  return static_cast<int>(leftovers.size());
}

int64_t VersionPublisher::DiskBytes(const std::string& model) const {
  std::error_code ec;
  int64_t bytes = 0;
  fs::recursive_directory_iterator it(fs::path(root_) / model, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    std::error_code size_ec;
    if (it->is_regular_file(size_ec) && !it->is_symlink(size_ec)) {
      const uintmax_t n = it->file_size(size_ec);
      if (!size_ec) bytes += static_cast<int64_t>(n);
    }
  }
  return bytes;
}

namespace {

absl::StatusOr<std::string> ReadWhole(const std::string& model, int64_t version,
                                      const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("model \"", model, "\" version ", version, ": no file ", path));
  }
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

absl::StatusOr<std::string> VersionPublisher::ReadVersion(const std::string& model,
                                                          int64_t version) const {
  return ReadWhole(model, version, ModelPath(model, version));
}

std::string VersionPublisher::FloatSourcePath(const std::string& model, int64_t version) const {
  return (fs::path(root_) / model / std::to_string(version) / kFloatSourceFile).string();
}

absl::StatusOr<std::string> VersionPublisher::ReadFloatSource(const std::string& model,
                                                              int64_t version) const {
  return ReadWhole(model, version, FloatSourcePath(model, version));
}

bool VersionPublisher::PublishedHere(const std::string& model, int64_t version) const {
  std::error_code ec;
  return fs::exists(fs::path(root_) / model / std::to_string(version) / kPublishedMarker, ec);
}

absl::StatusOr<int64_t> VersionPublisher::Publish(const std::string& model, absl::string_view onnx,
                                                  absl::string_view float_source) const {
  int64_t latest = 0;
  {
    absl::StatusOr<int64_t> l = LatestOnDisk(model);
    if (!l.ok()) return l.status();
    latest = *l;
  }
  const int64_t next = latest + 1;
  const fs::path model_dir = fs::path(root_) / model;
  const fs::path tmp_dir = model_dir / absl::StrCat(kPublishPrefix, next, ".", RandomSuffix());
  std::error_code ec;
  fs::create_directories(tmp_dir, ec);
  if (ec)
    return absl::InternalError(
        absl::StrCat("cannot create ", tmp_dir.string(), ": ", ec.message()));
  absl::Status s = WriteAndFsync((tmp_dir / "model.onnx").string(), onnx);
  if (s.ok() && !float_source.empty()) {
    s = WriteAndFsync((tmp_dir / kFloatSourceFile).string(), float_source);
  }
  if (s.ok()) s = WriteAndFsync((tmp_dir / kPublishedMarker).string(), "");
  if (s.ok()) s = FsyncDirectory(tmp_dir.string());
  const fs::path final_dir = model_dir / std::to_string(next);
  if (s.ok() && ::rename(tmp_dir.c_str(), final_dir.c_str()) != 0) {
    s = Errno("cannot rename a new version into", final_dir.string());
  }
  if (!s.ok()) {
    fs::remove_all(tmp_dir, ec);
    return s;
  }
  if (absl::Status d = FsyncDirectory(model_dir.string()); !d.ok()) return d;
  return next;
}

}  // namespace normserve
