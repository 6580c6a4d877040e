// BuildPlan: specialize a model to concrete input shapes, rewrite it (BN folding, GroupNorm
// fusion, post-op fusion) and lower it node by node through the op registry into a Plan.
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kernels/batch_norm_folding.h"
#include "kernels/gelu_fusion.h"
#include "kernels/group_norm_fusion.h"
#include "kernels/lowering_context.h"
#include "kernels/ops/op_registry.h"
#include "kernels/pad_folding.h"
#include "kernels/plan.h"
#include "kernels/post_op_fusion.h"
#include "kernels/specialize.h"
#include "kernels/status_macros.h"

namespace normserve {

dnnl::engine& CpuEngine() {
  static auto* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

namespace {

// Runs one node's lowering and names the node in its error (a thrown dnnl::error too).
template <typename F>
absl::Status Guard(const Node& n, F&& f) {
  try {
    absl::Status s = f();
    if (!s.ok() && !absl::StrContains(s.message(), n.name)) {
      return absl::Status(s.code(),
                          absl::StrCat("node \"", n.name, "\" (", n.op, "): ", s.message()));
    }
    return s;
  } catch (const dnnl::error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("node \"", n.name, "\" (", n.op, "): oneDNN cannot run it: ", e.what()));
  }
}

absl::Status Lower(const std::vector<FusedNode>& nodes,
                   const absl::flat_hash_set<std::string>& observed, const CompileOptions& options,
                   LoweringContext& ctx) {
  ctx.Begin(nodes);
  size_t observed_left = observed.size();
  for (size_t i = 0; i < nodes.size(); ++i) {
    ctx.SetCurrentNode(static_cast<int>(i));
    const FusedNode& f = nodes[i];
    if (f.node.op == "BatchNormalization" && observed.contains(f.node.name)) {
      const bool last = --observed_left == 0 && options.stop_after_observed;
      RETURN_IF_ERROR(Guard(f.node, [&] { return LowerObservedBatchNorm(f, !last, ctx); }));
      if (last) return ctx.Finish(false);
      continue;
    }
    const OpFunctions* op = FindOp(f.node.op);
    const OpLowering lower = op != nullptr ? op->lower : nullptr;
    RETURN_IF_ERROR(Guard(f.node, [&] {
      return lower != nullptr
                 ? lower(f, ctx)
                 : absl::InvalidArgumentError("operator is not supported by the planner");
    }));
  }
  return ctx.Finish(true);
}

absl::StatusOr<std::shared_ptr<const Plan>> BuildPlanOrThrow(
    const Model& model, const std::vector<std::vector<int64_t>>& input_shapes,
    const CompileOptions& options, const absl::flat_hash_set<std::string>* winograd_convs) {
  ASSIGN_OR_RETURN(SpecializedGraph g, Specialize(model.graph(), input_shapes));
  absl::flat_hash_set<std::string> observed(options.observed_bn_layers.begin(),
                                            options.observed_bn_layers.end());
  for (const auto& name : observed) {
    bool found = false;
    for (const auto& l : model.bn_layers()) found |= l.name == name;
    if (!found)
      return absl::NotFoundError(
          absl::StrCat("observed BN layer \"", name, "\" not found in the model"));
  }
  if (options.fold_batch_norm) RETURN_IF_ERROR(FoldBatchNorms(&g, observed));
  FoldZeroPads(&g);
  FuseGroupNorms(&g);
  FuseGelus(&g);
  std::vector<FusedNode> nodes = FusePostOps(g, options.fuse_post_ops);
  auto plan = std::make_shared<Plan>();
  plan->batch = g.inputs.empty() || g.inputs[0].shape.empty() ? 1 : g.inputs[0].shape[0];
  LoweringContext ctx(g, options, model.opset(), plan.get(), winograd_convs);
  RETURN_IF_ERROR(Lower(nodes, observed, options, ctx));
  return std::shared_ptr<const Plan>(std::move(plan));
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Plan>> BuildPlan(
    const Model& model, const std::vector<std::vector<int64_t>>& input_shapes,
    const CompileOptions& options, const absl::flat_hash_set<std::string>* winograd_convs) {
  // The one boundary for compile-time oneDNN exceptions: per-node ones are named by Guard;
  // this catches the rest (input and output reorders, constant reorders outside a node).
  try {
    return BuildPlanOrThrow(model, input_shapes, options, winograd_convs);
  } catch (const dnnl::error& e) {
    return absl::InvalidArgumentError(absl::StrCat("oneDNN cannot compile the model: ", e.what()));
  }
}

}  // namespace normserve
