// Conv lowering: oneDNN convolution with fused post-ops (activations, residual sum)
// and the Winograd-or-direct choice.
#include <cmath>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/conv_algorithm_choice.h"
#include "kernels/lowering_context.h"
#include "kernels/precision.h"
#include "kernels/shape_inference.h"
#include "kernels/status_macros.h"
#include "kernels/tensor.h"

namespace normserve {
namespace {

bool WantWinograd(const std::string& conv, const LoweringContext& ctx) {
  // Statistics plans feed float64 accumulators that must not depend on how requests
  // were batched; oneDNN's Winograd kernels round differently at batch 1 and batch N
  // (observed_winograd: the caller runs every sample at batch 1).
  if (!ctx.options().observed_bn_layers.empty() && !ctx.options().observed_winograd) return false;
  if (ctx.winograd_convs() != nullptr) return ctx.winograd_convs()->contains(conv);
  return ctx.options().conv_algorithm != ConvAlgorithm::kDirect;
}

}  // namespace

absl::Status LowerConv(const FusedNode& f, LoweringContext& ctx) {
  const Node& n = f.node;
  const dims x = ctx.DimsOf(n.inputs[0]), w = ctx.DimsOf(n.inputs[1]),
             y = ctx.DimsOf(f.node.outputs[0]);
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
  // An int8 convolution of a QDQ model (qdq_import.h): u8/s8 source, s8 weights, f32 bias
  // and destination; oneDNN 2.6 computes dst = scale[o] * (sum src * w + bias[o]), so the
  // bias is given in the accumulator's units, b / (s_x s_w[o]).
  const bool int8 =
      EffectivePrecision(ctx.options()) == Precision::kInt8 && n.HasAttr("int8_src_scale");
  const float src_scale = n.FloatAttr("int8_src_scale", 1.f);
  std::vector<float> out_scales;
  if (int8) {
    out_scales = n.attrs.at("int8_weight_scales").floats;
    if (static_cast<int64_t>(out_scales.size()) != w[0])
      return absl::InvalidArgumentError(absl::StrCat("conv ", n.name, ": ", out_scales.size(),
                                                     " weight scales for ", w[0], " channels"));
    for (float& s : out_scales) s *= src_scale;
  }
  const dt src_int8_dt = n.IntAttr("int8_src_unsigned", 1) != 0 ? dt::u8 : dt::s8;
  auto conv_attr = [&]() {
    dnnl::primitive_attr attr = ctx.Attr(f.post_ops);
    if (int8) attr.set_output_scales(1 << 1, out_scales);  // per output channel
    return attr;
  };
  auto conv_desc = [&](dnnl::algorithm algorithm) {
    // In a bf16 plan, source, weights and destination are bf16 (oneDNN accumulates in
    // f32); the bias stays f32. A convolution of a graph input stays f32: rounding what
    // the client sent to 8 significant bits loses input resolution (pixels of a
    // low-contrast image, 0.5 +- 0.15 in steps of 0.0012, fall on bf16's 0.0039 grid),
    // and with 1-3 input channels bf16 gains little there.
    const bool f32 = ctx.options().input_convs_f32 && ctx.IsGraphInput(n.inputs[0]);
    const md src_any = int8  ? WithType(Any(x), src_int8_dt)
                       : f32 ? Any(x)
                             : ctx.ActAny(x),
             w_any = int8  ? WithType(Any(wdims), dt::s8)
                     : f32 ? Any(wdims)
                           : ctx.ActAny(wdims),
             dst_any = f32 ? Any(dst_dims) : ctx.ActAny(dst_dims);
    return has_bias ? CF::desc(dnnl::prop_kind::forward_inference, algorithm, src_any, w_any,
                               bias_md, dst_any, strides, dilates, pad_l, pad_r)
                    : CF::desc(dnnl::prop_kind::forward_inference, algorithm, src_any, w_any,
                               dst_any, strides, dilates, pad_l, pad_r);
  };
  CF::primitive_desc pd(conv_desc(dnnl::algorithm::convolution_direct), conv_attr(), CpuEngine());
  if (!int8 && WinogradApplies(w, strides, dilates, group) && WantWinograd(n.name, ctx)) {
    std::optional<CF::primitive_desc> wpd;
    try {
      wpd.emplace(conv_desc(dnnl::algorithm::convolution_winograd), ctx.Attr(f.post_ops),
                  CpuEngine());
    } catch (const dnnl::error&) {
      // No Winograd kernel for this shape, ISA or post-op chain: direct it is.
    }
    // A live statistics plan takes Winograd wherever it exists rather than where it timed
    // faster: the timing is made once per process, and a session recovered by another
    // process must compute the same per-sample moments from its log.
    if (wpd &&
        (ctx.winograd_convs() != nullptr ||
         ctx.options().conv_algorithm == ConvAlgorithm::kWinograd ||
         ctx.options().observed_winograd ||
         WinogradIsFaster(
             absl::StrCat("x=", absl::StrJoin(x, "x"), " w=", absl::StrJoin(w, "x"),
                          " pads=", absl::StrJoin(pads, ","), " bias=", has_bias, PostOpsText(f)),
             pd, *wpd))) {
      pd = *wpd;
      ctx.plan().winograd_convs.insert(n.name);
    }
  }
  Val src;
  std::vector<float> weights = Floats(ctx.ConstOf(n.inputs[1]));
  if (int8) {
    // The float value in the source's blocking, then quantized by a scaled reorder.
    ASSIGN_OR_RETURN(Val xf, ctx.InLayout(n.inputs[0], AsF32(pd.src_desc())));
    src = ctx.NewVal(pd.src_desc());
    ctx.AddScaledReorder(xf, src, 1.f / src_scale, n.inputs[0]);
    // The file's int8 weights, exact: they were imported as q * s_w[o].
    const int64_t per_out = static_cast<int64_t>(weights.size()) / w[0];
    for (size_t i = 0; i < weights.size(); ++i) {
      const float s = out_scales[i / per_out] / src_scale;
      weights[i] = std::nearbyint(weights[i] / s);
    }
  } else {
    ASSIGN_OR_RETURN(src, ctx.InLayout(n.inputs[0], pd.src_desc()));
  }
  const int wref = ctx.Const(weights, wdims, pd.weights_desc());
  Val dst;
  if (!f.sum_operand.empty()) {
    ASSIGN_OR_RETURN(Val res, ctx.Get(f.sum_operand));
    const bool alias =
        res.desc == pd.dst_desc() && res.buffer != src.buffer && ctx.DiesHere(f.sum_operand, res);
    if (alias) {
      dst = Val{res.buffer, pd.dst_desc()};
    } else {
      dst = ctx.NewVal(pd.dst_desc());
      RETURN_IF_ERROR(
          ctx.AddReorder(ctx.Ref(res), dst, absl::StrCat(f.sum_operand, " (residual)")));
    }
  } else {
    dst = ctx.NewVal(pd.dst_desc());
  }
  std::vector<std::pair<int, int>> args = {
      {DNNL_ARG_SRC, ctx.Ref(src)}, {DNNL_ARG_WEIGHTS, wref}, {DNNL_ARG_DST, ctx.Ref(dst)}};
  if (has_bias) {
    std::vector<float> bias = Floats(ctx.ConstOf(n.inputs[2]));
    if (int8) {
      for (int64_t o = 0; o < w[0]; ++o) bias[o] /= out_scales[o];
    }
    args.push_back({DNNL_ARG_BIAS, ctx.ConstPlain(bias, {w[0]})});
  }
  ctx.plan().flops +=
      2.0 * dst_dims[0] * dst_dims[1] * dst_dims[2] * dst_dims[3] * w[1] * w[2] * w[3];
  ctx.AddStep(absl::StrCat("conv ", n.name, PostOpsText(f)), pd, CF(pd), std::move(args));
  ctx.Define(f.output, dst);
  // An aliased residual is dead now: its buffer holds only this output.
  ctx.SetSoleValue(dst.buffer);
  return absl::OkStatus();
}

absl::StatusOr<Shape> InferConvShape(const Node& n, const ShapeContext& ctx) {
  ASSIGN_OR_RETURN(Shape x, ctx.InputShape(n, 0));
  ASSIGN_OR_RETURN(Shape w, ctx.InputShape(n, 1));
  if (x.size() != 4 || w.size() != 4)
    return NodeError(n, "only 2-D convolutions (4-D tensors) are supported");
  if (!ctx.Const(n, 1)) return NodeError(n, "weights must be a constant initializer");
  const int64_t group = n.IntAttr("group", 1);
  if (group <= 0 || x[1] != w[1] * group || w[0] % group != 0) {
    return NodeError(n, absl::StrCat("input channels ", x[1], " do not match weights ",
                                     ShapeToString(w), " with group ", group));
  }
  ASSIGN_OR_RETURN(auto p, WindowOutputDims(n, x, {w[2], w[3]}));
  return Shape{x[0], w[0], p[0], p[1]};
}

}  // namespace normserve
