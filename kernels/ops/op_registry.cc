#include "kernels/ops/op_registry.h"

#include "absl/container/flat_hash_map.h"

namespace normserve {

// Defined in kernels/ops/<family>.cc.
absl::Status LowerActivation(const FusedNode& f, LoweringContext& ctx);     // eltwise.cc
absl::Status LowerBatchNorm(const FusedNode& f, LoweringContext& ctx);      // normalization.cc
absl::Status LowerBinary(const FusedNode& f, LoweringContext& ctx);         // binary.cc
absl::Status LowerConcat(const FusedNode& f, LoweringContext& ctx);         // concat.cc
absl::Status LowerConv(const FusedNode& f, LoweringContext& ctx);           // conv.cc
absl::Status LowerGroupNorm(const FusedNode& f, LoweringContext& ctx);      // normalization.cc
absl::Status LowerIdentity(const FusedNode& f, LoweringContext& ctx);       // view.cc
absl::Status LowerInnerProduct(const FusedNode& f, LoweringContext& ctx);   // inner_product.cc
absl::Status LowerLayerNorm(const FusedNode& f, LoweringContext& ctx);      // normalization.cc
absl::Status LowerMatMul(const FusedNode& f, LoweringContext& ctx);         // inner_product.cc
absl::Status LowerPool(const FusedNode& f, LoweringContext& ctx);           // pool.cc
absl::Status LowerReduceMean(const FusedNode& f, LoweringContext& ctx);     // reduce.cc
absl::Status LowerSoftmax(const FusedNode& f, LoweringContext& ctx);        // softmax.cc
absl::Status LowerTranspose(const FusedNode& f, LoweringContext& ctx);      // transpose.cc
absl::Status LowerView(const FusedNode& f, LoweringContext& ctx);           // view.cc

OpLowering FindOpLowering(const std::string& op) {
  static const auto* table = new absl::flat_hash_map<std::string, OpLowering>{
      {"Abs", LowerActivation},
      {"Add", LowerBinary},
      {"AveragePool", LowerPool},
      {"BatchNormalization", LowerBatchNorm},
      {"Clip", LowerActivation},
      {"Concat", LowerConcat},
      {"Conv", LowerConv},
      {"Div", LowerBinary},
      {"Dropout", LowerIdentity},
      {"Exp", LowerActivation},
      {"Flatten", LowerView},
      {"Gemm", LowerInnerProduct},
      {"GlobalAveragePool", LowerPool},
      {"GlobalMaxPool", LowerPool},
      {"GroupNorm", LowerGroupNorm},  // produced by group_norm_fusion.h
      {"HardSigmoid", LowerActivation},
      {"HardSwish", LowerActivation},
      {"Identity", LowerIdentity},
      {"InstanceNormalization", LowerGroupNorm},
      {"LayerNormalization", LowerLayerNorm},
      {"LeakyRelu", LowerActivation},
      {"MatMul", LowerMatMul},
      {"MaxPool", LowerPool},
      {"Mul", LowerBinary},
      {"Pow", LowerActivation},
      {"ReduceMean", LowerReduceMean},
      {"Relu", LowerActivation},
      {"Reshape", LowerView},
      {"Sigmoid", LowerActivation},
      {"Softmax", LowerSoftmax},
      {"Sqrt", LowerActivation},
      {"Squeeze", LowerView},
      {"Sub", LowerBinary},
      {"Tanh", LowerActivation},
      {"Transpose", LowerTranspose},
      {"Unsqueeze", LowerView},
  };
  auto it = table->find(op);
  return it == table->end() ? nullptr : it->second;
}

}  // namespace normserve
