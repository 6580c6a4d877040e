// Reading and writing float32 tensors as NumPy .npy files (format version 1.0/2.0,
// little-endian, C order): the exchange format with the PyTorch oracle and the CLI.
#ifndef NORMSERVE_KERNELS_NPY_IO_H_
#define NORMSERVE_KERNELS_NPY_IO_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"

namespace normserve {

absl::StatusOr<Tensor> ParseNpy(std::string_view bytes);
absl::StatusOr<Tensor> ReadNpyFile(const std::string& path);
std::string SerializeNpy(const Tensor& t);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_NPY_IO_H_
