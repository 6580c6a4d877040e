// libFuzzer target: training sample-log bytes -> SampleLog::Recover (the replay a session
// runs at every server start) and DecodeSamplePayload. A second pass frames the bytes
// as one record with a valid CRC-32C, so the decoder is reached past the checksum.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "service/training/sample_log.h"

namespace {

// One file per fuzzing process: libFuzzer's -jobs/-workers run several at once.
const std::string& LogPath() {
  const char* dir = std::getenv("TMPDIR");
  static const std::string* path =
      new std::string(absl::StrCat(dir != nullptr && *dir != '\0' ? dir : "/tmp",
                                   "/normserve_sample_log_fuzz.", ::getpid(), ".wal"));
  return *path;
}

void PutU32(uint32_t v, std::string* out) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void Replay(const std::string& bytes) {
  {
    std::ofstream out(LogPath(), std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  (void)normserve::SampleLog::Recover(LogPath());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  Replay(bytes);
  (void)normserve::DecodeSamplePayload(bytes);
  std::string framed;
  PutU32(static_cast<uint32_t>(bytes.size()), &framed);
  PutU32(normserve::Crc32c(bytes), &framed);
  framed += bytes;
  Replay(framed);
  return 0;
}
