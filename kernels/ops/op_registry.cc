#include "kernels/ops/op_registry.h"

#include "absl/container/flat_hash_map.h"

namespace normserve {

// Defined in kernels/ops/<family>.cc.
absl::Status LowerActivation(const FusedNode& f, LoweringContext& ctx);    // eltwise.cc
absl::Status LowerBatchNorm(const FusedNode& f, LoweringContext& ctx);     // normalization.cc
absl::Status LowerBinary(const FusedNode& f, LoweringContext& ctx);        // binary.cc
absl::Status LowerConcat(const FusedNode& f, LoweringContext& ctx);        // concat.cc
absl::Status LowerConv(const FusedNode& f, LoweringContext& ctx);          // conv.cc
absl::Status LowerErf(const FusedNode& f, LoweringContext& ctx);           // eltwise.cc
absl::Status LowerExpand(const FusedNode& f, LoweringContext& ctx);        // expand.cc
absl::Status LowerGroupNorm(const FusedNode& f, LoweringContext& ctx);     // normalization.cc
absl::Status LowerIdentity(const FusedNode& f, LoweringContext& ctx);      // view.cc
absl::Status LowerInnerProduct(const FusedNode& f, LoweringContext& ctx);  // inner_product.cc
absl::Status LowerLayerNorm(const FusedNode& f, LoweringContext& ctx);     // normalization.cc
absl::Status LowerMatMul(const FusedNode& f, LoweringContext& ctx);        // inner_product.cc
absl::Status LowerPad(const FusedNode& f, LoweringContext& ctx);           // pad.cc
absl::Status LowerPool(const FusedNode& f, LoweringContext& ctx);          // pool.cc
absl::Status LowerResize(const FusedNode& f, LoweringContext& ctx);        // resize.cc
absl::Status LowerSlice(const FusedNode& f, LoweringContext& ctx);         // slice.cc
absl::Status LowerSplit(const FusedNode& f, LoweringContext& ctx);         // slice.cc
absl::Status LowerReduce(const FusedNode& f, LoweringContext& ctx);        // reduce.cc
absl::Status LowerSoftmax(const FusedNode& f, LoweringContext& ctx);       // softmax.cc
absl::Status LowerTranspose(const FusedNode& f, LoweringContext& ctx);     // transpose.cc
absl::Status LowerView(const FusedNode& f, LoweringContext& ctx);          // view.cc

absl::StatusOr<Shape> InferActivationShape(const Node& n, const ShapeContext& ctx);  // eltwise.cc
absl::StatusOr<Shape> InferChannelNormShape(const Node& n,
                                            const ShapeContext& ctx);            // normalization.cc
absl::StatusOr<Shape> InferConcatShape(const Node& n, const ShapeContext& ctx);  // concat.cc
absl::StatusOr<Shape> InferConvShape(const Node& n, const ShapeContext& ctx);    // conv.cc
absl::StatusOr<Shape> InferExpandShape(const Node& n, const ShapeContext& ctx);  // expand.cc
absl::StatusOr<Shape> InferDropoutShape(const Node& n, const ShapeContext& ctx);  // view.cc
absl::StatusOr<Shape> InferGemmShape(const Node& n, const ShapeContext& ctx);  // inner_product.cc
absl::StatusOr<Shape> InferLayerNormShape(const Node& n,
                                          const ShapeContext& ctx);              // normalization.cc
absl::StatusOr<Shape> InferMatMulShape(const Node& n, const ShapeContext& ctx);  // inner_product.cc
absl::StatusOr<Shape> InferPadShape(const Node& n, const ShapeContext& ctx);     // pad.cc
absl::StatusOr<Shape> InferPoolShape(const Node& n, const ShapeContext& ctx);    // pool.cc
absl::StatusOr<Shape> InferReduceShape(const Node& n, const ShapeContext& ctx);  // reduce.cc
absl::StatusOr<Shape> InferResizeShape(const Node& n, const ShapeContext& ctx);  // resize.cc
absl::StatusOr<Shape> InferSliceShape(const Node& n, const ShapeContext& ctx);   // slice.cc
absl::StatusOr<Shape> InferSplitShape(const Node& n, const ShapeContext& ctx);   // slice.cc
absl::StatusOr<std::vector<Shape>> InferSplitShapes(const Node& n,
                                                    const ShapeContext& ctx);       // slice.cc
absl::StatusOr<Shape> InferTransposeShape(const Node& n, const ShapeContext& ctx);  // transpose.cc
absl::StatusOr<Shape> InferVariadicBroadcastShape(const Node& n,
                                                  const ShapeContext& ctx);    // binary.cc
absl::StatusOr<Shape> InferViewShape(const Node& n, const ShapeContext& ctx);  // view.cc

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
      {"Erf", {InferActivationShape, LowerErf}},
      {"Exp", {InferActivationShape, LowerActivation}},
      {"Expand", {InferExpandShape, LowerExpand}},
      {"Flatten", {InferViewShape, LowerView}},
      {"Gemm", {InferGemmShape, LowerInnerProduct}},
      {"Gelu", {InferActivationShape, LowerActivation}},  // ONNX opset 20, and gelu_fusion.h
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
      {"Max", {InferVariadicBroadcastShape, LowerBinary}},
      {"MaxPool", {InferPoolShape, LowerPool}},
      {"Min", {InferVariadicBroadcastShape, LowerBinary}},
      {"Mul", {BroadcastInputShapes, LowerBinary}},
      {"Neg", {InferActivationShape, LowerActivation}},
      {"Pad", {InferPadShape, LowerPad}},
      {"Pow", {InferActivationShape, LowerActivation}},
      {"Reciprocal", {InferActivationShape, LowerActivation}},
      {"ReduceL2", {InferReduceShape, LowerReduce}},
      {"ReduceMax", {InferReduceShape, LowerReduce}},
      {"ReduceMean", {InferReduceShape, LowerReduce}},
      {"ReduceSum", {InferReduceShape, LowerReduce}},
      {"Relu", {InferActivationShape, LowerActivation}},
      {"Reshape", {InferViewShape, LowerView}},
      {"Resize", {InferResizeShape, LowerResize}},
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
      {"Upsample", {InferResizeShape, LowerResize}},
  };
  auto it = table->find(op);
  return it == table->end() ? nullptr : &it->second;
}

}  // namespace normserve
