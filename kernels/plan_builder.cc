// Lowering of a specialized, rewritten graph to oneDNN primitives (see plan.h).
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <memory>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "oneapi/dnnl/dnnl_debug.h"
#include "kernels/batch_norm_folding.h"
#include "kernels/channel_moments.h"
#include "kernels/conv_algorithm_choice.h"
#include "kernels/group_norm_fusion.h"
#include "kernels/group_norm_kernel.h"
#include "kernels/plan.h"
#include "kernels/post_op_fusion.h"
#include "kernels/specialize.h"
#include "kernels/status_macros.h"
#include "kernels/tensor.h"

namespace normserve {

dnnl::engine& CpuEngine() {
  static auto* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

namespace {

using md = dnnl::memory::desc;
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;
using dims = dnnl::memory::dims;
using Kind = MemRef::Kind;

constexpr size_t kAlign = 64;

tag PlainTag(size_t rank) {
  switch (rank) {
    case 1: return tag::a;
    case 2: return tag::ab;
    case 3: return tag::abc;
    case 4: return tag::abcd;
    case 5: return tag::abcde;
    default: return tag::abcdef;
  }
}

// Channels-last (N, spatial..., C) for rank 3 to 5.
tag ChannelsLastTag(size_t rank) {
  switch (rank) {
    case 3: return tag::acb;
    case 4: return tag::acdb;
    default: return tag::acdeb;
  }
}

// Channels in blocks of 16 (nChw16c and its rank 3 and 5 kin), the AVX-512 kernels' layout.
tag BlockedTag(size_t rank) {
  switch (rank) {
    case 3: return tag::aBc16b;
    case 4: return tag::aBcd16b;
    default: return tag::aBcde16b;
  }
}

md Plain(const dims& d) { return md(d, dt::f32, PlainTag(d.size())); }
md Any(const dims& d) { return md(d, dt::f32, tag::any); }

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

class Lowerer {
 public:
  Lowerer(const SpecializedGraph& g, const CompileOptions& options, Plan* plan,
          const absl::flat_hash_set<std::string>* winograd_convs)
      : g_(g), options_(options), plan_(plan), winograd_convs_(winograd_convs), stream_(CpuEngine()) {}

  absl::Status Lower(const std::vector<FusedNode>& nodes, const absl::flat_hash_set<std::string>& observed) {
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
    size_t observed_left = observed.size();
    for (size_t i = 0; i < nodes.size(); ++i) {
      cur_ = static_cast<int>(i);
      const FusedNode& f = nodes[i];
      if (f.node.op == "BatchNormalization" && observed.contains(f.node.name)) {
        RETURN_IF_ERROR(Guard(f.node, [&] { return LowerMoments(f.node); }));
        if (--observed_left == 0 && options_.stop_after_observed) return Finish(false);
      }
      RETURN_IF_ERROR(Guard(f.node, [&] { return LowerNode(f); }));
    }
    return Finish(true);
  }

 private:
  struct Val {
    int buffer = -1;
    md desc;
  };

  template <typename F>
  absl::Status Guard(const Node& n, F&& f) {
    try {
      absl::Status s = f();
      if (!s.ok() && !absl::StrContains(s.message(), n.name)) {
        return absl::Status(s.code(), absl::StrCat("node \"", n.name, "\" (", n.op, "): ", s.message()));
      }
      return s;
    } catch (const dnnl::error& e) {
      return absl::InvalidArgumentError(
          absl::StrCat("node \"", n.name, "\" (", n.op, "): oneDNN cannot run it: ", e.what()));
    }
  }

  int AddRef(MemRef r) {
    plan_->memrefs.push_back(std::move(r));
    return static_cast<int>(plan_->memrefs.size()) - 1;
  }
  int Ref(const Val& v) { return AddRef({Kind::kArena, v.buffer, v.desc}); }
  Val NewVal(const md& d) {
    buffer_sizes_.push_back(d.get_size());
    buffer_values_.push_back(0);
    return Val{static_cast<int>(buffer_sizes_.size()) - 1, d};
  }
  void Define(const std::string& name, const Val& v) {
    vals_[name] = v;
    ++buffer_values_[v.buffer];
  }
  absl::StatusOr<Val> Get(const std::string& name) {
    if (pending_inputs_.contains(name)) return InLayout(name, Plain(DimsOf(name)));
    auto it = vals_.find(name);
    if (it == vals_.end()) return absl::InvalidArgumentError(absl::StrCat("value \"", name, "\" is not a runtime tensor"));
    return it->second;
  }
  dims DimsOf(const std::string& name) const { return g_.ShapeOf(name); }

  int ConstRef(const dnnl::memory& m) {
    plan_->consts.push_back(m);
    return AddRef({Kind::kConst, static_cast<int>(plan_->consts.size()) - 1, m.get_desc()});
  }
  // A constant in `want` layout (reordered once, here at compile time).
  int Const(const std::vector<float>& data, const dims& d, const md& want) {
    const md plain = Plain(d);
    dnnl::memory src(plain, CpuEngine());
    std::memcpy(src.get_data_handle(), data.data(), std::min(plain.get_size(), data.size() * sizeof(float)));
    if (want == plain) return ConstRef(src);
    dnnl::memory dst(want, CpuEngine());
    dnnl::reorder(src, dst).execute(stream_, src, dst);
    stream_.wait();
    return ConstRef(dst);
  }
  int ConstPlain(const std::vector<float>& data, const dims& d) { return Const(data, d, Plain(d)); }

  dnnl::primitive_attr Attr(const std::vector<PostOp>& post = {}) {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (!post.empty()) {
      dnnl::post_ops po;
      for (const auto& p : post) {
        if (p.sum) po.append_sum(1.f);
        else po.append_eltwise(1.f, p.act.alg, p.act.alpha, p.act.beta);
      }
      attr.set_post_ops(po);
    }
    return attr;
  }

  void AddStep(std::string what, const dnnl::primitive_desc_base& pd, dnnl::primitive prim,
               std::vector<std::pair<int, int>> args) {
    const size_t scratch = pd.scratchpad_desc().get_size();
    if (scratch > 0) {
      plan_->scratchpad_bytes = std::max(plan_->scratchpad_bytes, scratch);
      args.push_back({DNNL_ARG_SCRATCHPAD, scratch_ref_});
    }
    plan_->steps.push_back({absl::StrCat(what, " [", pd.impl_info_str(), "]"), std::move(prim), nullptr, std::move(args)});
  }

  absl::Status AddReorder(int src_ref, const Val& dst, const std::string& what) {
    const md& src_md = plan_->memrefs[src_ref].md;
    dnnl::reorder::primitive_desc pd(CpuEngine(), src_md, CpuEngine(), dst.desc, Attr());
    AddStep(absl::StrCat("reorder ", what), pd, dnnl::reorder(pd), {{DNNL_ARG_FROM, src_ref}, {DNNL_ARG_TO, Ref(dst)}});
    return absl::OkStatus();
  }
  absl::StatusOr<Val> OutputTo(int dst_ref, const Val& src, const std::string& what) {
    dnnl::reorder::primitive_desc pd(CpuEngine(), src.desc, CpuEngine(), plan_->memrefs[dst_ref].md, Attr());
    AddStep(absl::StrCat("reorder ", what), pd, dnnl::reorder(pd), {{DNNL_ARG_FROM, Ref(src)}, {DNNL_ARG_TO, dst_ref}});
    return src;
  }

  // `name` in layout `want`, reordering once and caching the result.
  absl::StatusOr<Val> InLayout(const std::string& name, const md& want) {
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
  absl::StatusOr<Val> PlainVal(const std::string& name) { return InLayout(name, Plain(DimsOf(name))); }

  absl::Status LowerNode(const FusedNode& f) {
    const std::string& op = f.node.op;
    if (op == "Conv") return LowerConv(f);
    if (op == "Gemm" || (op == "MatMul" && IsInnerProduct(f.node))) return LowerInnerProduct(f);
    if (op == "MatMul") return LowerMatMul(f);
    if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div") return LowerBinary(f);
    if (op == "BatchNormalization") return LowerBatchNorm(f);
    if (op == "GroupNorm" || op == "InstanceNormalization") return LowerGroupNorm(f);
    if (op == "LayerNormalization") return LowerLayerNorm(f);
    if (IsActivationOp(op)) return LowerActivation(f);
    if (op == "MaxPool" || op == "AveragePool" || op == "GlobalAveragePool" || op == "GlobalMaxPool") return LowerPool(f);
    if (op == "ReduceMean") return LowerReduceMean(f);
    if (op == "Flatten" || op == "Reshape" || op == "Squeeze" || op == "Unsqueeze") return LowerView(f);
    if (op == "Identity" || op == "Dropout") {
      ASSIGN_OR_RETURN(Val v, Get(f.node.inputs[0]));
      Define(f.output, v);
      return absl::OkStatus();
    }
    if (op == "Concat") return LowerConcat(f);
    if (op == "Softmax") return LowerSoftmax(f);
    if (op == "Transpose") return LowerTranspose(f);
    return absl::InvalidArgumentError("operator is not supported by the planner");
  }

  bool IsInnerProduct(const Node& n) const {
    return g_.IsConst(n.inputs[1]) && DimsOf(n.inputs[0]).size() == 2 && DimsOf(n.inputs[1]).size() == 2;
  }

  absl::Status LowerConv(const FusedNode& f) {
    const Node& n = f.node;
    const dims x = DimsOf(n.inputs[0]), w = DimsOf(n.inputs[1]), y = DimsOf(f.node.outputs[0]);
    const int64_t group = n.IntAttr("group", 1);
    auto strides = n.IntsAttr("strides", {1, 1});
    auto dil = n.IntsAttr("dilations", {1, 1});
    auto pads = n.IntsAttr("pads", {0, 0, 0, 0});
    const dims dst_dims = {x[0], w[0], y[2], y[3]};
    dims wdims = group == 1 ? w : dims{group, w[0] / group, w[1], w[2], w[3]};
    const bool has_bias = n.inputs.size() > 2 && !n.inputs[2].empty();
    const md bias_md = md({w[0]}, dt::f32, tag::a);
    const dims pad_l = {pads[0], pads[1]}, pad_r = {pads[2], pads[3]};
    const dims dilates = {dil[0] - 1, dil[1] - 1};
    using CF = dnnl::convolution_forward;
    auto conv_desc = [&](dnnl::algorithm algorithm) {
      return has_bias ? CF::desc(dnnl::prop_kind::forward_inference, algorithm, Any(x), Any(wdims), bias_md,
                                 Any(dst_dims), strides, dilates, pad_l, pad_r)
                      : CF::desc(dnnl::prop_kind::forward_inference, algorithm, Any(x), Any(wdims), Any(dst_dims),
                                 strides, dilates, pad_l, pad_r);
    };
    CF::primitive_desc pd(conv_desc(dnnl::algorithm::convolution_direct), Attr(f.post_ops), CpuEngine());
    if (WinogradApplies(w, strides, dilates, group) && WantWinograd(n.name)) {
      std::optional<CF::primitive_desc> wpd;
      try {
        wpd.emplace(conv_desc(dnnl::algorithm::convolution_winograd), Attr(f.post_ops), CpuEngine());
      } catch (const dnnl::error&) {
        // No Winograd kernel for this shape, ISA or post-op chain: direct it is.
      }
      if (wpd && (winograd_convs_ != nullptr || options_.conv_algorithm == ConvAlgorithm::kWinograd ||
                  WinogradIsFaster(absl::StrCat("x=", absl::StrJoin(x, "x"), " w=", absl::StrJoin(w, "x"), " pads=",
                                                absl::StrJoin(pads, ","), " bias=", has_bias, PostOpsText(f)),
                                   pd, *wpd))) {
        pd = *wpd;
        plan_->winograd_convs.insert(n.name);
      }
    }
    ASSIGN_OR_RETURN(Val src, InLayout(n.inputs[0], pd.src_desc()));
    const int wref = Const(Floats(g_.consts.at(n.inputs[1])), wdims, pd.weights_desc());
    Val dst;
    if (!f.sum_operand.empty()) {
      ASSIGN_OR_RETURN(Val res, Get(f.sum_operand));
      const bool alias = res.desc == pd.dst_desc() && last_use_[f.sum_operand] == cur_ &&
                         buffer_values_[res.buffer] == 1 && res.buffer != src.buffer &&
                         alternates_[f.sum_operand].empty();
      if (alias) {
        dst = Val{res.buffer, pd.dst_desc()};
      } else {
        dst = NewVal(pd.dst_desc());
        RETURN_IF_ERROR(AddReorder(Ref(res), dst, absl::StrCat(f.sum_operand, " (residual)")));
      }
    } else {
      dst = NewVal(pd.dst_desc());
    }
    std::vector<std::pair<int, int>> args = {{DNNL_ARG_SRC, Ref(src)}, {DNNL_ARG_WEIGHTS, wref}, {DNNL_ARG_DST, Ref(dst)}};
    if (has_bias) args.push_back({DNNL_ARG_BIAS, ConstPlain(Floats(g_.consts.at(n.inputs[2])), {w[0]})});
    plan_->flops += 2.0 * dst_dims[0] * dst_dims[1] * dst_dims[2] * dst_dims[3] * w[1] * w[2] * w[3];
    AddStep(absl::StrCat("conv ", n.name, PostOpsText(f)), pd, CF(pd), std::move(args));
    Define(f.output, dst);
    // An aliased residual is dead now: its buffer holds only this output.
    buffer_values_[dst.buffer] = 1;
    return absl::OkStatus();
  }

  bool WantWinograd(const std::string& conv) const {
    // Statistics plans feed float64 accumulators that must not depend on how requests
    // were batched; oneDNN's Winograd kernels round differently at batch 1 and batch N.
    if (!options_.observed_bn_layers.empty()) return false;
    if (winograd_convs_ != nullptr) return winograd_convs_->contains(conv);
    return options_.conv_algorithm != ConvAlgorithm::kDirect;
  }

  static std::string PostOpsText(const FusedNode& f) {
    if (f.post_ops.empty()) return "";
    std::vector<std::string> parts;
    for (const auto& p : f.post_ops) parts.push_back(p.sum ? "sum" : dnnl_alg_kind2str(static_cast<dnnl_alg_kind_t>(p.act.alg)));
    return absl::StrCat(" +", absl::StrJoin(parts, "+"));
  }

  absl::Status LowerInnerProduct(const FusedNode& f) {
    const Node& n = f.node;
    const dims x = DimsOf(n.inputs[0]);
    const ConstTensor& b = g_.consts.at(n.inputs[1]);
    if (!g_.IsConst(n.inputs[1])) return absl::InvalidArgumentError("B must be constant");
    const bool gemm = n.op == "Gemm";
    const bool trans_b = gemm && n.IntAttr("transB", 0) != 0;
    const int64_t k = x[1], out = trans_b ? b.shape[0] : b.shape[1];
    std::vector<float> w = Floats(b);
    if (!trans_b) {  // oneDNN weights are [out, k]
      std::vector<float> t(w.size());
      for (int64_t r = 0; r < k; ++r) {
        for (int64_t c = 0; c < out; ++c) t[c * k + r] = w[r * out + c];
      }
      w.swap(t);
    }
    const float alpha = gemm ? n.FloatAttr("alpha", 1.f) : 1.f, beta = gemm ? n.FloatAttr("beta", 1.f) : 1.f;
    if (alpha != 1.f) for (float& v : w) v *= alpha;
    std::vector<float> bias;
    if (gemm && n.inputs.size() > 2 && !n.inputs[2].empty()) {
      if (!g_.IsConst(n.inputs[2])) return absl::InvalidArgumentError("C must be constant");
      const ConstTensor& c = g_.consts.at(n.inputs[2]);
      if (c.size() != out && c.size() != 1) return absl::InvalidArgumentError("C must have one value per output");
      for (int64_t o = 0; o < out; ++o) bias.push_back(beta * static_cast<float>(c.AsDouble(c.size() == 1 ? 0 : o)));
    }
    using IP = dnnl::inner_product_forward;
    const dims wd = {out, k}, yd = {x[0], out};
    auto desc = bias.empty() ? IP::desc(dnnl::prop_kind::forward_inference, Plain(x), Any(wd), Any(yd))
                             : IP::desc(dnnl::prop_kind::forward_inference, Plain(x), Any(wd), md({out}, dt::f32, tag::a), Any(yd));
    IP::primitive_desc pd(desc, Attr(f.post_ops), CpuEngine());
    ASSIGN_OR_RETURN(Val src, InLayout(n.inputs[0], pd.src_desc()));
    Val dst = NewVal(pd.dst_desc());
    std::vector<std::pair<int, int>> args = {{DNNL_ARG_SRC, Ref(src)}, {DNNL_ARG_WEIGHTS, Const(w, wd, pd.weights_desc())},
                                             {DNNL_ARG_DST, Ref(dst)}};
    if (!bias.empty()) args.push_back({DNNL_ARG_BIAS, ConstPlain(bias, {out})});
    plan_->flops += 2.0 * x[0] * out * k;
    AddStep(absl::StrCat("inner_product ", n.name, PostOpsText(f)), pd, IP(pd), std::move(args));
    Define(f.output, dst);
    return absl::OkStatus();
  }

  absl::Status LowerMatMul(const FusedNode& f) {
    const Node& n = f.node;
    const dims y = DimsOf(f.node.outputs[0]);
    const dims a = PadRank(DimsOf(n.inputs[0]), y.size()), b = PadRank(DimsOf(n.inputs[1]), y.size());
    dnnl::matmul::desc desc(Plain(a), Plain(b), Plain(y));
    dnnl::matmul::primitive_desc pd(desc, Attr(f.post_ops), CpuEngine());
    ASSIGN_OR_RETURN(Val av, PlainVal(n.inputs[0]));
    int bref;
    if (g_.IsConst(n.inputs[1])) {
      bref = ConstPlain(Floats(g_.consts.at(n.inputs[1])), b);
    } else {
      ASSIGN_OR_RETURN(Val bv, PlainVal(n.inputs[1]));
      bref = Ref(Val{bv.buffer, Plain(b)});
    }
    Val dst = NewVal(Plain(y));
    double batch = 1;
    for (size_t i = 0; i + 2 < y.size(); ++i) batch *= y[i];
    plan_->flops += 2.0 * batch * y[y.size() - 2] * y.back() * a.back();
    AddStep(absl::StrCat("matmul ", n.name, PostOpsText(f)), pd, dnnl::matmul(pd),
            {{DNNL_ARG_SRC, Ref(Val{av.buffer, Plain(a)})}, {DNNL_ARG_WEIGHTS, bref}, {DNNL_ARG_DST, Ref(dst)}});
    Define(f.output, dst);
    return absl::OkStatus();
  }

  absl::Status LowerBinary(const FusedNode& f) {
    const Node& n = f.node;
    std::string a = n.inputs[0], b = n.inputs[1];
    const dims y = DimsOf(n.outputs[0]);
    dnnl::algorithm alg = n.op == "Add" ? dnnl::algorithm::binary_add
                        : n.op == "Sub" ? dnnl::algorithm::binary_sub
                        : n.op == "Mul" ? dnnl::algorithm::binary_mul
                                        : dnnl::algorithm::binary_div;
    std::vector<PostOp> post = f.post_ops;
    if (g_.IsConst(a) || DimsOf(a) != y) {
      // oneDNN broadcasts src1 only: put the full-size operand first.
      std::swap(a, b);
      if (n.op == "Sub") {
        post.insert(post.begin(), PostOp{false, {dnnl::algorithm::eltwise_linear, -1.f, 0.f}});
      } else if (n.op == "Div") {
        return absl::InvalidArgumentError("Div with a broadcast dividend is not supported");
      }
    }
    if (g_.IsConst(a) || DimsOf(a) != y) {
      return absl::InvalidArgumentError(absl::StrCat("neither operand has the output shape ", ShapeToString(y)));
    }
    ASSIGN_OR_RETURN(Val av, Get(a));
    const dims bd = PadRank(DimsOf(b), y.size());
    auto make = [&](const md& src0, const md& src1) {
      dnnl::binary::desc desc(alg, src0, src1, src0);
      return dnnl::binary::primitive_desc(desc, Attr(post), CpuEngine());
    };
    // Same-shape runtime operands share the first one's layout; broadcast ones are plain.
    md bmd = (!g_.IsConst(b) && bd == y) ? av.desc : Plain(bd);
    dnnl::binary::primitive_desc pd;
    try {
      pd = make(av.desc, bmd);
    } catch (const dnnl::error&) {
      ASSIGN_OR_RETURN(av, PlainVal(a));
      bmd = Plain(bd);
      pd = make(av.desc, bmd);
    }
    int bref;
    if (g_.IsConst(b)) {
      bref = ConstPlain(Floats(g_.consts.at(b)), bd);
    } else if (bmd == av.desc) {
      ASSIGN_OR_RETURN(Val bv, InLayout(b, bmd));
      bref = Ref(bv);
    } else {
      ASSIGN_OR_RETURN(Val bv, PlainVal(b));
      bref = Ref(Val{bv.buffer, bmd});
    }
    Val dst = NewVal(pd.dst_desc());
    AddStep(absl::StrCat("binary ", n.name, PostOpsText(f)), pd, dnnl::binary(pd),
            {{DNNL_ARG_SRC_0, Ref(av)}, {DNNL_ARG_SRC_1, bref}, {DNNL_ARG_DST, Ref(dst)}});
    Define(f.output, dst);
    return absl::OkStatus();
  }

  static bool FusedRelu(const FusedNode& f) { return f.post_ops.size() == 1 && !f.post_ops[0].sum; }

  absl::Status LowerBatchNorm(const FusedNode& f) {
    const Node& n = f.node;
    const dims x = DimsOf(n.inputs[0]);
    // oneDNN 2.6 runs batch norm on a plain NC(D)HW tensor with its reference-like ncsp
    // kernel: 28 ms for 8x64x112x112 here, against a few ms for a reorder to the blocked
    // layout plus the blocked JIT kernel. So a plain input (a model or slice input, or a
    // plain producer) is reordered once; a blocked or channels-last one is used as is.
    auto produced = vals_.find(n.inputs[0]);
    const bool plain = pending_inputs_.contains(n.inputs[0]) ||
                       (produced != vals_.end() && produced->second.desc == Plain(x));
    Val src;
    if (plain && x.size() >= 3 && x.size() <= 5) {
      ASSIGN_OR_RETURN(src, InLayout(n.inputs[0], md(x, dt::f32, BlockedTag(x.size()))));
    } else {
      ASSIGN_OR_RETURN(src, Get(n.inputs[0]));
    }
    const int64_t c = x[1];
    auto flags = dnnl::normalization_flags::use_global_stats | dnnl::normalization_flags::use_scale |
                 dnnl::normalization_flags::use_shift;
    if (FusedRelu(f)) flags |= dnnl::normalization_flags::fuse_norm_relu;
    using BN = dnnl::batch_normalization_forward;
    BN::primitive_desc pd(BN::desc(dnnl::prop_kind::forward_inference, src.desc, n.FloatAttr("epsilon", 1e-5f), flags),
                          Attr(), CpuEngine());
    Val dst = NewVal(pd.dst_desc());
    AddStep(absl::StrCat("batch_norm ", n.name, FusedRelu(f) ? " +relu" : ""), pd, BN(pd),
            {{DNNL_ARG_SRC, Ref(src)},
             {DNNL_ARG_SCALE, ConstPlain(Floats(g_.consts.at(n.inputs[1])), {c})},
             {DNNL_ARG_SHIFT, ConstPlain(Floats(g_.consts.at(n.inputs[2])), {c})},
             {DNNL_ARG_MEAN, ConstPlain(Floats(g_.consts.at(n.inputs[3])), {c})},
             {DNNL_ARG_VARIANCE, ConstPlain(Floats(g_.consts.at(n.inputs[4])), {c})},
             {DNNL_ARG_DST, Ref(dst)}});
    Define(f.output, dst);
    return absl::OkStatus();
  }

  // Group (and instance) normalization: oneDNN 2.6 has no such primitive, so it runs as
  // one custom kernel (group_norm_kernel.h) in the layout its producer chose when that is
  // channels-last or plain, which keeps the surrounding convolutions free of reorders.
  absl::Status LowerGroupNorm(const FusedNode& f) {
    const Node& n = f.node;
    const dims x = DimsOf(n.inputs[0]);
    if (x.size() < 3) return absl::InvalidArgumentError("group normalization needs an input of rank >= 3");
    GroupNormShape shape;
    shape.batch = x[0];
    shape.channels = x[1];
    shape.groups = n.op == "GroupNorm" ? n.IntAttr("num_groups", 1) : x[1];
    if (shape.groups < 1 || shape.channels % shape.groups != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("num_groups ", shape.groups, " does not divide the ", shape.channels, " channels"));
    }
    for (size_t i = 2; i < x.size(); ++i) shape.spatial *= x[i];
    ASSIGN_OR_RETURN(Val produced, Get(n.inputs[0]));
    const md channels_last(x, dt::f32, ChannelsLastTag(x.size()));
    shape.channels_last = produced.desc == channels_last;
    ASSIGN_OR_RETURN(Val src, InLayout(n.inputs[0], shape.channels_last ? channels_last : Plain(x)));
    Val dst = NewVal(src.desc);
    const int src_ref = Ref(src), dst_ref = Ref(dst);
    auto gamma = std::make_shared<const std::vector<float>>(Floats(g_.consts.at(n.inputs[1])));
    auto beta = std::make_shared<const std::vector<float>>(Floats(g_.consts.at(n.inputs[2])));
    const float epsilon = n.FloatAttr("epsilon", 1e-5f);
    const bool relu = FusedRelu(f);
    PlanStep step;
    step.what = absl::StrCat("group_norm ", n.name, relu ? " +relu" : "",
                             shape.channels_last ? " [custom:channels_last]" : " [custom:plain]");
    step.args = {{DNNL_ARG_SRC, src_ref}, {DNNL_ARG_DST, dst_ref}};
    step.custom = [=](const std::vector<dnnl::memory>& mems, BnObservations*) {
      GroupNormForward(shape, static_cast<const float*>(mems[src_ref].get_data_handle()), gamma->data(),
                       beta->data(), epsilon, relu, static_cast<float*>(mems[dst_ref].get_data_handle()));
    };
    plan_->steps.push_back(std::move(step));
    Define(f.output, dst);
    return absl::OkStatus();
  }

  absl::Status LowerLayerNorm(const FusedNode& f) {
    const Node& n = f.node;
    const dims x = DimsOf(n.inputs[0]);
    int64_t axis = n.IntAttr("axis", -1);
    if (axis < 0) axis += x.size();
    int64_t outer = 1, inner = 1;
    for (int64_t i = 0; i < static_cast<int64_t>(x.size()); ++i) (i < axis ? outer : inner) *= x[i];
    ASSIGN_OR_RETURN(Val src, PlainVal(n.inputs[0]));
    const md rows = Plain({outer, inner});
    const bool has_bias = n.inputs.size() > 2 && !n.inputs[2].empty();
    auto flags = dnnl::normalization_flags::use_scale;
    if (has_bias) flags |= dnnl::normalization_flags::use_shift;
    using LN = dnnl::layer_normalization_forward;
    LN::primitive_desc pd(LN::desc(dnnl::prop_kind::forward_inference, rows, n.FloatAttr("epsilon", 1e-5f), flags),
                          Attr(), CpuEngine());
    Val dst = NewVal(rows);
    std::vector<std::pair<int, int>> args = {{DNNL_ARG_SRC, Ref(Val{src.buffer, rows})},
                                             {DNNL_ARG_SCALE, ConstPlain(Floats(g_.consts.at(n.inputs[1])), {inner})},
                                             {DNNL_ARG_DST, Ref(dst)}};
    if (has_bias) args.push_back({DNNL_ARG_SHIFT, ConstPlain(Floats(g_.consts.at(n.inputs[2])), {inner})});
    AddStep(absl::StrCat("layer_norm ", n.name), pd, LN(pd), std::move(args));
    Val out{dst.buffer, Plain(x)};
    for (const auto& p : f.post_ops) {
      ASSIGN_OR_RETURN(out, Eltwise(n.name, out, p.act));
    }
    Define(f.output, out);
    return absl::OkStatus();
  }

  absl::StatusOr<Val> Eltwise(const std::string& name, const Val& src, const Activation& a) {
    using EW = dnnl::eltwise_forward;
    EW::primitive_desc pd(EW::desc(dnnl::prop_kind::forward_inference, a.alg, src.desc, a.alpha, a.beta), Attr(),
                          CpuEngine());
    Val dst = NewVal(pd.dst_desc());
    AddStep(absl::StrCat("eltwise ", name, " ", dnnl_alg_kind2str(static_cast<dnnl_alg_kind_t>(a.alg))), pd, EW(pd),
            {{DNNL_ARG_SRC, Ref(src)}, {DNNL_ARG_DST, Ref(dst)}});
    return dst;
  }

  absl::Status LowerActivation(const FusedNode& f) {
    ASSIGN_OR_RETURN(auto acts, ActivationOf(f.node, g_));
    ASSIGN_OR_RETURN(Val v, Get(f.node.inputs[0]));
    for (const auto& a : acts) {
      ASSIGN_OR_RETURN(v, Eltwise(f.node.name, v, a));
    }
    Define(f.output, v);
    return absl::OkStatus();
  }

  absl::Status LowerPool(const FusedNode& f) {
    const Node& n = f.node;
    const dims x = DimsOf(n.inputs[0]), y = DimsOf(n.outputs[0]);
    const bool global = n.op.rfind("Global", 0) == 0;
    const bool max = n.op == "MaxPool" || n.op == "GlobalMaxPool";
    dims kernel, strides = {1, 1}, dil = {0, 0}, pl = {0, 0}, pr = {0, 0};
    if (global) {
      kernel = {x[2], x[3]};
    } else {
      kernel = n.IntsAttr("kernel_shape");
      strides = n.IntsAttr("strides", {1, 1});
      auto d = n.IntsAttr("dilations", {1, 1});
      dil = {d[0] - 1, d[1] - 1};
      auto pads = n.IntsAttr("pads", {0, 0, 0, 0});
      pl = {pads[0], pads[1]};
      for (int i = 0; i < 2; ++i) {
        // ceil_mode: extend the right padding so oneDNN's floor formula yields ONNX's size.
        const int64_t eff = (kernel[i] - 1) * d[i] + 1;
        pr[i] = std::max<int64_t>(pads[i + 2], (y[2 + i] - 1) * strides[i] + eff - x[2 + i] - pads[i]);
      }
    }
    dnnl::algorithm alg = max ? dnnl::algorithm::pooling_max
                        : n.IntAttr("count_include_pad", 0) ? dnnl::algorithm::pooling_avg_include_padding
                                                            : dnnl::algorithm::pooling_avg_exclude_padding;
    ASSIGN_OR_RETURN(Val src, Get(n.inputs[0]));
    using P = dnnl::pooling_v2_forward;
    P::primitive_desc pd(P::desc(dnnl::prop_kind::forward_inference, alg, src.desc, Any(y), strides, kernel, dil, pl, pr),
                         Attr(), CpuEngine());
    Val dst = NewVal(pd.dst_desc());
    AddStep(absl::StrCat("pool ", n.name), pd, P(pd), {{DNNL_ARG_SRC, Ref(src)}, {DNNL_ARG_DST, Ref(dst)}});
    Define(f.output, dst);
    return absl::OkStatus();
  }

  absl::Status LowerReduceMean(const FusedNode& f) {
    const Node& n = f.node;
    const dims x = DimsOf(n.inputs[0]), y = DimsOf(n.outputs[0]);
    dims kept = x;
    // Output dims with the reduced axes kept as 1 (oneDNN keeps rank).
    std::vector<int64_t> axes = n.IntsAttr("axes");
    if (axes.empty() && n.inputs.size() > 1 && g_.IsConst(n.inputs[1])) {
      const ConstTensor& c = g_.consts.at(n.inputs[1]);
      for (int64_t i = 0; i < c.size(); ++i) axes.push_back(c.AsInt(i));
    }
    if (axes.empty()) {
      for (size_t i = 0; i < x.size(); ++i) axes.push_back(i);
    }
    for (int64_t a : axes) kept[a < 0 ? a + x.size() : a] = 1;
    ASSIGN_OR_RETURN(Val src, PlainVal(n.inputs[0]));
    dnnl::reduction::primitive_desc pd(
        dnnl::reduction::desc(dnnl::algorithm::reduction_mean, src.desc, Plain(kept), 0.f, 0.f), Attr(), CpuEngine());
    Val dst = NewVal(Plain(kept));
    AddStep(absl::StrCat("reduce_mean ", n.name), pd, dnnl::reduction(pd), {{DNNL_ARG_SRC, Ref(src)}, {DNNL_ARG_DST, Ref(dst)}});
    Define(f.output, Val{dst.buffer, Plain(y)});
    return absl::OkStatus();
  }

  absl::Status LowerView(const FusedNode& f) {
    ASSIGN_OR_RETURN(Val src, PlainVal(f.node.inputs[0]));
    Define(f.output, Val{src.buffer, Plain(DimsOf(f.node.outputs[0]))});
    return absl::OkStatus();
  }

  absl::Status LowerConcat(const FusedNode& f) {
    const Node& n = f.node;
    const dims y = DimsOf(n.outputs[0]);
    int64_t axis = n.IntAttr("axis", 0);
    if (axis < 0) axis += y.size();
    std::vector<md> srcs;
    std::vector<std::pair<int, int>> args;
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      ASSIGN_OR_RETURN(Val v, PlainVal(n.inputs[i]));
      srcs.push_back(v.desc);
      args.push_back({DNNL_ARG_MULTIPLE_SRC + static_cast<int>(i), Ref(v)});
    }
    dnnl::concat::primitive_desc pd(Plain(y), static_cast<int>(axis), srcs, CpuEngine(), Attr());
    Val dst = NewVal(Plain(y));
    args.push_back({DNNL_ARG_DST, Ref(dst)});
    AddStep(absl::StrCat("concat ", n.name), pd, dnnl::concat(pd), std::move(args));
    Define(f.output, dst);
    return absl::OkStatus();
  }

  absl::Status LowerSoftmax(const FusedNode& f) {
    const Node& n = f.node;
    const dims x = DimsOf(n.inputs[0]);
    int64_t axis = n.IntAttr("axis", -1);
    if (axis < 0) axis += x.size();
    ASSIGN_OR_RETURN(Val src, PlainVal(n.inputs[0]));
    md view = src.desc;
    int soft_axis = static_cast<int>(axis);
    if (g_opset_ < 13) {
      // Opset < 13 softmax normalizes the flattened [prod(:axis), prod(axis:)] matrix.
      int64_t a = 1, b = 1;
      for (int64_t i = 0; i < static_cast<int64_t>(x.size()); ++i) (i < axis ? a : b) *= x[i];
      view = Plain({a, b});
      soft_axis = 1;
    }
    using SM = dnnl::softmax_forward;
    SM::primitive_desc pd(SM::desc(dnnl::prop_kind::forward_inference, view, soft_axis), Attr(), CpuEngine());
    Val dst = NewVal(view);
    AddStep(absl::StrCat("softmax ", n.name), pd, SM(pd), {{DNNL_ARG_SRC, Ref(Val{src.buffer, view})}, {DNNL_ARG_DST, Ref(dst)}});
    Define(f.output, Val{dst.buffer, Plain(x)});
    return absl::OkStatus();
  }

  absl::Status LowerTranspose(const FusedNode& f) {
    const Node& n = f.node;
    const dims x = DimsOf(n.inputs[0]), y = DimsOf(n.outputs[0]);
    std::vector<int64_t> perm = n.IntsAttr("perm");
    if (perm.empty()) {
      for (int64_t i = x.size() - 1; i >= 0; --i) perm.push_back(i);
    }
    // permute_axes wants, for each input axis, its position in the output.
    std::vector<int> where(x.size());
    for (size_t j = 0; j < perm.size(); ++j) where[perm[j] < 0 ? perm[j] + x.size() : perm[j]] = static_cast<int>(j);
    ASSIGN_OR_RETURN(Val src, PlainVal(n.inputs[0]));
    const md permuted = src.desc.permute_axes(where);
    Val dst = NewVal(Plain(y));
    RETURN_IF_ERROR(AddReorder(Ref(Val{src.buffer, permuted}), dst, n.name));
    Define(f.output, dst);
    return absl::OkStatus();
  }

  // Statistics hook: per-sample, per-channel count / mean / M2 of the BN input, in float64.
  absl::Status LowerMoments(const Node& n) {
    const dims x = DimsOf(n.inputs[0]);
    ASSIGN_OR_RETURN(Val src, PlainVal(n.inputs[0]));
    const int ref = Ref(src);
    const int64_t batch = x[0], channels = x[1];
    int64_t spatial = 1;
    for (size_t i = 2; i < x.size(); ++i) spatial *= x[i];
    const std::string layer = n.name;
    PlanStep step;
    step.what = absl::StrCat("moments ", layer);
    step.args = {{DNNL_ARG_SRC, ref}};
    step.custom = [ref, batch, channels, spatial, layer](const std::vector<dnnl::memory>& mems, BnObservations* obs) {
      if (obs == nullptr) return;
      const float* data = static_cast<const float*>(mems[ref].get_data_handle());
      obs->per_layer[layer] = ChannelMomentsOf(data, batch, channels, spatial);
    };
    plan_->steps.push_back(std::move(step));
    return absl::OkStatus();
  }

  absl::Status Finish(bool with_outputs) {
    plan_->inputs = g_.inputs;
    if (with_outputs) {
      plan_->outputs = g_.outputs;
      for (size_t i = 0; i < g_.outputs.size(); ++i) {
        ASSIGN_OR_RETURN(Val v, Get(g_.outputs[i].name));
        const int ref = AddRef({Kind::kOutput, static_cast<int>(i), Plain(g_.outputs[i].shape)});
        RETURN_IF_ERROR(OutputTo(ref, v, absl::StrCat("output \"", g_.outputs[i].name, "\"")).status());
      }
    }
    plan_->memrefs[scratch_ref_].md = md({static_cast<int64_t>(std::max<size_t>(plan_->scratchpad_bytes, 1))}, dt::u8, tag::a);
    AssignOffsets();
    return absl::OkStatus();
  }

  // Liveness-based arena layout: buffers whose step ranges overlap never share bytes.
  void AssignOffsets() {
    const size_t nb = buffer_sizes_.size();
    std::vector<int> first(nb, INT_MAX), last(nb, -1);
    for (size_t s = 0; s < plan_->steps.size(); ++s) {
      for (const auto& [arg, ref] : plan_->steps[s].args) {
        const MemRef& m = plan_->memrefs[ref];
        if (m.kind != Kind::kArena) continue;
        first[m.index] = std::min(first[m.index], static_cast<int>(s));
        last[m.index] = std::max(last[m.index], static_cast<int>(s));
      }
    }
    std::vector<size_t> order(nb);
    for (size_t i = 0; i < nb; ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return buffer_sizes_[a] > buffer_sizes_[b]; });
    plan_->buffer_offsets.assign(nb, 0);
    std::vector<size_t> placed;
    size_t total = 0;
    for (size_t b : order) {
      if (last[b] < 0) continue;
      const size_t size = (buffer_sizes_[b] + kAlign - 1) / kAlign * kAlign;
      std::vector<std::pair<size_t, size_t>> busy;
      for (size_t p : placed) {
        if (first[p] <= last[b] && first[b] <= last[p]) {
          busy.push_back({plan_->buffer_offsets[p], plan_->buffer_offsets[p] + (buffer_sizes_[p] + kAlign - 1) / kAlign * kAlign});
        }
      }
      std::sort(busy.begin(), busy.end());
      size_t offset = 0;
      for (const auto& [lo, hi] : busy) {
        if (offset + size <= lo) break;
        offset = std::max(offset, hi);
      }
      plan_->buffer_offsets[b] = offset;
      total = std::max(total, offset + size);
      placed.push_back(b);
    }
    plan_->arena_bytes = std::max<size_t>(total, kAlign);
    for (const dnnl::memory& m : plan_->consts) plan_->const_bytes += m.get_desc().get_size();
  }

 public:
  int64_t g_opset_ = 17;

 private:
  const SpecializedGraph& g_;
  const CompileOptions& options_;
  Plan* plan_;
  const absl::flat_hash_set<std::string>* winograd_convs_;
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

}  // namespace

absl::StatusOr<std::shared_ptr<const Plan>> BuildPlan(const Model& model,
                                                      const std::vector<std::vector<int64_t>>& input_shapes,
                                                      const CompileOptions& options,
                                                      const absl::flat_hash_set<std::string>* winograd_convs) {
  ASSIGN_OR_RETURN(SpecializedGraph g, Specialize(model.graph(), input_shapes));
  absl::flat_hash_set<std::string> observed(options.observed_bn_layers.begin(), options.observed_bn_layers.end());
  for (const auto& name : observed) {
    bool found = false;
    for (const auto& l : model.bn_layers()) found |= l.name == name;
    if (!found) return absl::NotFoundError(absl::StrCat("observed BN layer \"", name, "\" not found in the model"));
  }
  if (options.fold_batch_norm) RETURN_IF_ERROR(FoldBatchNorms(&g, observed));
  FuseGroupNorms(&g);
  std::vector<FusedNode> nodes = FusePostOps(g, options.fuse_post_ops);
  auto plan = std::make_shared<Plan>();
  plan->batch = g.inputs.empty() || g.inputs[0].shape.empty() ? 1 : g.inputs[0].shape[0];
  Lowerer lowerer(g, options, plan.get(), winograd_convs);
  lowerer.g_opset_ = model.opset();
  RETURN_IF_ERROR(lowerer.Lower(nodes, observed));
  return std::shared_ptr<const Plan>(std::move(plan));
}

}  // namespace normserve
