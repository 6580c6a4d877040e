// Host tensors at the engine boundary: dense, row-major (NCHW for images), float32.
#ifndef NORMSERVE_KERNELS_TENSOR_H_
#define NORMSERVE_KERNELS_TENSOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace normserve {

// Number of elements of `shape`, or an error naming the overflow (a client may send
// any dims; the product must fit in int64 and every dim must be >= 0).
absl::StatusOr<int64_t> ShapeElementCount(absl::Span<const int64_t> shape);

// "[1,3,224,224]"
std::string ShapeToString(absl::Span<const int64_t> shape);

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// A borrowed, read-only float32 tensor; the caller keeps `data` alive for the call.
struct TensorView {
  const float* data = nullptr;
  std::vector<int64_t> shape;
};

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_TENSOR_H_
