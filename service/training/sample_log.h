// The durable, append-only log of one training session's accepted samples (a
// write-ahead log): a record is [u32 payload length][u32 CRC-32C of payload][payload],
// payload = request id + the request's input tensors. A record is acknowledged only once
// it is fdatasync'ed, so an acknowledged Accumulate survives kill -9 and power loss; one
// sync may cover the records of many concurrent writers (the session's group commit).
#ifndef NORMSERVE_SERVICE_TRAINING_SAMPLE_LOG_H_
#define NORMSERVE_SERVICE_TRAINING_SAMPLE_LOG_H_

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "kernels/tensor.h"

namespace normserve {

// CRC-32C (Castagnoli), the checksum of every WAL record: the SSE4.2 crc32 instruction
// where the CPU has it (8 bytes a cycle; a 224x224x3 input is 602 KB), else a table.
uint32_t Crc32c(absl::string_view data);
// The table version alone, for tests that compare the two.
uint32_t Crc32cPortable(absl::string_view data);

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

  // The steps of an append, split for the session's group commit. Write, MarkSynced and
  // DropUnsynced are called by one thread at a time (the session's lock); SyncData may run
  // beside Write (it reads only the fd).
  //
  // Appends one encoded record (EncodeSampleRecord) without syncing. On failure the
  // file is cut back to its length before this record and the error returned.
  absl::Status Write(absl::string_view encoded);
  // fdatasync: everything written before the call is durable when it returns OK.
  absl::Status SyncData() const;
  // `written` (a written_size() read before SyncData) is durable.
  void MarkSynced(int64_t written) { synced_size_ = std::max(synced_size_, written); }
  // After a failed sync nothing unsynced can be trusted: cut the file back to the last
  // synced length, so a retry appends after the last acknowledged record.
  absl::Status DropUnsynced();

  const std::string& path() const { return path_; }
  int64_t size() const { return synced_size_; }
  int64_t written_size() const { return written_size_; }

 private:
  SampleLog(std::string path, int fd, int64_t size)
      : path_(std::move(path)), fd_(fd), synced_size_(size), written_size_(size) {}
  const std::string path_;
  const int fd_ = -1;
  int64_t synced_size_ = 0;
  int64_t written_size_ = 0;
};

// Test hooks: the next fsync of any SampleLog fails with EIO (then clears); every
// fsync takes at least `delay` longer (a slow disk, so concurrent writers form groups).
void InjectSampleLogFsyncFailureForTest();
void SetSampleLogSyncDelayForTest(absl::Duration delay);

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_TRAINING_SAMPLE_LOG_H_
