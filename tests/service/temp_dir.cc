#include "tests/service/temp_dir.h"

#include <stdlib.h>

#include <filesystem>
#include <system_error>

namespace normserve::testing {
namespace fs = std::filesystem;

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "normserve_test_XXXXXX").string();
  path_ = ::mkdtemp(tmpl.data());
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

}  // namespace normserve::testing
