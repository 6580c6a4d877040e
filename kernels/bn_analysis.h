// Shape-aware analysis of BatchNormalization layers: how many values per channel a single
// batch-1 request contributes (N*H*W with N=1), which decides whether the layer's
// statistics can ever be estimated from one request.
#ifndef NORMSERVE_KERNELS_BN_ANALYSIS_H_
#define NORMSERVE_KERNELS_BN_ANALYSIS_H_

#include <cstdint>
#include <string>
#include <vector>

namespace normserve {

enum class BnReliability {
  kUndefined,   // 1 value per channel: variance undefined (BN after dense / global pool)
  kUnreliable,  // fewer values than the threshold: estimable but noisy
  kFine,
};

const char* BnReliabilityName(BnReliability r);

struct BnLayerInfo {
  std::string name;   // ONNX node name (made unique at import)
  std::string input;  // ONNX value normalized by the layer
  int64_t channels = 0;
  std::vector<int64_t> input_shape;  // at batch 1
  int64_t values_per_channel = 0;    // per batch-1 request: product of dims except C
  BnReliability reliability = BnReliability::kFine;
  int topo_index = 0;            // order of the layer in the graph (upstream first)
  std::string mean_initializer;  // ONNX initializer names of the frozen statistics
  std::string var_initializer;   // (PyTorch writes "<module>.running_mean" / "_var")
};

// Threshold below which a layer is kUnreliable (values per channel per request).
inline constexpr int64_t kDefaultReliableValuesPerChannel = 16;

BnReliability ClassifyValuesPerChannel(int64_t values_per_channel, int64_t reliable_threshold);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_BN_ANALYSIS_H_
