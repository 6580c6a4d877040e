// Bounded quoting of client- and file-supplied values in error messages.
#include "service/client_echo.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace normserve {

std::string Echo(absl::string_view value) {
  if (value.size() <= kEchoPrefixBytes) return absl::CHexEscape(value);
  return absl::StrCat(absl::CHexEscape(value.substr(0, kEchoPrefixBytes)), "... (", value.size(),
                      " bytes)");
}

}  // namespace normserve
