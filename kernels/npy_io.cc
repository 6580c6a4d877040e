#include "kernels/npy_io.h"

#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "kernels/status_macros.h"

namespace normserve {

absl::StatusOr<Tensor> ParseNpy(std::string_view bytes) {
  static constexpr char kMagic[] = "\x93NUMPY";
  if (bytes.size() < 10 || bytes.substr(0, 6) != std::string_view(kMagic, 6)) {
    return absl::InvalidArgumentError("not a .npy file (bad magic)");
  }
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len, header_start;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return absl::InvalidArgumentError(".npy header truncated");
    uint32_t len;
    std::memcpy(&len, bytes.data() + 8, 4);
    header_len = len;
    header_start = 12;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(".npy version ", major, " is not supported"));
  }
  if (header_start + header_len > bytes.size())
    return absl::InvalidArgumentError(".npy header truncated");
  const std::string header(bytes.substr(header_start, header_len));
  if (header.find("'descr': '<f4'") == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(".npy dtype must be little-endian float32 ('<f4'): ", header));
  }
  if (header.find("'fortran_order': False") == std::string::npos) {
    return absl::InvalidArgumentError(".npy must be in C order");
  }
  const size_t open = header.find("'shape': (");
  const size_t close = header.find(')', open);
  if (open == std::string::npos || close == std::string::npos) {
    return absl::InvalidArgumentError(".npy header has no shape");
  }
  Tensor t;
  for (absl::string_view part :
       absl::StrSplit(header.substr(open + 10, close - open - 10), ',', absl::SkipEmpty())) {
    part = absl::StripAsciiWhitespace(part);
    if (part.empty()) continue;
    int64_t d;
    if (!absl::SimpleAtoi(part, &d) || d < 0)
      return absl::InvalidArgumentError(".npy shape is malformed");
    t.shape.push_back(d);
  }
  ASSIGN_OR_RETURN(int64_t n, ShapeElementCount(t.shape));
  const size_t data_start = header_start + header_len;
  if (bytes.size() - data_start != static_cast<size_t>(n) * sizeof(float)) {
    return absl::InvalidArgumentError(absl::StrCat(".npy data has ", bytes.size() - data_start,
                                                   " bytes; shape ", ShapeToString(t.shape),
                                                   " needs ", n * 4));
  }
  t.data.resize(n);
  std::memcpy(t.data.data(), bytes.data() + data_start, n * sizeof(float));
  return t;
}

absl::StatusOr<Tensor> ReadNpyFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrCat("cannot open \"", path, "\""));
  std::stringstream ss;
  ss << f.rdbuf();
  auto t = ParseNpy(ss.str());
  if (!t.ok())
    return absl::InvalidArgumentError(absl::StrCat("\"", path, "\": ", t.status().message()));
  return t;
}

std::string SerializeNpy(const Tensor& t) {
  std::string shape = absl::StrJoin(t.shape, ", ");
  if (t.shape.size() == 1) shape += ",";
  std::string header =
      absl::StrCat("{'descr': '<f4', 'fortran_order': False, 'shape': (", shape, "), }");
  // Pad so that the data starts on a 64-byte boundary, header ends with '\n'.
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::string out("\x93NUMPY\x01\x00", 8);
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>(header.size() >> 8));
  out += header;
  out.append(reinterpret_cast<const char*>(t.data.data()), t.data.size() * sizeof(float));
  return out;
}

}  // namespace normserve
