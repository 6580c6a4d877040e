// The state shared by every operator lowering while one specialized graph becomes a Plan:
// runtime values and the layouts they live in, arena buffers, constants, steps. Op
// lowerings (kernels/ops/*.cc, registered in kernels/ops/op_registry.cc) use only this API.
#ifndef NORMSERVE_KERNELS_LOWERING_CONTEXT_H_
#define NORMSERVE_KERNELS_LOWERING_CONTEXT_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "dnnl.hpp"
#include "kernels/plan.h"
#include "kernels/post_op_fusion.h"
#include "kernels/specialize.h"

namespace normserve {

// Short names for oneDNN's memory types, shared by the context and every op lowering.
using md = dnnl::memory::desc;
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;
using dims = dnnl::memory::dims;

// Plain (row-major) float32 layout of `d`, and the "let the primitive choose" one.
// Custom (non-oneDNN) kernels read and write float32: they take their inputs through
// InLayout(name, Plain(...)) or an AsF32 desc, which converts a bf16 value.
dnnl::memory::desc Plain(const dnnl::memory::dims& d);
dnnl::memory::desc Any(const dnnl::memory::dims& d);
// `d`'s layout (dims, blocking, strides) with another element type.
dnnl::memory::desc WithType(const dnnl::memory::desc& d, dnnl::memory::data_type t);
inline dnnl::memory::desc AsF32(const dnnl::memory::desc& d) {
  return WithType(d, dnnl::memory::data_type::f32);
}
// Channels-last (N, spatial..., C) and 16-channel-blocked (nChw16c kin) tags, rank 3 to 5.
dnnl::memory::format_tag ChannelsLastTag(size_t rank);
dnnl::memory::format_tag BlockedTag(size_t rank);
// `d` with leading 1s up to `rank` (numpy broadcasting as oneDNN wants it).
dnnl::memory::dims PadRank(const dnnl::memory::dims& d, size_t rank);
// A constant's values as float32.
std::vector<float> Floats(const ConstTensor& t);
// " +sum+eltwise_relu" for step descriptions; "" without post-ops.
std::string PostOpsText(const FusedNode& f);
// True when the only post-op is a plain ReLU (what a normalization fuses in oneDNN).
bool FusedRelu(const FusedNode& f);

// A runtime value: an arena buffer viewed through a memory descriptor. Several values
// (views, a value and its reordered copies) may share a buffer.
struct Val {
  int buffer = -1;
  dnnl::memory::desc desc;
};

class LoweringContext {
 public:
  LoweringContext(const SpecializedGraph& graph, const CompileOptions& options, int64_t opset,
                  Plan* plan, const absl::flat_hash_set<std::string>* winograd_convs);

  // --- Driven by BuildPlan ---
  // Records last uses and registers the graph inputs (materialized on first use).
  void Begin(const std::vector<FusedNode>& nodes);
  // The index (in `nodes`) of the node being lowered.
  void SetCurrentNode(int index) { cur_ = index; }
  // Output reorders, scratchpad size, arena layout, constant bytes.
  absl::Status Finish(bool with_outputs);

  // --- For op lowerings ---
  const SpecializedGraph& graph() const { return g_; }
  const CompileOptions& options() const { return options_; }
  int64_t opset() const { return opset_; }
  // Convolutions whose algorithm was fixed by an earlier plan (nullptr: choose freely).
  const absl::flat_hash_set<std::string>* winograd_convs() const { return winograd_convs_; }
  Plan& plan() { return *plan_; }
  // Element type of activations between oneDNN primitives: bf16 in a bf16 plan (see
  // EffectivePrecision), else f32. ActAny/ActPlain are Any/Plain in that type.
  dnnl::memory::data_type act_dt() const { return act_dt_; }
  dnnl::memory::desc ActAny(const dnnl::memory::dims& d) const { return WithType(Any(d), act_dt_); }
  dnnl::memory::desc ActPlain(const dnnl::memory::dims& d) const {
    return WithType(Plain(d), act_dt_);
  }

  dnnl::memory::dims DimsOf(const std::string& value) const { return g_.ShapeOf(value); }
  bool IsConst(const std::string& value) const { return g_.IsConst(value); }
  const ConstTensor& ConstOf(const std::string& value) const { return g_.consts.at(value); }

