// Test helper: the Fashion-MNIST models the reduced-precision accuracy tests check, with the
// fp32 accuracy each must reach on the clean test set (the oracle that the file is the model).
#ifndef NORMSERVE_TESTS_KERNELS_FASHION_MODELS_H_
#define NORMSERVE_TESTS_KERNELS_FASHION_MODELS_H_

#include <cstdlib>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/npy_io.h"

namespace normserve {

inline std::string FashionEnv(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

struct FashionModel {
  std::string onnx_path;
  // normserve fp32 on the clean test set with the training statistics: within
  // `clean_fp32_tolerance` of `clean_fp32`.
  double clean_fp32 = 0;
  double clean_fp32_tolerance = 0;
};

// The default repository's BN-CNN (scripts/train_fashion_mnist.py); 0.862 is the
// recalibration experiment's frozen clean accuracy (docs/experiment.md).
inline FashionModel FashionBnCnn() {
  return {FashionEnv("NORMSERVE_SOURCE_DIR") + "/models/repository/fashion_bn_cnn/1/model.onnx",
          0.862, 0.005};
}

// The small BN ResNet scripts/train_fashion_resnet.py trains into $NORMSERVE_FASHION_RESNET
// (CTest fixture fashion_resnet). Its oracle is PyTorch's own accuracy of the same weights,
// written by the script: the two fp32 implementations may differ on a few near-ties, not
// more (0.1 points = 10 of 10000 images).
inline absl::StatusOr<FashionModel> FashionBnResnet() {
  const std::string dir = FashionEnv("NORMSERVE_FASHION_RESNET");
  auto pytorch = ReadNpyFile(dir + "/fashion_bn_resnet_accuracy.npy");
  if (!pytorch.ok()) return pytorch.status();
  if (pytorch->data.size() != 1) {
    return absl::InvalidArgumentError("fashion_bn_resnet_accuracy.npy: expected 1 value, got " +
                                      std::to_string(pytorch->data.size()));
  }
  return FashionModel{dir + "/repository/fashion_bn_resnet/1/model.onnx", pytorch->data[0], 0.001};
}

}  // namespace normserve

#endif  // NORMSERVE_TESTS_KERNELS_FASHION_MODELS_H_
