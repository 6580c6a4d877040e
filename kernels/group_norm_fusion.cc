#include "kernels/group_norm_fusion.h"

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace normserve {
namespace {

struct Uses {
  absl::flat_hash_map<std::string, std::vector<size_t>> consumers;
  absl::flat_hash_map<std::string, bool> is_output;
};

// Per-channel values of a constant broadcastable to [C,1,1,...] (or a scalar).
bool PerChannel(const ConstTensor& t, int64_t channels, int rank, std::vector<float>* out) {
  if (t.type != ElementType::kFloat32) return false;
  if (t.size() == 1) {
    out->assign(channels, t.floats[0]);
    return true;
  }
  if (t.size() != channels) return false;
  // The channel dim must be the one that is not 1, at position 1 of the rank-`rank` output.
  const int offset = rank - static_cast<int>(t.shape.size());
  for (size_t i = 0; i < t.shape.size(); ++i) {
    if (t.shape[i] != 1 && static_cast<int>(i) + offset != 1) return false;
  }
  out->assign(t.floats.begin(), t.floats.end());
  return true;
}

}  // namespace

int FuseGroupNorms(SpecializedGraph* g) {
  Uses u;
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    for (const auto& in : g->nodes[i].inputs) u.consumers[in].push_back(i);
  }
  for (const auto& o : g->outputs) u.is_output[o.name] = true;
  auto single = [&](const std::string& v) -> int {
    auto it = u.consumers.find(v);
    if (it == u.consumers.end() || it->second.size() != 1 || u.is_output.contains(v)) return -1;
    return static_cast<int>(it->second[0]);
  };
  std::vector<bool> removed(g->nodes.size(), false);
  int fused = 0;
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    if (removed[i] || g->nodes[i].op != "Reshape") continue;
    const Node& r1 = g->nodes[i];
    const auto& xs = g->ShapeOf(r1.inputs[0]);
    const auto& ys = g->ShapeOf(r1.outputs[0]);
    if (xs.size() < 3 || ys.size() != 3 || ys[0] != xs[0]) continue;
    const int64_t groups = ys[1], channels = xs[1];
    if (groups <= 0 || channels % groups != 0) continue;
    const int in_i = single(r1.outputs[0]);
    if (in_i < 0 || g->nodes[in_i].op != "InstanceNormalization") continue;
    const Node& in = g->nodes[in_i];
    const ConstTensor& s = g->consts.at(in.inputs[1]);
    const ConstTensor& b = g->consts.at(in.inputs[2]);
    bool identity = true;
    for (int64_t k = 0; k < s.size(); ++k) identity &= s.AsDouble(k) == 1.0 && b.AsDouble(k) == 0.0;
    if (!identity) continue;
    const int r2_i = single(in.outputs[0]);
    if (r2_i < 0 || g->nodes[r2_i].op != "Reshape" || g->ShapeOf(g->nodes[r2_i].outputs[0]) != xs)
      continue;
    const Node& r2 = g->nodes[r2_i];
    const int mul_i = single(r2.outputs[0]);
    if (mul_i < 0 || g->nodes[mul_i].op != "Mul") continue;
    const Node& mul = g->nodes[mul_i];
    const std::string& gamma_name = mul.inputs[0] == r2.outputs[0] ? mul.inputs[1] : mul.inputs[0];
    std::vector<float> gamma, beta;
    if (!g->IsConst(gamma_name) ||
        !PerChannel(g->consts.at(gamma_name), channels, xs.size(), &gamma))
      continue;
    const int add_i = single(mul.outputs[0]);
    if (add_i < 0 || g->nodes[add_i].op != "Add") continue;
    const Node& add = g->nodes[add_i];
    const std::string& beta_name = add.inputs[0] == mul.outputs[0] ? add.inputs[1] : add.inputs[0];
    if (!g->IsConst(beta_name) || !PerChannel(g->consts.at(beta_name), channels, xs.size(), &beta))
      continue;

    Node gn;
    gn.name = absl::StrCat(in.name, "/group_norm");
    gn.op = "GroupNorm";
    Attribute groups_attr, eps_attr;
    groups_attr.i = groups;
    eps_attr.kind = Attribute::Kind::kFloat;
    eps_attr.f = in.FloatAttr("epsilon", 1e-5f);
    gn.attrs["num_groups"] = groups_attr;
    gn.attrs["epsilon"] = eps_attr;
    ConstTensor gt, bt;
    gt.shape = bt.shape = {channels};
    gt.floats = std::move(gamma);
    bt.floats = std::move(beta);
    const std::string gname = gn.name + "/gamma", bname = gn.name + "/beta";
    g->consts[gname] = std::move(gt);
    g->consts[bname] = std::move(bt);
    gn.inputs = {r1.inputs[0], gname, bname};
    gn.outputs = {add.outputs[0]};
    removed[i] = removed[in_i] = removed[r2_i] = removed[mul_i] = true;
    g->nodes[add_i] = std::move(gn);
    ++fused;
  }
  std::vector<Node> kept;
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    if (!removed[i]) kept.push_back(std::move(g->nodes[i]));
  }
  g->nodes = std::move(kept);
  return fused;
}

}  // namespace normserve
