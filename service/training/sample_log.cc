// Append-only, checksummed, fsync'ed sample records of a training session.
#include "service/training/sample_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace normserve {
namespace {

std::atomic<bool> g_fail_next_fsync{false};
std::atomic<int64_t> g_sync_delay_ns{0};

constexpr uint32_t kMaxPayloadBytes = 1u << 30;
constexpr int kHeaderBytes = 8;

const std::array<uint32_t, 256>& Crc32cTable() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      // Reflected Castagnoli polynomial 0x1EDC6F41.
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  return table;
}

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutI64(std::string* out, int64_t v) {
  const uint64_t u = static_cast<uint64_t>(v);
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((u >> (8 * i)) & 0xff));
}
uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i)
    v |= static_cast<uint32_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}
int64_t GetI64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v |= static_cast<uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return static_cast<int64_t>(v);
}

// Bounds-checked reader over a payload.
class Reader {
 public:
  explicit Reader(absl::string_view data) : data_(data) {}
  bool U32(uint32_t* v) {
    if (data_.size() - pos_ < 4) return false;
    *v = GetU32(data_.data() + pos_);
    pos_ += 4;
    return true;
  }
  bool I64(int64_t* v) {
    if (data_.size() - pos_ < 8) return false;
    *v = GetI64(data_.data() + pos_);
    pos_ += 8;
    return true;
  }
  bool Bytes(size_t n, absl::string_view* out) {
    if (data_.size() - pos_ < n) return false;
    *out = data_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  bool done() const { return pos_ == data_.size(); }

 private:
  absl::string_view data_;
  size_t pos_ = 0;
};

absl::Status Errno(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

}  // namespace

void InjectSampleLogFsyncFailureForTest() { g_fail_next_fsync.store(true); }
void SetSampleLogSyncDelayForTest(absl::Duration delay) {
  g_sync_delay_ns.store(absl::ToInt64Nanoseconds(delay));
}

uint32_t Crc32cPortable(absl::string_view data) {
  const auto& table = Crc32cTable();
  uint32_t c = 0xffffffffu;
  for (char ch : data) c = table[(c ^ static_cast<unsigned char>(ch)) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

#if defined(__x86_64__)
namespace {
// The crc32 instruction computes the same reflected Castagnoli CRC as the table.
__attribute__((target("sse4.2"))) uint32_t Crc32cSse42(absl::string_view data) {
  uint64_t c = 0xffffffffu;
  const char* p = data.data();
  size_t n = data.size();
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);  // unaligned and strict-aliasing safe
    c = __builtin_ia32_crc32di(c, word);
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  for (; n > 0; ++p, --n) c32 = __builtin_ia32_crc32qi(c32, static_cast<unsigned char>(*p));
  return c32 ^ 0xffffffffu;
}
}  // namespace
#endif

uint32_t Crc32c(absl::string_view data) {
#if defined(__x86_64__)
  static const bool sse42 = __builtin_cpu_supports("sse4.2");
  if (sse42) return Crc32cSse42(data);
#endif
  return Crc32cPortable(data);
}

std::string EncodeSampleRecord(const SampleRecord& record) {
  std::string payload;
  PutU32(&payload, static_cast<uint32_t>(record.request_id.size()));
  payload.append(record.request_id);
  PutU32(&payload, static_cast<uint32_t>(record.inputs.size()));
  for (const Tensor& t : record.inputs) {
    PutU32(&payload, static_cast<uint32_t>(t.shape.size()));
    for (int64_t d : t.shape) PutI64(&payload, d);
    // float32 little-endian (the only hosts we build for are little-endian).
    payload.append(reinterpret_cast<const char*>(t.data.data()), t.data.size() * sizeof(float));
  }
  std::string out;
  out.reserve(payload.size() + kHeaderBytes);
  PutU32(&out, static_cast<uint32_t>(payload.size()));
  PutU32(&out, Crc32c(payload));
  out.append(payload);
  return out;
}

absl::StatusOr<SampleRecord> DecodeSamplePayload(absl::string_view payload) {
  Reader r(payload);
  SampleRecord rec;
  uint32_t id_len = 0, n = 0;
  absl::string_view bytes;
  if (!r.U32(&id_len) || id_len > 1024 || !r.Bytes(id_len, &bytes)) {
    return absl::DataLossError("bad request id");
  }
  rec.request_id = std::string(bytes);
  if (!r.U32(&n) || n > 64) return absl::DataLossError("bad tensor count");
  for (uint32_t i = 0; i < n; ++i) {
    Tensor t;
    uint32_t rank = 0;
    if (!r.U32(&rank) || rank > 8) return absl::DataLossError("bad tensor rank");
    int64_t elements = 1;
    for (uint32_t k = 0; k < rank; ++k) {
      int64_t d = 0;
      if (!r.I64(&d) || d < 0 || d > (int64_t{1} << 30)) return absl::DataLossError("bad dim");
      t.shape.push_back(d);
      elements *= d;
      if (elements > (int64_t{1} << 30)) return absl::DataLossError("tensor too large");
    }
    if (!r.Bytes(static_cast<size_t>(elements) * sizeof(float), &bytes)) {
      return absl::DataLossError("tensor data cut short");
    }
    t.data.resize(static_cast<size_t>(elements));
    // A zero-sized dim leaves data() null, and memcpy's pointers must not be (UBSan).
    if (!bytes.empty()) std::memcpy(t.data.data(), bytes.data(), bytes.size());
    rec.inputs.push_back(std::move(t));
  }
  if (!r.done()) return absl::DataLossError("trailing bytes in record");
  return rec;
}

absl::StatusOr<std::unique_ptr<SampleLog>> SampleLog::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("cannot open", path);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return Errno("cannot stat", path);
  }
  return std::unique_ptr<SampleLog>(new SampleLog(path, fd, st.st_size));
}

