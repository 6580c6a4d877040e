// How an error message quotes a value it was given (a model name, a version string, a
// path): a short, escaped prefix and the full length, so a client or a file cannot make a
// message grow with its input.
#ifndef NORMSERVE_SERVICE_CLIENT_ECHO_H_
#define NORMSERVE_SERVICE_CLIENT_ECHO_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace normserve {

// Values up to this many bytes are quoted whole; longer ones by a prefix of this size.
inline constexpr size_t kEchoPrefixBytes = 64;

// `value` C-escaped (non-printable bytes, quotes and backslashes), cut to a prefix of
// kEchoPrefixBytes followed by "... (N bytes)" when longer. Never longer than ~300 bytes.
std::string Echo(absl::string_view value);

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_CLIENT_ECHO_H_
