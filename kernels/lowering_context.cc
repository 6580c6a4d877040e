#include "kernels/lowering_context.h"

#include <algorithm>
#include <climits>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/arena_layout.h"
#include "kernels/status_macros.h"
#include "oneapi/dnnl/dnnl_debug.h"

namespace normserve {
namespace {

using Kind = MemRef::Kind;

constexpr size_t kAlign = 64;

tag PlainTag(size_t rank) {
  switch (rank) {
    case 1:
      return tag::a;
    case 2:
      return tag::ab;
    case 3:
      return tag::abc;
    case 4:
      return tag::abcd;
    case 5:
      return tag::abcde;
    default:
      return tag::abcdef;
  }
}

const char* TypeName(dt t) { return dnnl_dt2str(static_cast<dnnl_data_type_t>(t)); }

// " (bf16)", " (f32->bf16)": the element types a step reads and writes.
std::string TypesText(const md& src, const md& dst) {
  if (src.data_type() == dst.data_type()) return absl::StrCat(" (", TypeName(src.data_type()), ")");
  return absl::StrCat(" (", TypeName(src.data_type()), "->", TypeName(dst.data_type()), ")");
}

}  // namespace

tag ChannelsLastTag(size_t rank) {
  switch (rank) {
    case 3:
      return tag::acb;
    case 4:
      return tag::acdb;
    default:
      return tag::acdeb;
  }
}

tag BlockedTag(size_t rank) {
  switch (rank) {
    case 3:
      return tag::aBc16b;
    case 4:
      return tag::aBcd16b;
    default:
      return tag::aBcde16b;
  }
}

md Plain(const dims& d) { return md(d, dt::f32, PlainTag(d.size())); }
md Any(const dims& d) { return md(d, dt::f32, tag::any); }

md WithType(const md& d, dt t) {
  // Strides and offsets of a blocked desc count elements, not bytes: the layout is kept.
  md out = d;
  out.data.data_type = static_cast<dnnl_data_type_t>(t);
  return out;
}

std::vector<float> Floats(const ConstTensor& t) {
  std::vector<float> v(t.size());
  for (int64_t i = 0; i < t.size(); ++i) v[i] = static_cast<float>(t.AsDouble(i));
  return v;
}

dims PadRank(const dims& d, size_t rank) {
  dims out(rank - d.size(), 1);
  out.insert(out.end(), d.begin(), d.end());
  return out;
}

std::string PostOpsText(const FusedNode& f) {
  if (f.post_ops.empty()) return "";
  std::vector<std::string> parts;
  for (const auto& p : f.post_ops)
    parts.push_back(p.sum ? "sum" : dnnl_alg_kind2str(static_cast<dnnl_alg_kind_t>(p.act.alg)));
  return absl::StrCat(" +", absl::StrJoin(parts, "+"));
}

bool FusedRelu(const FusedNode& f) {
  return f.post_ops.size() == 1 && !f.post_ops[0].sum &&
         f.post_ops[0].act.alg == dnnl::algorithm::eltwise_relu && f.post_ops[0].act.alpha == 0.f;
}

LoweringContext::LoweringContext(const SpecializedGraph& graph, const CompileOptions& options,
                                 int64_t opset, Plan* plan,
                                 const absl::flat_hash_set<std::string>* winograd_convs)
    : g_(graph),
      options_(options),
      opset_(opset),
      plan_(plan),
      winograd_convs_(winograd_convs),
      act_dt_(EffectivePrecision(options) == Precision::kBf16 ? dt::bf16 : dt::f32),
      stream_(CpuEngine()) {
  plan_->precision = EffectivePrecision(options);
}

void LoweringContext::Begin(const std::vector<FusedNode>& nodes) {
  for (size_t i = 0; i < nodes.size(); ++i) {
    for (const auto& in : nodes[i].node.inputs) last_use_[in] = static_cast<int>(i);
    if (!nodes[i].sum_operand.empty()) last_use_[nodes[i].sum_operand] = static_cast<int>(i);
  }
  for (const auto& o : g_.outputs) last_use_[o.name] = INT_MAX;
  scratch_ref_ = static_cast<int>(plan_->memrefs.size());
  plan_->memrefs.push_back({Kind::kScratchpad, 0, md()});
  for (size_t i = 0; i < g_.inputs.size(); ++i) {
    const md user = Plain(g_.inputs[i].shape);
    // Materialized on first use, directly in the layout its first consumer wants.
    pending_inputs_[g_.inputs[i].name] = AddRef({Kind::kInput, static_cast<int>(i), user});
  }
}

int LoweringContext::AddRef(MemRef r) {
  plan_->memrefs.push_back(std::move(r));
  return static_cast<int>(plan_->memrefs.size()) - 1;
}

Val LoweringContext::NewVal(const md& d) {
  buffer_sizes_.push_back(d.get_size());
  buffer_values_.push_back(0);
  return Val{static_cast<int>(buffer_sizes_.size()) - 1, d};
}

void LoweringContext::Define(const std::string& name, const Val& v) {
  vals_[name] = v;
  ++buffer_values_[v.buffer];
}

absl::StatusOr<Val> LoweringContext::Get(const std::string& name) {
  if (pending_inputs_.contains(name)) return InLayout(name, Plain(DimsOf(name)));
  auto it = vals_.find(name);
  if (it == vals_.end())
    return absl::InvalidArgumentError(absl::StrCat("value \"", name, "\" is not a runtime tensor"));
  return it->second;
}

bool LoweringContext::IsPlainOrPending(const std::string& name) const {
  if (pending_inputs_.contains(name)) return true;
  auto it = vals_.find(name);
  return it != vals_.end() && AsF32(it->second.desc) == Plain(DimsOf(name));
}

bool LoweringContext::IsGraphInput(const std::string& name) const {
  for (const auto& in : g_.inputs) {
    if (in.name == name) return true;
  }
  return false;
}

bool LoweringContext::DiesHere(const std::string& name, const Val& v) {
  return last_use_[name] == cur_ && buffer_values_[v.buffer] == 1 && alternates_[name].empty();
}

int LoweringContext::Const(const std::vector<float>& data, const dims& d, const md& want) {
  const md plain = Plain(d);
  dnnl::memory src(plain, CpuEngine());
  std::memcpy(src.get_data_handle(), data.data(),
              std::min(plain.get_size(), data.size() * sizeof(float)));
  dnnl::memory stored = src;
  if (want != plain) {
    stored = dnnl::memory(want, CpuEngine());
    dnnl::reorder(src, stored).execute(stream_, src, stored);
    stream_.wait();
  }
  plan_->consts.push_back(stored);
  return AddRef({Kind::kConst, static_cast<int>(plan_->consts.size()) - 1, stored.get_desc()});
}

dnnl::primitive_attr LoweringContext::Attr(const std::vector<PostOp>& post) {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (!post.empty()) {
    dnnl::post_ops po;
    for (const auto& p : post) {
      if (p.sum)
        po.append_sum(1.f);
      else
        po.append_eltwise(1.f, p.act.alg, p.act.alpha, p.act.beta);
    }
    attr.set_post_ops(po);
  }
  return attr;
}

void LoweringContext::AddStep(const std::string& what, const dnnl::primitive_desc_base& pd,
                              dnnl::primitive prim, std::vector<std::pair<int, int>> args) {
  std::string types;
  if (plan_->precision != Precision::kFp32) {
    const md src = pd.query_md(dnnl::query::src_md), dst = pd.query_md(dnnl::query::dst_md);
    if (src && dst) types = TypesText(src, dst);
  }
  AddStepDescribed(what, types, pd, std::move(prim), std::move(args));
}

void LoweringContext::AddStepDescribed(const std::string& what, const std::string& suffix,
                                       const dnnl::primitive_desc_base& pd, dnnl::primitive prim,
                                       std::vector<std::pair<int, int>> args) {
  const size_t scratch = pd.scratchpad_desc().get_size();
  if (scratch > 0) {
    plan_->scratchpad_bytes = std::max(plan_->scratchpad_bytes, scratch);
    args.push_back({DNNL_ARG_SCRATCHPAD, scratch_ref_});
  }
  plan_->steps.push_back({absl::StrCat(what, " [", pd.impl_info_str(), "]", suffix),
                          std::move(prim), nullptr, std::move(args)});
}

void LoweringContext::AddTypedReorder(const md& src, int src_ref, const md& dst, int dst_ref,
                                      const std::string& what) {
  dnnl::reorder::primitive_desc pd(CpuEngine(), src, CpuEngine(), dst, Attr());
  std::string suffix;
  if (src.data_type() != dst.data_type()) {
    // What running a step in another element type costs: bytes read plus bytes written.
    const size_t bytes = src.get_size() + dst.get_size();
    ++plan_->type_conversions;
    plan_->type_conversion_bytes += bytes;
    suffix = absl::StrCat(TypesText(src, dst), " conversion ", bytes, " B");
  } else if (plan_->precision != Precision::kFp32) {
    suffix = TypesText(src, dst);
  }
  AddStepDescribed(absl::StrCat("reorder ", what), suffix, pd, dnnl::reorder(pd),
                   {{DNNL_ARG_FROM, src_ref}, {DNNL_ARG_TO, dst_ref}});
}

void LoweringContext::AddScaledReorder(const Val& src, const Val& dst, float scale,
                                       const std::string& what) {
  dnnl::primitive_attr attr = Attr();
  attr.set_output_scales(0, {scale});
  dnnl::reorder::primitive_desc pd(CpuEngine(), src.desc, CpuEngine(), dst.desc, attr);
  AddStepDescribed(absl::StrCat("quantize ", what), TypesText(src.desc, dst.desc), pd,
                   dnnl::reorder(pd), {{DNNL_ARG_FROM, Ref(src)}, {DNNL_ARG_TO, Ref(dst)}});
}

// Ref() may grow plan_->memrefs: take the new reference first, then copy the descriptor
// (a reference into the vector taken before would dangle).
absl::Status LoweringContext::AddReorder(int src_ref, const Val& dst, const std::string& what) {
  const int dst_ref = Ref(dst);
  const md src_md = plan_->memrefs[src_ref].md;
  AddTypedReorder(src_md, src_ref, dst.desc, dst_ref, what);
  return absl::OkStatus();
}

absl::StatusOr<Val> LoweringContext::OutputTo(int dst_ref, const Val& src,
                                              const std::string& what) {
  const int src_ref = Ref(src);
  const md dst_md = plan_->memrefs[dst_ref].md;
  AddTypedReorder(src.desc, src_ref, dst_md, dst_ref, what);
  return src;
}

absl::StatusOr<Val> LoweringContext::InLayout(const std::string& name, const md& want) {
  auto pending = pending_inputs_.find(name);
  if (pending != pending_inputs_.end()) {
    Val v = NewVal(want);
    RETURN_IF_ERROR(AddReorder(pending->second, v, absl::StrCat("input \"", name, "\"")));
    pending_inputs_.erase(pending);
    Define(name, v);
    return v;
  }
  ASSIGN_OR_RETURN(Val v, Get(name));
  if (v.desc == want) return v;
  for (const Val& alt : alternates_[name]) {
    if (alt.desc == want) return alt;
  }
  Val dst = NewVal(want);
  RETURN_IF_ERROR(AddReorder(Ref(v), dst, name));
  alternates_[name].push_back(dst);
  ++buffer_values_[dst.buffer];
  return dst;
}

absl::StatusOr<Val> LoweringContext::Eltwise(const std::string& name, const Val& src,
                                             const Activation& a) {
  using EW = dnnl::eltwise_forward;
  EW::primitive_desc pd(
      EW::desc(dnnl::prop_kind::forward_inference, a.alg, src.desc, a.alpha, a.beta), Attr(),
      CpuEngine());
  Val dst = NewVal(pd.dst_desc());
  AddStep(
      absl::StrCat("eltwise ", name, " ", dnnl_alg_kind2str(static_cast<dnnl_alg_kind_t>(a.alg))),
      pd, EW(pd), {{DNNL_ARG_SRC, Ref(src)}, {DNNL_ARG_DST, Ref(dst)}});
  return dst;
}

absl::Status LoweringContext::Finish(bool with_outputs) {
  plan_->inputs = g_.inputs;
  if (with_outputs) {
    plan_->outputs = g_.outputs;
    for (size_t i = 0; i < g_.outputs.size(); ++i) {
      ASSIGN_OR_RETURN(Val v, Get(g_.outputs[i].name));
      const int ref = AddRef({Kind::kOutput, static_cast<int>(i), Plain(g_.outputs[i].shape)});
      RETURN_IF_ERROR(
          OutputTo(ref, v, absl::StrCat("output \"", g_.outputs[i].name, "\"")).status());
    }
  }
  plan_->memrefs[scratch_ref_].md =
      md({static_cast<int64_t>(std::max<size_t>(plan_->scratchpad_bytes, 1))}, dt::u8, tag::a);
  AssignOffsets();
  plan_->const_bytes = 0;
  for (const dnnl::memory& m : plan_->consts) plan_->const_bytes += m.get_desc().get_size();
  return absl::OkStatus();
}

void LoweringContext::AssignOffsets() {
  std::vector<BufferLifetime> buffers(buffer_sizes_.size());
  for (size_t b = 0; b < buffers.size(); ++b) {
    buffers[b].bytes = buffer_sizes_[b];
    buffers[b].first_step = INT_MAX;
  }
  for (size_t s = 0; s < plan_->steps.size(); ++s) {
    for (const auto& [arg, ref] : plan_->steps[s].args) {
      const MemRef& m = plan_->memrefs[ref];
      if (m.kind != Kind::kArena) continue;
      BufferLifetime& b = buffers[m.index];
      b.first_step = std::min(b.first_step, static_cast<int>(s));
      b.last_step = std::max(b.last_step, static_cast<int>(s));
    }
  }
  ArenaLayout layout = LayOutArena(buffers, kAlign);
  plan_->buffer_offsets = std::move(layout.offsets);
  plan_->arena_bytes = std::max<size_t>(layout.total_bytes, kAlign);
}

}  // namespace normserve