SampleLog::~SampleLog() {
  if (fd_ >= 0) ::close(fd_);
}

absl::StatusOr<SampleLogRecovery> SampleLog::Recover(const std::string& path) {
  SampleLogRecovery out;
  std::ifstream in(path, std::ios::binary);
  if (!in) return out;  // no log yet: an empty session
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string data = buf.str();
  size_t pos = 0;
  while (pos < data.size()) {
    if (data.size() - pos < kHeaderBytes) break;  // torn header
    const uint32_t len = GetU32(data.data() + pos);
    const uint32_t crc = GetU32(data.data() + pos + 4);
    if (len > kMaxPayloadBytes) {
      out.corrupt = true;
      out.corrupt_offset = static_cast<int64_t>(pos);
      out.corrupt_reason = absl::StrCat("record length ", len, " exceeds ", kMaxPayloadBytes);
      return out;
    }
    if (data.size() - pos - kHeaderBytes < len) break;  // torn payload
    const absl::string_view payload(data.data() + pos + kHeaderBytes, len);
    if (Crc32c(payload) != crc) {
      out.corrupt = true;
      out.corrupt_offset = static_cast<int64_t>(pos);
      out.corrupt_reason = "checksum mismatch";
      return out;
    }
    absl::StatusOr<SampleRecord> rec = DecodeSamplePayload(payload);
    if (!rec.ok()) {
      out.corrupt = true;
      out.corrupt_offset = static_cast<int64_t>(pos);
      out.corrupt_reason = std::string(rec.status().message());
      return out;
    }
    out.records.push_back(*std::move(rec));
    pos += kHeaderBytes + len;
  }
  if (pos < data.size()) {
    out.torn_tail = true;
    out.torn_bytes = static_cast<int64_t>(data.size() - pos);
    if (::truncate(path.c_str(), static_cast<off_t>(pos)) != 0) {
      return Errno("cannot truncate torn tail of", path);
    }
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
      ::fsync(fd);
      ::close(fd);
    }
  }
  return out;
}

absl::Status SampleLog::Write(absl::string_view encoded) {
  size_t written = 0;
  while (written < encoded.size()) {
    const ssize_t n = ::write(fd_, encoded.data() + written, encoded.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      absl::Status status = Errno("cannot append to", path_);
      // Cut this record's bytes; the records written before it stay whole.
      if (::ftruncate(fd_, static_cast<off_t>(written_size_)) != 0) {
        status = absl::InternalError(absl::StrCat(status.message(), "; and cannot truncate back"));
      }
      return status;
    }
    written += static_cast<size_t>(n);
  }
  written_size_ += static_cast<int64_t>(encoded.size());
  return absl::OkStatus();
}

absl::Status SampleLog::SyncData() const {
  if (const int64_t delay = g_sync_delay_ns.load(); delay > 0) {
    absl::SleepFor(absl::Nanoseconds(delay));
  }
  if (g_fail_next_fsync.exchange(false)) {
    errno = EIO;
    return Errno("cannot fsync", path_);
  }
  if (::fdatasync(fd_) != 0) return Errno("cannot fsync", path_);
  return absl::OkStatus();
}

absl::Status SampleLog::DropUnsynced() {
  if (::ftruncate(fd_, static_cast<off_t>(synced_size_)) != 0) {
    return Errno("cannot truncate unsynced records of", path_);
  }
  written_size_ = synced_size_;
  return absl::OkStatus();
}

}  // namespace normserve
