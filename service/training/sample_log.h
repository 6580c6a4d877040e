// The durable, append-only log of one training session's accepted samples (a
// write-ahead log): a record is [u32 payload length][u32 CRC-32C of payload][payload],
// payload = request id + the request's input tensors. Append returns only once the
// record is fsync'ed, so an acknowledged Accumulate survives kill -9 and power loss.
#ifndef NORMSERVE_SERVICE_TRAINING_SAMPLE_LOG_H_
#define NORMSERVE_SERVICE_TRAINING_SAMPLE_LOG_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/tensor.h"

namespace normserve {

// CRC-32C (Castagnoli), software table; the checksum of every WAL record.
uint32_t Crc32c(absl::string_view data);

struct SampleRecord {
  std::string request_id;
  std::vector<Tensor> inputs;  // one per model input, in model order
};

// Record encoding, exposed for tests.
std::string EncodeSampleRecord(const SampleRecord& record);
absl::StatusOr<SampleRecord> DecodeSamplePayload(absl::string_view payload);

struct SampleLogRecovery {
  std::vector<SampleRecord> records;
  // A last record cut short (crash mid-append, never acknowledged): truncated away.
  bool torn_tail = false;
  int64_t torn_bytes = 0;
  // A complete record whose checksum does not match (or that does not decode): the
  // file is corrupt from `corrupt_offset` on; nothing after it is used.
  bool corrupt = false;
  int64_t corrupt_offset = 0;
  std::string corrupt_reason;
};

class SampleLog {
 public:
  // Opens (creating if missing) `path` for appending. Existing records are not read:
  // call Recover first.
  static absl::StatusOr<std::unique_ptr<SampleLog>> Open(const std::string& path);
  ~SampleLog();
  SampleLog(const SampleLog&) = delete;
  SampleLog& operator=(const SampleLog&) = delete;

  // Reads every record of `path`. A torn tail is truncated from the file (so later
  // appends follow the last good record); a corrupt record is reported, not truncated.
  static absl::StatusOr<SampleLogRecovery> Recover(const std::string& path);

  // Writes the record and fsyncs. On any failure the file is cut back to its previous
  // length (best effort) and the error returned: the caller must not apply the record.
  absl::Status Append(const SampleRecord& record);

  const std::string& path() const { return path_; }
  int64_t size() const { return size_; }

 private:
  SampleLog(std::string path, int fd, int64_t size)
      : path_(std::move(path)), fd_(fd), size_(size) {}
  std::string path_;
  int fd_ = -1;
  int64_t size_ = 0;
};

// Test hook: when set, the next fsync of any SampleLog fails with EIO (then clears).
void InjectSampleLogFsyncFailureForTest();

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_TRAINING_SAMPLE_LOG_H_
