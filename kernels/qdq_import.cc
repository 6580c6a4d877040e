// QDQ file import (see qdq_import.h).
#include "kernels/qdq_import.h"

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace normserve {
namespace {

absl::Status NodeError(const Node& n, const std::string& why) {
  return absl::InvalidArgumentError(
      absl::StrCat("node \"", n.name.substr(0, 64), "\" (", n.op, "): ", why));
}

}  // namespace

absl::StatusOr<int> ImportQdq(Graph* g,
                              const absl::flat_hash_set<std::string>& uint8_initializers) {
  bool any = false;
  for (const Node& n : g->nodes)
    any = any || n.op == "QuantizeLinear" || n.op == "DequantizeLinear";
  if (!any) return 0;
  absl::flat_hash_map<std::string, const Node*> producer;
  for (const Node& n : g->nodes)
    for (const auto& o : n.outputs) producer[o] = &n;
  struct Activation {
    std::string source;
    float scale = 1;
    bool is_unsigned = true;
  };
  absl::flat_hash_map<std::string, std::vector<float>> weight_scales;  // folded DQ output
  absl::flat_hash_map<std::string, Activation> activations;            // DQ output -> x
  auto scalar = [&](const Node& n, int i, float dflt) -> absl::StatusOr<double> {
    if (n.inputs.size() <= static_cast<size_t>(i) || n.inputs[i].empty()) return dflt;
    auto it = g->initializers.find(n.inputs[i]);
    if (it == g->initializers.end() || it->second.size() != 1)
      return NodeError(n, absl::StrCat("input ", i, " must be a constant scalar"));
    return it->second.AsDouble(0);
  };
  for (const Node& n : g->nodes) {
    if (n.op != "DequantizeLinear") continue;
    auto q = g->initializers.find(n.inputs[0]);
    if (q != g->initializers.end()) {
      // Constant weights or bias: fold, keeping the per-channel scales.
      auto s = g->initializers.find(n.inputs.size() > 1 ? n.inputs[1] : "");
      if (s == g->initializers.end()) return NodeError(n, "scale must be a constant");
      const ConstTensor* zp = nullptr;
      if (n.inputs.size() > 2 && !n.inputs[2].empty()) {
        auto z = g->initializers.find(n.inputs[2]);
        if (z == g->initializers.end()) return NodeError(n, "zero point must be a constant");
        zp = &z->second;
      }
      const ConstTensor& qt = q->second;
      const int64_t channels = s->second.size();
      int64_t axis = n.IntAttr("axis", 1);
      if (axis < 0) axis += static_cast<int64_t>(qt.shape.size());
      int64_t inner = 1;
      if (channels > 1) {
        if (axis < 0 || axis >= static_cast<int64_t>(qt.shape.size()) || qt.shape[axis] != channels)
          return NodeError(n, absl::StrCat(channels, " scales do not match axis ", axis));
        for (size_t d = axis + 1; d < qt.shape.size(); ++d) inner *= qt.shape[d];
      }
      ConstTensor f;
      f.shape = qt.shape;
      f.floats.resize(qt.size());
      std::vector<float> scales(channels);
      for (int64_t c = 0; c < channels; ++c) scales[c] = static_cast<float>(s->second.AsDouble(c));
      for (int64_t i = 0; i < qt.size(); ++i) {
        const int64_t c = channels > 1 ? (i / inner) % channels : 0;
        const double z = zp == nullptr ? 0 : zp->AsDouble(zp->size() > 1 ? c : 0);
        f.floats[i] = static_cast<float>((qt.AsDouble(i) - z) * scales[c]);
      }
      g->initializers[n.outputs[0]] = std::move(f);
      if (axis == 0 || channels == 1) weight_scales[n.outputs[0]] = scales;
      continue;
    }
    auto p = producer.find(n.inputs[0]);
    if (p == producer.end() || p->second->op != "QuantizeLinear")
      return NodeError(n, "a runtime input must come from QuantizeLinear");
    const Node& qn = *p->second;
    Activation a;
    a.source = qn.inputs[0];
    auto qs = scalar(qn, 1, 1);
    auto qz = scalar(qn, 2, 0);
    auto ds = scalar(n, 1, 1);
    if (!qs.ok()) return qs.status();
    if (!qz.ok()) return qz.status();
    if (!ds.ok()) return ds.status();
    if (*qz != 0) return NodeError(qn, "only zero point 0 is supported (symmetric activations)");
    if (*qs != *ds) return NodeError(n, "scale differs from its QuantizeLinear's");
    a.scale = static_cast<float>(*qs);
    a.is_unsigned =
        qn.inputs.size() < 3 || qn.inputs[2].empty() || uint8_initializers.contains(qn.inputs[2]);
    activations[n.outputs[0]] = a;
  }
  for (const ValueSpec& o : g->outputs) {
    if (activations.contains(o.name))
      return absl::InvalidArgumentError(
          absl::StrCat("graph output \"", o.name.substr(0, 64), "\" is a DequantizeLinear"));
  }
  // A QuantizeLinear read by anything but a DequantizeLinear would dangle once removed.
  absl::flat_hash_set<std::string> quantized;
  for (const Node& n : g->nodes)
    if (n.op == "QuantizeLinear") quantized.insert(n.outputs[0]);
  int annotated = 0;
  std::vector<Node> kept;
  for (Node& n : g->nodes) {
    if (n.op == "DequantizeLinear") continue;
    if (n.op == "QuantizeLinear") continue;
    if (n.op == "Conv" && n.inputs.size() > 1) {
      auto a = activations.find(n.inputs[0]);
      auto w = weight_scales.find(n.inputs[1]);
      if (a != activations.end() && w != weight_scales.end()) {
        const int64_t out_channels = g->initializers.at(n.inputs[1]).shape[0];
        Attribute scales;
        scales.kind = Attribute::Kind::kFloats;
        scales.floats = w->second;
        if (scales.floats.size() == 1) scales.floats.assign(out_channels, w->second[0]);
        Attribute src_scale;
        src_scale.kind = Attribute::Kind::kFloat;
        src_scale.f = a->second.scale;
        Attribute src_unsigned;
        src_unsigned.i = a->second.is_unsigned ? 1 : 0;
        n.attrs["int8_weight_scales"] = scales;
        n.attrs["int8_src_scale"] = src_scale;
        n.attrs["int8_src_unsigned"] = src_unsigned;
        ++annotated;
      }
    }
    for (auto& in : n.inputs) {
      auto a = activations.find(in);
      if (a != activations.end()) in = a->second.source;
    }
    kept.push_back(std::move(n));
  }
  for (const Node& n : kept) {
    for (const auto& in : n.inputs) {
      if (quantized.contains(in))
        return NodeError(n, "reads a QuantizeLinear output directly (only DequantizeLinear may)");
    }
  }
  g->nodes = std::move(kept);
  return annotated;
}

}  // namespace normserve
