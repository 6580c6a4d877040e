#include "kernels/batch_norm_folding.h"

#include <cmath>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace normserve {
namespace {

std::vector<float> Floats(const ConstTensor& t) {
  std::vector<float> v(t.size());
  for (int64_t i = 0; i < t.size(); ++i) v[i] = static_cast<float>(t.AsDouble(i));
  return v;
}

absl::flat_hash_map<std::string, int> CountUses(const SpecializedGraph& g) {
  absl::flat_hash_map<std::string, int> uses;
  for (const Node& n : g.nodes) {
    for (const auto& i : n.inputs) ++uses[i];
  }
  for (const auto& o : g.outputs) ++uses[o.name];
  return uses;
}

}  // namespace

void FoldBatchNormIntoWeights(const BnParams& bn, std::vector<float>* weights,
                              std::vector<float>* bias) {
  const size_t out = bn.scale.size();
  const size_t per = weights->size() / out;
  for (size_t o = 0; o < out; ++o) {
    const double s =
        static_cast<double>(bn.scale[o]) / std::sqrt(static_cast<double>(bn.var[o]) + bn.epsilon);
    for (size_t k = 0; k < per; ++k) {
      (*weights)[o * per + k] = static_cast<float>((*weights)[o * per + k] * s);
    }
    (*bias)[o] =
        static_cast<float>((static_cast<double>((*bias)[o]) - bn.mean[o]) * s + bn.bias[o]);
  }
}

absl::Status FoldBatchNorms(SpecializedGraph* g, const absl::flat_hash_set<std::string>& keep) {
  auto uses = CountUses(*g);
  absl::flat_hash_map<std::string, size_t> producer;
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    for (const auto& o : g->nodes[i].outputs) producer[o] = i;
  }
  std::vector<bool> removed(g->nodes.size(), false);
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    const Node& bn = g->nodes[i];
    if (bn.op != "BatchNormalization" || keep.contains(bn.name)) continue;
    auto p = producer.find(bn.inputs[0]);
    if (p == producer.end() || uses[bn.inputs[0]] != 1) continue;
    Node& prod = g->nodes[p->second];
    const bool conv = prod.op == "Conv";
    const bool gemm = prod.op == "Gemm" && prod.IntAttr("transA", 0) == 0;
    const bool matmul = prod.op == "MatMul";
    if (!conv && !gemm && !matmul) continue;
    auto w_it = g->consts.find(prod.inputs[1]);
    if (w_it == g->consts.end()) continue;
    const ConstTensor& w = w_it->second;
    if ((gemm || matmul) && w.shape.size() != 2) continue;
    if (matmul && g->ShapeOf(prod.inputs[0]).size() != 2) continue;

    BnParams params;
    params.scale = Floats(g->consts.at(bn.inputs[1]));
    params.bias = Floats(g->consts.at(bn.inputs[2]));
    params.mean = Floats(g->consts.at(bn.inputs[3]));
    params.var = Floats(g->consts.at(bn.inputs[4]));
    params.epsilon = bn.FloatAttr("epsilon", 1e-5f);
    const int64_t out = static_cast<int64_t>(params.scale.size());

    // Canonical weights with the output channel outermost.
    std::vector<float> weights = Floats(w);
    std::vector<int64_t> wshape = w.shape;
    std::vector<float> bias(out, 0.f);
    if (conv) {
      if (wshape[0] != out) continue;
      if (prod.inputs.size() > 2 && !prod.inputs[2].empty())
        bias = Floats(g->consts.at(prod.inputs[2]));
    } else {
      const bool trans_b = gemm && prod.IntAttr("transB", 0) != 0;
      const int64_t k = trans_b ? wshape[1] : wshape[0];
      if ((trans_b ? wshape[0] : wshape[1]) != out) continue;
      if (!trans_b) {
        std::vector<float> t(weights.size());
        for (int64_t r = 0; r < k; ++r) {
          for (int64_t c = 0; c < out; ++c) t[c * k + r] = weights[r * out + c];
        }
        weights.swap(t);
        wshape = {out, k};
      }
      const float alpha = gemm ? prod.FloatAttr("alpha", 1.f) : 1.f;
      const float beta = gemm ? prod.FloatAttr("beta", 1.f) : 1.f;
      for (float& v : weights) v *= alpha;
      if (gemm && prod.inputs.size() > 2 && !prod.inputs[2].empty()) {
        const ConstTensor* c = nullptr;
        auto it = g->consts.find(prod.inputs[2]);
        if (it == g->consts.end()) continue;  // runtime C: leave unfolded
        c = &it->second;
        if (c->size() != out && c->size() != 1) continue;
        for (int64_t o = 0; o < out; ++o)
          bias[o] = beta * static_cast<float>(c->AsDouble(c->size() == 1 ? 0 : o));
      }
    }
    // A QDQ int8 convolution's weights are its file's integers times per-channel scales
    // (ops/conv.cc recovers the integers as w / s). Folding multiplies channel o by
    // k = g / sqrt(var + eps), so its scale becomes s |k| and the integers at most change
    // sign; with stale scales they would be re-rounded and saturate. A zero or non-finite
    // k would lose them: such a BN stays unfolded.
    std::vector<float> int8_scales;
    if (conv && prod.HasAttr("int8_weight_scales")) {
      int8_scales = prod.attrs.at("int8_weight_scales").floats;
      if (static_cast<int64_t>(int8_scales.size()) != out) continue;
      bool representable = true;
      for (int64_t o = 0; o < out; ++o) {
        const double k = static_cast<double>(params.scale[o]) /
                         std::sqrt(static_cast<double>(params.var[o]) + params.epsilon);
        int8_scales[o] = static_cast<float>(int8_scales[o] * std::fabs(k));
        representable = representable && std::isfinite(int8_scales[o]) && int8_scales[o] > 0;
      }
      if (!representable) continue;
    }
    FoldBatchNormIntoWeights(params, &weights, &bias);
    if (!int8_scales.empty()) prod.attrs["int8_weight_scales"].floats = std::move(int8_scales);

    ConstTensor nw, nb;
    nw.shape = wshape;
    nw.floats = std::move(weights);
    nb.shape = {out};
    nb.floats = std::move(bias);
    const std::string wname = absl::StrCat(prod.name, "/bn_folded_weights");
    const std::string bname = absl::StrCat(prod.name, "/bn_folded_bias");
    g->consts[wname] = std::move(nw);
    g->consts[bname] = std::move(nb);
    if (!conv) {
      prod.op = "Gemm";
      prod.attrs.clear();
      Attribute tb;
      tb.i = 1;
      prod.attrs["transB"] = tb;
    }
    prod.inputs.resize(3);
    prod.inputs[1] = wname;
    prod.inputs[2] = bname;
    g->shapes.erase(prod.outputs[0]);
    prod.outputs[0] = bn.outputs[0];
    removed[i] = true;
  }
  std::vector<Node> kept;
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    if (!removed[i]) kept.push_back(std::move(g->nodes[i]));
  }
  g->nodes = std::move(kept);
  return absl::OkStatus();
}

}  // namespace normserve
