// libFuzzer target: config.json text -> ParseModelConfig, as the repository reads it at
// every load and reload (an operator's file, possibly half-written).
#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "service/model_repository.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view json(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<normserve::v1::ModelConfig> config =
      normserve::ParseModelConfig(json, "fuzz/config.json");
  if (config.ok()) {
    // What the repository does next with a parsed config: pick versions from a policy.
    (void)normserve::SelectVersions(config->version_policy(), {1, 2, 3, 7});
  }
  return 0;
}