  // A new arena buffer of `desc`'s size, holding no value yet.
  Val NewVal(const dnnl::memory::desc& desc);
  // Names `v` as the runtime value `name` (a node's output).
  void Define(const std::string& name, const Val& v);
  // The value as its producer left it (a graph input is materialized plain).
  absl::StatusOr<Val> Get(const std::string& name);
  // The value in layout `want`: reordered once at its first such use, then reused.
  absl::StatusOr<Val> InLayout(const std::string& name, const dnnl::memory::desc& want);
  absl::StatusOr<Val> PlainVal(const std::string& name) {
    return InLayout(name, Plain(DimsOf(name)));
  }
  // True when the value is a graph input not yet materialized or was produced plain.
  bool IsPlainOrPending(const std::string& name) const;
  // True when `name` is one of the graph's inputs (what a client sent, in f32).
  bool IsGraphInput(const std::string& name) const;
  // True when `v` (the value `name`) is read for the last time by the current node, is its
  // buffer's only value and has no reordered copies: its buffer may be overwritten.
  bool DiesHere(const std::string& name, const Val& v);
  // After reusing a dead value's buffer for a new one: the buffer holds only that one.
  void SetSoleValue(int buffer) { buffer_values_[buffer] = 1; }

  // Memory references for PlanStep::args.
  int Ref(const Val& v) { return AddRef({MemRef::Kind::kArena, v.buffer, v.desc}); }
  int AddRef(MemRef r);
  // A constant in layout `want` (reordered once, here at compile time) / plain.
  int Const(const std::vector<float>& data, const dnnl::memory::dims& d,
            const dnnl::memory::desc& want);
  int ConstPlain(const std::vector<float>& data, const dnnl::memory::dims& d) {
    return Const(data, d, Plain(d));
  }

  // Attributes every primitive gets (user scratchpad) plus `post` as oneDNN post-ops.
  dnnl::primitive_attr Attr(const std::vector<PostOp>& post = {});
  // Appends a primitive step; its scratchpad argument is added when it needs one. In a
  // reduced-precision plan the description ends with the step's element types.
  void AddStep(const std::string& what, const dnnl::primitive_desc_base& pd, dnnl::primitive prim,
               std::vector<std::pair<int, int>> args);
  // Appends a custom (non-oneDNN) step.
  void AddCustomStep(PlanStep step) { plan_->steps.push_back(std::move(step)); }
  absl::Status AddReorder(int src_ref, const Val& dst, const std::string& what);
  // A reorder multiplying by `scale` on the way: quantizes an f32 value into a u8/s8 one
  // (oneDNN rounds to nearest even and saturates, as ONNX QuantizeLinear does).
  void AddScaledReorder(const Val& src, const Val& dst, float scale, const std::string& what);
  // One eltwise primitive `a` on `src` into a new buffer.
  absl::StatusOr<Val> Eltwise(const std::string& name, const Val& src, const Activation& a);

 private:
  void AddStepDescribed(const std::string& what, const std::string& suffix,
                        const dnnl::primitive_desc_base& pd, dnnl::primitive prim,
                        std::vector<std::pair<int, int>> args);
  // A reorder step; a change of element type is counted in the plan's conversion cost.
  void AddTypedReorder(const dnnl::memory::desc& src, int src_ref, const dnnl::memory::desc& dst,
                       int dst_ref, const std::string& what);
  absl::StatusOr<Val> OutputTo(int dst_ref, const Val& src, const std::string& what);
  void AssignOffsets();

  const SpecializedGraph& g_;
  const CompileOptions& options_;
  const int64_t opset_;
  Plan* plan_;
  const absl::flat_hash_set<std::string>* winograd_convs_;
  const dnnl::memory::data_type act_dt_;
  dnnl::stream stream_;
  absl::flat_hash_map<std::string, Val> vals_;
  absl::flat_hash_map<std::string, std::vector<Val>> alternates_;
  absl::flat_hash_map<std::string, int> last_use_;
  absl::flat_hash_map<std::string, int> pending_inputs_;
  std::vector<size_t> buffer_sizes_;
  std::vector<int> buffer_values_;
  int scratch_ref_ = 0;
  int cur_ = 0;
};

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_LOWERING_CONTEXT_H_
