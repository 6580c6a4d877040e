#include "kernels/pad_folding.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "kernels/ops/pad.h"
#include "kernels/shape_inference.h"

namespace normserve {
namespace {

void SetInts(Node* n, const std::string& key, std::vector<int64_t> v) {
  Attribute a;
  a.kind = Attribute::Kind::kInts;
  a.ints = std::move(v);
  n->attrs[key] = std::move(a);
}

void SetInt(Node* n, const std::string& key, int64_t v) {
  Attribute a;
  a.kind = Attribute::Kind::kInt;
  a.i = v;
  n->attrs[key] = std::move(a);
}

// True when `c` can take `pad`'s zeros as its own padding.
bool AcceptsZeroPadding(const Node& c) {
  if (c.StringAttr("auto_pad", "NOTSET") != "NOTSET") return false;
  if (c.op == "Conv") return true;
  if (c.op != "AveragePool" || c.IntAttr("ceil_mode", 0) != 0) return false;
  if (c.IntAttr("count_include_pad", 0) != 0) return true;
  for (int64_t p : c.IntsAttr("pads", {0, 0, 0, 0})) {
    if (p != 0) return false;
  }
  return true;
}

}  // namespace

int FoldZeroPads(SpecializedGraph* g) {
  absl::flat_hash_map<std::string, std::vector<size_t>> consumers;
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    for (const auto& in : g->nodes[i].inputs) consumers[in].push_back(i);
  }
  absl::flat_hash_set<std::string> outputs;
  for (const auto& o : g->outputs) outputs.insert(o.name);
  std::vector<bool> removed(g->nodes.size(), false);
  int folded = 0;
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    const Node& pad = g->nodes[i];
    if (pad.op != "Pad" || outputs.contains(pad.outputs[0])) continue;
    auto shape = g->shapes.find(pad.inputs[0]);
    if (shape == g->shapes.end() || shape->second.size() != 4) continue;
    auto spec = ReadPadSpec(pad, ShapeContext(*g), 4);
    if (!spec.ok() || spec->mode != PadSpec::Mode::kConstant || spec->value != 0.f) continue;
    if (spec->begin[0] != 0 || spec->begin[1] != 0 || spec->end[0] != 0 || spec->end[1] != 0)
      continue;
    if (spec->begin[2] < 0 || spec->begin[3] < 0 || spec->end[2] < 0 || spec->end[3] < 0) continue;
    auto uses = consumers.find(pad.outputs[0]);
    if (uses == consumers.end() || uses->second.size() != 1) continue;
    Node& c = g->nodes[uses->second[0]];
    if (c.inputs[0] != pad.outputs[0] || !AcceptsZeroPadding(c)) continue;
    std::vector<int64_t> pads = c.IntsAttr("pads", {0, 0, 0, 0});
    if (pads.size() != 4) continue;
    // ONNX order: H begin, W begin, H end, W end. Both terms are bounded by
    // kMaxWindowGeometry (checked by shape inference), so the sums cannot overflow.
    const int64_t add[4] = {spec->begin[2], spec->begin[3], spec->end[2], spec->end[3]};
    bool fits = true;
    for (int k = 0; k < 4; ++k) {
      pads[k] += add[k];
      fits &= pads[k] <= kMaxWindowGeometry;
    }
    if (!fits) continue;
    SetInts(&c, "pads", std::move(pads));
    if (c.op == "AveragePool") SetInt(&c, "count_include_pad", 1);
    g->shapes.erase(pad.outputs[0]);
    c.inputs[0] = pad.inputs[0];
    removed[i] = true;
    ++folded;
  }
  std::vector<Node> kept;
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    if (!removed[i]) kept.push_back(std::move(g->nodes[i]));
  }
  g->nodes = std::move(kept);
  return folded;
}

}  // namespace normserve
