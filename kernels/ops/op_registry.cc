#include "kernels/ops/op_registry.h"

#include "absl/container/flat_hash_map.h"

namespace normserve {

// Defined in kernels/ops/<family>.cc.
absl::Status LowerActivation(const FusedNode& f, LoweringContext& ctx);     // eltwise.cc
absl::Status LowerBatchNorm(const FusedNode& f, LoweringContext& ctx);      // normalization.cc
absl::Status LowerBinary(const FusedNode& f, LoweringContext& ctx);         // binary.cc
absl::Status LowerConcat(const FusedNode& f, LoweringContext& ctx);         // concat.cc
absl::Status LowerConv(const FusedNode& f, LoweringContext& ctx);           // conv.cc
absl::Status LowerExpand(const FusedNode& f, LoweringContext& ctx);         // expand.cc
absl::Status LowerGroupNorm(const FusedNode& f, LoweringContext& ctx);      // normalization.cc
absl::Status LowerIdentity(const FusedNode& f, LoweringContext& ctx);       // view.cc
absl::Status LowerInnerProduct(const FusedNode& f, LoweringContext& ctx);   // inner_product.cc
absl::Status LowerLayerNorm(const FusedNode& f, LoweringContext& ctx);      // normalization.cc
absl::Status LowerMatMul(const FusedNode& f, LoweringContext& ctx);         // inner_product.cc
absl::Status LowerPad(const FusedNode& f, LoweringContext& ctx);            // pad.cc
absl::Status LowerPool(const FusedNode& f, LoweringContext& ctx);           // pool.cc
absl::Status LowerReduceMean(const FusedNode& f, LoweringContext& ctx);     // reduce.cc
absl::Status LowerSlice(const FusedNode& f, LoweringContext& ctx);          // slice.cc
absl::Status LowerSoftmax(const FusedNode& f, LoweringContext& ctx);        // softmax.cc
absl::Status LowerSplit(const FusedNode& f, LoweringContext& ctx);          // slice.cc
absl::Status LowerTranspose(const FusedNode& f, LoweringContext& ctx);      // transpose.cc
absl::Status LowerView(const FusedNode& f, LoweringContext& ctx);           // view.cc

absl::StatusOr<Shape> InferActivationShape(const Node& n, const ShapeContext& ctx);   // eltwise.cc
absl::StatusOr<Shape> InferChannelNormShape(const Node& n, const ShapeContext& ctx);  // normalization.cc
absl::StatusOr<Shape> InferConcatShape(const Node& n, const ShapeContext& ctx);       // concat.cc
absl::StatusOr<Shape> InferConvShape(const Node& n, const ShapeContext& ctx);         // conv.cc
absl::StatusOr<Shape> InferDropoutShape(const Node& n, const ShapeContext& ctx);      // view.cc
absl::StatusOr<Shape> InferExpandShape(const Node& n, const ShapeContext& ctx);       // expand.cc
absl::StatusOr<Shape> InferGemmShape(const Node& n, const ShapeContext& ctx);         // inner_product.cc
absl::StatusOr<Shape> InferLayerNormShape(const Node& n, const ShapeContext& ctx);    // normalization.cc
absl::StatusOr<Shape> InferMatMulShape(const Node& n, const ShapeContext& ctx);       // inner_product.cc
absl::StatusOr<Shape> InferPadShape(const Node& n, const ShapeContext& ctx);          // pad.cc
absl::StatusOr<Shape> InferPoolShape(const Node& n, const ShapeContext& ctx);         // pool.cc
absl::StatusOr<Shape> InferReduceShape(const Node& n, const ShapeContext& ctx);       // reduce.cc
absl::StatusOr<Shape> InferSliceShape(const Node& n, const ShapeContext& ctx);        // slice.cc
absl::StatusOr<Shape> InferSplitShape(const Node& n, const ShapeContext& ctx);        // slice.cc
absl::StatusOr<std::vector<Shape>> InferSplitShapes(const Node& n, const ShapeContext& ctx);  // slice.cc
absl::StatusOr<Shape> InferTransposeShape(const Node& n, const ShapeContext& ctx);    // transpose.cc
absl::StatusOr<Shape> InferViewShape(const Node& n, const ShapeContext& ctx);         // view.cc

const OpFunctions* FindOp(const std::string& op) {
  static const auto* table = new absl::flat_hash_map<std::string, OpFunctions>{
      {"Abs", {InferActivationShape, LowerActivation}},
      {"Add", {BroadcastInputShapes, LowerBinary}},
      {"AveragePool", {InferPoolShape, LowerPool}},
      {"BatchNormalization", {InferChannelNormShape, LowerBatchNorm}},
      {"Clip", {InferActivationShape, LowerActivation}},
      {"Concat", {InferConcatShape, LowerConcat}},
      {"Conv", {InferConvShape, LowerConv}},
      {"Div", {BroadcastInputShapes, LowerBinary}},
      {"Dropout", {InferDropoutShape, LowerIdentity}},
      {"Exp", {InferActivationShape, LowerActivation}},
      {"Expand", {InferExpandShape, LowerExpand}},
      {"Flatten", {InferViewShape, LowerView}},
      {"Gemm", {InferGemmShape, LowerInnerProduct}},
      {"GlobalAveragePool", {InferPoolShape, LowerPool}},
      {"GlobalMaxPool", {InferPoolShape, LowerPool}},
      {"GroupNorm", {nullptr, LowerGroupNorm}},  // produced by group_norm_fusion.h
      {"HardSigmoid", {InferActivationShape, LowerActivation}},
      {"HardSwish", {InferActivationShape, LowerActivation}},
      {"Identity", {SameShapeAsInput, LowerIdentity}},
      {"InstanceNormalization", {InferChannelNormShape, LowerGroupNorm}},
      {"LayerNormalization", {InferLayerNormShape, LowerLayerNorm}},
      {"LeakyRelu", {InferActivationShape, LowerActivation}},
      {"MatMul", {InferMatMulShape, LowerMatMul}},
      {"MaxPool", {InferPoolShape, LowerPool}},
      {"Mul", {BroadcastInputShapes, LowerBinary}},
      {"Pad", {InferPadShape, LowerPad}},
      {"Pow", {InferActivationShape, LowerActivation}},
      {"ReduceMean", {InferReduceShape, LowerReduceMean}},
      {"Relu", {InferActivationShape, LowerActivation}},
      {"Reshape", {InferViewShape, LowerView}},
      {"Sigmoid", {InferActivationShape, LowerActivation}},
      {"Slice", {InferSliceShape, LowerSlice}},
      {"Softmax", {SameShapeAsInput, LowerSoftmax}},
      {"Split", {InferSplitShape, LowerSplit, InferSplitShapes}},
      {"Sqrt", {InferActivationShape, LowerActivation}},
      {"Squeeze", {InferViewShape, LowerView}},
      {"Sub", {BroadcastInputShapes, LowerBinary}},
      {"Tanh", {InferActivationShape, LowerActivation}},
      {"Transpose", {InferTransposeShape, LowerTranspose}},
      {"Unsqueeze", {InferViewShape, LowerView}},
  };
  auto it = table->find(op);
  return it == table->end() ? nullptr : &it->second;
}

}  // namespace normserve
