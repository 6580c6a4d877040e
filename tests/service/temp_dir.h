// Test helper: a fresh directory under $TMPDIR that lives as long as the object.
#ifndef NORMSERVE_TESTS_SERVICE_TEMP_DIR_H_
#define NORMSERVE_TESTS_SERVICE_TEMP_DIR_H_

#include <string>

namespace normserve::testing {

// Removed with everything in it by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace normserve::testing

#endif  // NORMSERVE_TESTS_SERVICE_TEMP_DIR_H_
