// PyTorch 1.13 exports nn.GELU / F.gelu as element-wise arithmetic (the same nodes at
// opsets 13 to 17, with or without constant folding):
//   exact: Div(x, sqrt 2) -> Erf -> Add(1) -> Mul(x, .) -> Mul(0.5)
//   tanh:  Mul(x, x) -> Mul(x, .) -> Mul(0.044715) -> Add(x, .) -> Mul(sqrt(2/pi)) -> Tanh
//          -> Add(1) -> Mul(x, .) -> Mul(0.5)
// This pass replaces each chain by one ONNX-style "Gelu" node (approximate "none" / "tanh")
// that runs as oneDNN eltwise_gelu_erf / eltwise_gelu_tanh, or as a post-op of the
// MatMul/Gemm/Conv producing x (post_op_fusion.h).
#ifndef NORMSERVE_KERNELS_GELU_FUSION_H_
#define NORMSERVE_KERNELS_GELU_FUSION_H_

#include "kernels/specialize.h"

namespace normserve {

// Returns the number of GELU chains fused. Also accepted: operands of Add/Mul in either
// order, Mul(x, 1/sqrt 2) for the Div, Pow(x, 3) for the cube, and the 0.5 applied to x
// first (Mul(Mul(x, 0.5), 1 + erf)) or to the bracket (Mul(x, Mul(1 + erf, 0.5))).
// Intermediate values must have no other reader and not be graph outputs.
int FuseGelus(SpecializedGraph* g);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_GELU_FUSION_H_
