// Test helper: runs normserve-cli's input path on one file and writes the tensor it would
// send as .npy, so that tests/tools/image_preprocess_oracle_test.py can compare it with
// PIL/torchvision. Usage: preprocess_dump FILE OUT.npy C H W [PREPROCESS_JSON]
#include <cstdio>
#include <fstream>
#include <string>

#include "absl/strings/numbers.h"
#include "kernels/npy_io.h"
#include "tools/input_file.h"

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: preprocess_dump FILE OUT.npy C H W [PREPROCESS_JSON]\n");
    return 2;
  }
  normserve::v1::GetModelMetadataResponse md;
  normserve::v1::TensorSpec* input = md.add_inputs();
  input->add_shape(-1);
  for (int i = 3; i < 6; ++i) {
    int64_t d = 0;
    if (!absl::SimpleAtoi(argv[i], &d)) return 2;
    input->add_shape(d);
  }
  absl::StatusOr<normserve::cli::InputSpec> spec =
      normserve::cli::InputSpecFromMetadata(md, argc > 6 ? argv[6] : "");
  absl::StatusOr<std::string> bytes = normserve::cli::ReadFileBytes(argv[1]);
  absl::StatusOr<normserve::Tensor> t =
      !spec.ok()    ? absl::StatusOr<normserve::Tensor>(spec.status())
      : !bytes.ok() ? absl::StatusOr<normserve::Tensor>(bytes.status())
                    : normserve::cli::InputFromBytes(*bytes, argv[1], *spec);
  if (!t.ok()) {
    std::fprintf(stderr, "%s\n", std::string(t.status().message()).c_str());
    return 1;
  }
  std::ofstream(argv[2], std::ios::binary) << normserve::SerializeNpy(*t);
  return 0;
}
