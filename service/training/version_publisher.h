// Writes new model versions into the model repository atomically: the file is written
// to a dot-directory inside <repo>/<model>/ (the repository scanner ignores names that
// are not positive integers), fsync'ed, renamed to <repo>/<model>/<next>/ and the
// parent directory fsync'ed, so a crash leaves either no new version or a whole one.
#ifndef NORMSERVE_SERVICE_TRAINING_VERSION_PUBLISHER_H_
#define NORMSERVE_SERVICE_TRAINING_VERSION_PUBLISHER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace normserve {

// Beside an int8 version's model.onnx (a QDQ file, BatchNorm folded away): the float
// model with BatchNorm it was quantized from. A training session on that version observes
// statistics in it, and its commit quantizes the result again.
inline constexpr char kFloatSourceFile[] = "float_model.onnx";

// Directory helpers shared by the training state: write-fsync-rename of a small file,
// and fsync of a directory (makes a create or rename durable).
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents);
absl::Status FsyncDirectory(const std::string& dir);

class VersionPublisher {
 public:
  explicit VersionPublisher(std::string repository_root) : root_(std::move(repository_root)) {}

  const std::string& root() const { return root_; }

  // Highest numbered version directory of `model` holding a model.onnx (0 if none).
  absl::StatusOr<int64_t> LatestOnDisk(const std::string& model) const;
  // <repo>/<model>/<version>/model.onnx
  std::string ModelPath(const std::string& model, int64_t version) const;
  // The bytes of a version's file; NOT_FOUND names the path.
  absl::StatusOr<std::string> ReadVersion(const std::string& model, int64_t version) const;
  // <repo>/<model>/<version>/float_model.onnx, and its bytes (NOT_FOUND: a float version).
  std::string FloatSourcePath(const std::string& model, int64_t version) const;
  absl::StatusOr<std::string> ReadFloatSource(const std::string& model, int64_t version) const;

  // Publishes `onnx` (and `float_source` beside it unless empty) as version
  // LatestOnDisk + 1 and returns its number. Callers serialise publications of one model
  // (TrainingManager holds its publish lock).
  absl::StatusOr<int64_t> Publish(const std::string& model, absl::string_view onnx,
                                  absl::string_view float_source = {}) const;

  // Whether Publish wrote this version (operator-provided versions are never pruned).
  bool PublishedHere(const std::string& model, int64_t version) const;
  // Numbered version directories of `model` holding a model.onnx, ascending.
  absl::StatusOr<std::vector<int64_t>> VersionsOnDisk(const std::string& model) const;
  // Retires a version in one atomic step: renames <model>/<version> to a dot-name the
  // repository scanner ignores (so no load can start on it afterwards), fsyncs the
  // model directory, then deletes the renamed tree. A crash leaves the version whole
  // or a leftover that RemoveLeftovers deletes.
  absl::Status Retire(const std::string& model, int64_t version) const;
  // Deletes what an interrupted Publish or Retire left in <model>/ (dot-directories
  // named by this class); returns how many.
  int RemoveLeftovers(const std::string& model) const;
  // Bytes of the regular files under <repo>/<model>/ (symlinks not followed).
  int64_t DiskBytes(const std::string& model) const;

 private:
  std::string root_;
};

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_TRAINING_VERSION_PUBLISHER_H_
