// A compiled, immutable execution plan for one input shape: oneDNN primitives with their
// argument bindings, constant (reordered) weights, and an arena layout for activations.
// Execution state (arena, scratchpad, memory objects) lives in ExecutionContext.
#ifndef NORMSERVE_KERNELS_PLAN_H_
#define NORMSERVE_KERNELS_PLAN_H_

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "dnnl.hpp"
#include "kernels/engine.h"
#include "kernels/graph.h"
#include "kernels/model.h"

namespace normserve {

dnnl::engine& CpuEngine();

// Where a primitive argument lives.
struct MemRef {
  enum class Kind { kArena, kConst, kInput, kOutput, kScratchpad };
  Kind kind = Kind::kArena;
  int index = 0;  // arena buffer id, const id, graph input/output index
  dnnl::memory::desc md;
};

// A step that is not a primitive (statistics probes): gets the bound memories.
using CustomStep = std::function<void(const std::vector<dnnl::memory>& mems, BnObservations* obs)>;

struct PlanStep {
  std::string what;  // for DescribePlan
  dnnl::primitive primitive;
  CustomStep custom;
  std::vector<std::pair<int, int>> args;  // (DNNL_ARG_*, memref index)
};

class Plan {
 public:
  int64_t batch = 1;               // input_shapes[0][0]
  std::vector<ValueSpec> inputs;   // concrete shapes
  std::vector<ValueSpec> outputs;  // concrete shapes (empty with stop_after_observed)
  std::vector<MemRef> memrefs;
  std::vector<dnnl::memory> consts;    // weights in the layout their primitive chose
  std::vector<size_t> buffer_offsets;  // arena buffer id -> byte offset
  size_t arena_bytes = 0;
  size_t scratchpad_bytes = 0;
  size_t const_bytes = 0;  // all of `consts`, for a plan cache's byte budget
  std::vector<PlanStep> steps;
  double flops = 0;
  // The precision the plan runs in (EffectivePrecision of its options).
  Precision precision = Precision::kFp32;
  // Reorders that change the element type (f32 <-> bf16 at graph inputs and outputs and
  // around steps that run in f32) and the bytes they read and write per run.
  int type_conversions = 0;
  size_t type_conversion_bytes = 0;
  // Convolutions (node names) that run Winograd.
  absl::flat_hash_set<std::string> winograd_convs;
};

// Specializes, rewrites (BN folding, GroupNorm fusion, post-op fusion) and lowers `model`
// for the concrete `input_shapes` (one per graph input, see Specialize) into a Plan.
// `winograd_convs`, when given, fixes which convolutions run Winograd (a choice made for
// another shape); otherwise options.conv_algorithm decides.
absl::StatusOr<std::shared_ptr<const Plan>> BuildPlan(
    const Model& model, const std::vector<std::vector<int64_t>>& input_shapes,
    const CompileOptions& options,
    const absl::flat_hash_set<std::string>* winograd_convs = nullptr);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_PLAN_H_
