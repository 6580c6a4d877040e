// Post-training int8 quantization into a QDQ ONNX file (see int8_quantization.h).
#include "kernels/int8_quantization.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "kernels/batch_norm_folding.h"
#include "kernels/engine.h"
#include "kernels/specialize.h"
#include "kernels/status_macros.h"
#include "onnx/checker.h"
#include "onnx/onnx_pb.h"

namespace normserve {
namespace {

constexpr int64_t kMinOpset = 13;  // DequantizeLinear's per-channel `axis`

int64_t IntAttr(const onnx::NodeProto& n, const std::string& name, int64_t dflt) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return a.i();
  return dflt;
}
float FloatAttr(const onnx::NodeProto& n, const std::string& name, float dflt) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return a.f();
  return dflt;
}
void SetIntAttr(onnx::NodeProto* n, const std::string& name, int64_t v) {
  for (auto& a : *n->mutable_attribute()) {
    if (a.name() == name) {
      a.set_i(v);
      return;
    }
  }
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}

// Replaces (or adds) initializer `name` with `count` elements of `type` from `data`.
void PutInitializer(onnx::GraphProto* g, const std::string& name, const std::vector<int64_t>& dims,
                    onnx::TensorProto::DataType type, const void* data, size_t bytes) {
  onnx::TensorProto* t = nullptr;
  for (auto& init : *g->mutable_initializer()) {
    if (init.name() == name) t = &init;
  }
  if (t == nullptr) t = g->add_initializer();
  t->Clear();
  t->set_name(name);
  t->set_data_type(type);
  for (int64_t d : dims) t->add_dims(d);
  t->set_raw_data(std::string(static_cast<const char*>(data), bytes));
}
void PutFloats(onnx::GraphProto* g, const std::string& name, const std::vector<int64_t>& dims,
               const std::vector<float>& v) {
  PutInitializer(g, name, dims, onnx::TensorProto::FLOAT, v.data(), v.size() * sizeof(float));
}

// Drops initializers (and their graph-input entries) no node or output reads; value_info
// is dropped too, since folding removed or renamed values (ONNX Runtime re-infers it).
void SweepUnused(onnx::GraphProto* g) {
  absl::flat_hash_set<std::string> used;
  for (const auto& n : g->node()) used.insert(n.input().begin(), n.input().end());
  for (const auto& o : g->output()) used.insert(o.name());
  auto* inits = g->mutable_initializer();
  inits->erase(std::remove_if(inits->begin(), inits->end(),
                              [&](const onnx::TensorProto& t) { return !used.contains(t.name()); }),
               inits->end());
  absl::flat_hash_set<std::string> kept;
  for (const auto& t : g->initializer()) kept.insert(t.name());
  auto* inputs = g->mutable_input();
  inputs->erase(std::remove_if(inputs->begin(), inputs->end(),
                               [&](const onnx::ValueInfoProto& v) {
                                 return !used.contains(v.name()) && !kept.contains(v.name());
                               }),
                inputs->end());
  g->clear_value_info();
}

absl::StatusOr<onnx::ModelProto> ParseModel(const Model& model) {
  ASSIGN_OR_RETURN(std::string bytes, model.SerializeOnnx());
  onnx::ModelProto proto;
  if (!proto.ParseFromString(bytes)) return absl::InternalError("stored ONNX bytes do not parse");
  return proto;
}

bool FloatConst(const Graph& g, const std::string& name) {
  auto it = g.initializers.find(name);
  return it != g.initializers.end() && it->second.type == ElementType::kFloat32;
}

// Per-output-channel symmetric int8 weights: scale[o] = max|W[o]| / 127, levels -127..127.
struct QuantizedWeights {
  std::vector<int8_t> q;
  std::vector<float> scales;
  std::vector<float> dequantized;  // q * scale, what DequantizeLinear computes
};
QuantizedWeights QuantizeWeights(const ConstTensor& w, int axis) {
  const int64_t channels = w.shape[axis];
  int64_t inner = 1;
  for (size_t i = axis + 1; i < w.shape.size(); ++i) inner *= w.shape[i];
  const int64_t n = w.size();
  auto channel_of = [&](int64_t i) { return (i / inner) % channels; };
  QuantizedWeights r;
  r.scales.assign(channels, 0.f);
  for (int64_t i = 0; i < n; ++i) {
    float& s = r.scales[channel_of(i)];
    s = std::max(s, std::fabs(w.floats[i]));
  }
  for (float& s : r.scales) s = s > 0 ? s / 127.f : 1.f;  // an all-zero channel stays zero
  r.q.resize(n);
  r.dequantized.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    const float s = r.scales[channel_of(i)];
    const float q = std::clamp(std::nearbyint(w.floats[i] / s), -127.f, 127.f);
    r.q[i] = static_cast<int8_t>(q);
    r.dequantized[i] = q * s;
  }
  return r;
}

// The axis of a Conv/Gemm weight that indexes output channels.
int WeightAxis(const Node& n) { return n.op == "Gemm" && n.IntAttr("transB", 0) == 0 ? 1 : 0; }

// A Conv/Gemm whose weights are a float constant and whose input is quantized.
struct QuantizedLayer {
  const Node* node;
  QuantizedWeights weights;
};

// Per-tensor scale from all calibration values of the tensor (see MseOptimalClip).
ActivationQuantization ChooseScale(const std::string& tensor, const float* v, int64_t n, int bins) {
  ActivationQuantization a;
  a.tensor = tensor;
  float lo = 0, hi = 0;
  for (int64_t i = 0; i < n; ++i) {
    lo = std::min(lo, v[i]);
    hi = std::max(hi, v[i]);
  }
  a.is_unsigned = lo >= 0;
  a.max_abs = std::max(-static_cast<double>(lo), static_cast<double>(hi));
  const int levels = a.is_unsigned ? 255 : 127;
  if (!(a.max_abs > 0)) {
    a.scale = 1;
    return a;
  }
  const double width = a.max_abs / bins;
  std::vector<int64_t> counts(bins, 0);
  for (int64_t i = 0; i < n; ++i) {
    // Exact zeros (ReLU's) quantize exactly whatever the clip: they carry no noise.
    if (v[i] == 0) continue;
    const int64_t b = static_cast<int64_t>(std::fabs(v[i]) / width);
    ++counts[std::min<int64_t>(b, bins - 1)];
  }
  a.scale = static_cast<float>(MseOptimalClip(counts, width, levels) / levels);
  return a;
}

// x -> DequantizeLinear(QuantizeLinear(x)) as ONNX defines them (round half to even,
// saturate to the type's range).
void FakeQuantize(const ActivationQuantization& a, float* v, int64_t n) {
  const float lo = a.is_unsigned ? 0.f : -128.f, hi = a.is_unsigned ? 255.f : 127.f;
  for (int64_t i = 0; i < n; ++i)
    v[i] = std::clamp(std::nearbyint(v[i] / a.scale), lo, hi) * a.scale;
}

}  // namespace

double MseOptimalClip(absl::Span<const int64_t> counts, double bin_width, int levels) {
  const size_t bins = counts.size();
  if (bins == 0) return bin_width;
  // Tail sums over bins >= k of c, c x, c x^2 (x the bin centre).
  std::vector<double> s0(bins + 1, 0), s1(bins + 1, 0), s2(bins + 1, 0);
  for (size_t i = bins; i-- > 0;) {
    const double x = (i + 0.5) * bin_width, c = static_cast<double>(counts[i]);
    s0[i] = s0[i + 1] + c;
    s1[i] = s1[i + 1] + c * x;
    s2[i] = s2[i + 1] + c * x * x;
  }
  double best_t = bins * bin_width, best = std::numeric_limits<double>::infinity();
  for (size_t k = 1; k <= bins; ++k) {
    const double t = k * bin_width, step = t / levels;
    const double inside = s0[0] - s0[k];
    const double cost = inside * step * step / 12 + (s2[k] - 2 * t * s1[k] + t * t * s0[k]);
    if (cost < best) {
      best = cost;
      best_t = t;
    }
  }
  return best_t;
}

absl::StatusOr<std::string> FoldBatchNormsOnnx(const Model& model) {
  ASSIGN_OR_RETURN(onnx::ModelProto proto, ParseModel(model));
  onnx::GraphProto* g = proto.mutable_graph();
  const auto& inits = model.graph().initializers;
  absl::flat_hash_map<std::string, int> uses;
  for (const auto& n : g->node())
    for (const auto& in : n.input()) ++uses[in];
  for (const auto& o : g->output()) uses[o.name()] += 2;  // never fold away an output
  absl::flat_hash_map<std::string, int> producer;
  for (int i = 0; i < g->node_size(); ++i)
    for (const auto& o : g->node(i).output()) producer[o] = i;

  std::vector<bool> drop(g->node_size(), false);
  for (int i = 0; i < g->node_size(); ++i) {
    const onnx::NodeProto& bn = g->node(i);
    if (bn.op_type() != "BatchNormalization" || bn.input_size() != 5 || bn.output_size() != 1)
      continue;
    auto pi = producer.find(bn.input(0));
    if (pi == producer.end() || uses[bn.input(0)] != 1) continue;
    onnx::NodeProto* p = g->mutable_node(pi->second);
    const bool gemm = p->op_type() == "Gemm";
    if (p->op_type() != "Conv" && !gemm) continue;
    const std::string& wname = p->input(1);
    if (!FloatConst(model.graph(), wname) || uses[wname] != 1) continue;
    // A parameter may come through an Identity of an initializer: torch's export shares
    // equal initializers that way, and a BN whose output is summed with another BN's (a
    // residual block's two branches) gets the same beta gradients, so equal betas.
    std::string params[5];
    std::vector<int> identities;
    for (int k = 1; k < 5; ++k) {
      params[k] = bn.input(k);
      if (FloatConst(model.graph(), params[k])) continue;
      auto id = producer.find(params[k]);
      if (id == producer.end()) break;
      const onnx::NodeProto& idn = g->node(id->second);
      if (idn.op_type() != "Identity" || !FloatConst(model.graph(), idn.input(0))) break;
      if (uses[params[k]] == 1) identities.push_back(id->second);
      params[k] = idn.input(0);
    }
    bool all_const = true;
    for (int k = 1; k < 5; ++k) all_const = all_const && FloatConst(model.graph(), params[k]);
    if (!all_const) continue;
    const bool has_bias = p->input_size() > 2 && !p->input(2).empty();
    if (has_bias && (!FloatConst(model.graph(), p->input(2)) || uses[p->input(2)] != 1)) continue;
    if (gemm && (IntAttr(*p, "transA", 0) != 0 || FloatAttr(*p, "alpha", 1) != 1 ||
                 FloatAttr(*p, "beta", 1) != 1))
      continue;
    const ConstTensor& w = inits.at(wname);
    std::vector<float> weights = w.floats;
    std::vector<int64_t> wshape = w.shape;
    if (gemm && IntAttr(*p, "transB", 0) == 0) {
      if (wshape.size() != 2) continue;
      // [K, N] -> [N, K]: BN folding scales rows (output channels).
      const int64_t k = wshape[0], n = wshape[1];
      for (int64_t r = 0; r < k; ++r)
        for (int64_t c = 0; c < n; ++c) weights[c * k + r] = w.floats[r * n + c];
      wshape = {n, k};
      SetIntAttr(p, "transB", 1);
    }
    const int64_t out_channels = wshape[0];
    BnParams bp;
    bp.scale = inits.at(params[1]).floats;
    bp.bias = inits.at(params[2]).floats;
    bp.mean = inits.at(params[3]).floats;
    bp.var = inits.at(params[4]).floats;
    bp.epsilon = FloatAttr(bn, "epsilon", 1e-5f);
    if (static_cast<int64_t>(bp.scale.size()) != out_channels) continue;
    std::vector<float> bias =
        has_bias ? inits.at(p->input(2)).floats : std::vector<float>(out_channels, 0.f);
    if (static_cast<int64_t>(bias.size()) != out_channels) continue;
    FoldBatchNormIntoWeights(bp, &weights, &bias);
    PutFloats(g, wname, wshape, weights);
    const std::string bname = has_bias ? p->input(2) : p->output(0) + "_folded_bias";
    PutFloats(g, bname, {out_channels}, bias);
    if (p->input_size() < 3) p->add_input(bname);
    p->set_input(2, bname);
    p->set_output(0, bn.output(0));
    drop[i] = true;
    for (int id : identities) drop[id] = true;
  }
  google::protobuf::RepeatedPtrField<onnx::NodeProto> kept;
  for (int i = 0; i < g->node_size(); ++i)
    if (!drop[i]) *kept.Add() = g->node(i);
  g->mutable_node()->Swap(&kept);
  SweepUnused(g);
  std::string out;
  if (!proto.SerializeToString(&out)) return absl::InternalError("ONNX serialization failed");
  return out;
}

absl::StatusOr<Int8QuantizationResult> QuantizeInt8(std::shared_ptr<const Model> model,
                                                    absl::Span<const Tensor> samples,
                                                    const Int8QuantizationOptions& options) {
  std::vector<const Tensor*> pointers;
  pointers.reserve(samples.size());
  for (const Tensor& t : samples) pointers.push_back(&t);
  return QuantizeInt8(std::move(model), absl::MakeConstSpan(pointers), options);
}

absl::StatusOr<Int8QuantizationResult> QuantizeInt8(std::shared_ptr<const Model> model,
                                                    absl::Span<const Tensor* const> samples,
                                                    const Int8QuantizationOptions& options) {
  if (samples.empty()) return absl::InvalidArgumentError("no samples to calibrate int8 with");
  if (options.histogram_bins < 16 || options.batch < 1)
    return absl::InvalidArgumentError("histogram_bins must be >= 16 and batch >= 1");
  if (model->opset() < kMinOpset) {
    return absl::FailedPreconditionError(
        absl::StrCat("int8 QDQ export needs opset ", kMinOpset,
                     " or newer (per-channel DequantizeLinear); the "
                     "model has opset ",
                     model->opset(), ": re-export it at opset 13+"));
  }
  if (model->inputs().size() != 1)
    return absl::InvalidArgumentError("int8 calibration supports single-input models");

  Int8QuantizationResult result;
  ASSIGN_OR_RETURN(std::string folded_bytes, FoldBatchNormsOnnx(*model));
  ASSIGN_OR_RETURN(result.folded, Model::LoadBytes(folded_bytes));
  const Model& folded = *result.folded;
  const Graph& graph = folded.graph();
  const std::string& input_name = folded.inputs()[0].name;

  // The layers quantized and their activation points, in graph order.
  std::vector<QuantizedLayer> layers;
  std::vector<std::string> points;
  absl::flat_hash_map<std::string, int> point_index;
  for (const Node& n : graph.nodes) {
    if ((n.op != "Conv" && n.op != "Gemm") || n.inputs.size() < 2) continue;
    const std::string& x = n.inputs[0];
    if (!FloatConst(graph, n.inputs[1]) || graph.initializers.contains(x)) continue;
    if (x == input_name && !options.quantize_input_convs) continue;
    layers.push_back({&n, QuantizeWeights(graph.initializers.at(n.inputs[1]), WeightAxis(n))});
    if (!point_index.contains(x)) {
      point_index[x] = static_cast<int>(points.size());
      points.push_back(x);
    }
  }
  if (layers.empty())
    return absl::FailedPreconditionError("the model has no Conv/Gemm to quantize");
  // A layer's output read by anything but an activation (a residual Add) is quantized
  // too, so an int8 engine keeps it in 8 bits (ONNX Runtime then runs QLinearConv and
  // QLinearAdd instead of float kernels between DequantizeLinear and QuantizeLinear).
  // Behind Relu/Clip the activation's output is the point (also before a MaxPool: the
  // output leaves the layer in 8 bits); graph outputs stay float.
  if (options.quantize_layer_outputs) {
    absl::flat_hash_map<std::string, std::vector<const Node*>> readers;
    for (const Node& n : graph.nodes)
      for (const auto& in : n.inputs) readers[in].push_back(&n);
    absl::flat_hash_set<std::string> graph_outputs;
    for (const ValueSpec& o : graph.outputs) graph_outputs.insert(o.name);
    for (const QuantizedLayer& l : layers) {
      const std::string& y = l.node->outputs[0];
      if (graph_outputs.contains(y) || point_index.contains(y)) continue;
      bool only_activations = true;
      for (const Node* r : readers[y])
        only_activations = only_activations && (r->op == "Relu" || r->op == "Clip");
      std::vector<std::string> outs = {y};
      if (only_activations) {
        outs.clear();
        for (const Node* r : readers[y]) outs.push_back(r->outputs[0]);
      }
      for (const std::string& v : outs) {
        if (graph_outputs.contains(v) || point_index.contains(v)) continue;
        point_index[v] = static_cast<int>(points.size());
        points.push_back(v);
      }
    }
  }
  result.quantized_layers = static_cast<int>(layers.size());

  // The network calibration runs: weights already quantized when layer-wise.
  std::shared_ptr<const Model> run_model = result.folded;
  if (options.layerwise) {
    onnx::ModelProto proto;
    proto.ParseFromString(folded_bytes);
    for (const QuantizedLayer& l : layers) {
      PutFloats(proto.mutable_graph(), l.node->inputs[1],
                graph.initializers.at(l.node->inputs[1]).shape, l.weights.dequantized);
    }
    std::string bytes;
    proto.SerializeToString(&bytes);
    ASSIGN_OR_RETURN(run_model, Model::LoadBytes(bytes));
  }

  // Waves: a point's wave is 1 + the largest wave of the points upstream of it, so one
  // pass per wave sees every upstream point quantized. One pass of fp32 otherwise.
  std::vector<int> wave(points.size(), 0);
  if (options.layerwise) {
    absl::flat_hash_map<std::string, std::vector<bool>> upstream;
    auto mark = [&](const std::string& v, std::vector<bool> up) {
      auto pi = point_index.find(v);
      if (pi != point_index.end()) {
        for (size_t k = 0; k < up.size(); ++k)
          if (up[k]) wave[pi->second] = std::max(wave[pi->second], wave[k] + 1);
        up[pi->second] = true;
      }
      upstream[v] = std::move(up);
    };
    mark(input_name, std::vector<bool>(points.size(), false));
    for (const Node& n : graph.nodes) {
      std::vector<bool> up(points.size(), false);
      for (const auto& in : n.inputs) {
        auto it = upstream.find(in);
        if (it == upstream.end()) continue;
        for (size_t k = 0; k < up.size(); ++k) up[k] = up[k] || it->second[k];
      }
      for (const auto& o : n.outputs) mark(o, up);
    }
  }
  result.waves = points.empty() ? 0 : *std::max_element(wave.begin(), wave.end()) + 1;

  ASSIGN_OR_RETURN(SpecializedGraph at1, Specialize(graph, InputShapesFor(graph, 1)));
  auto per_sample = [&](const std::string& v) {
    int64_t n = 1;
    const auto& s = at1.ShapeOf(v);
    for (size_t i = 1; i < s.size(); ++i) n *= s[i];
    return n;
  };
  std::vector<const float*> rows;
  const int64_t in_per = per_sample(input_name);
  for (size_t s = 0; s < samples.size(); ++s) {
    const Tensor& t = *samples[s];
    if (t.shape.empty() || static_cast<int64_t>(t.data.size()) != t.shape[0] * in_per) {
      return absl::InvalidArgumentError(
          absl::StrCat("calibration sample ", s, " has shape ", ShapeToString(t.shape),
                       "; the model input is ", ShapeToString(folded.inputs()[0].shape)));
    }
    for (int64_t b = 0; b < t.shape[0]; ++b) rows.push_back(t.data.data() + b * in_per);
  }
  const int64_t total = static_cast<int64_t>(rows.size());
  const bool batchable = folded.inputs()[0].shape[0] < 0;
  const int64_t batch = batchable ? options.batch : 1;

  absl::flat_hash_map<std::string, std::vector<size_t>> consumers;
  for (size_t i = 0; i < graph.nodes.size(); ++i)
    for (const auto& in : graph.nodes[i].inputs) consumers[in].push_back(i);
  std::vector<bool> done(graph.nodes.size(), false);
  // Quantized values of every sample, [total x per_sample], while a later pass reads them.
  absl::flat_hash_map<std::string, std::vector<float>> kept;
  std::vector<ActivationQuantization> chosen(points.size());
  std::vector<float> chunk;
  for (int w = 0; w < result.waves; ++w) {
    std::vector<std::string> targets;
    absl::flat_hash_map<std::string, std::vector<float>> values;
    for (size_t p = 0; p < points.size(); ++p) {
      if (wave[p] != w) continue;
      if (points[p] == input_name) {
        auto& v = values[input_name];
        v.resize(total * in_per);
        for (int64_t s = 0; s < total; ++s)
          std::memcpy(v.data() + s * in_per, rows[s], in_per * sizeof(float));
      } else {
        targets.push_back(points[p]);
      }
    }
    int64_t held = 0;
    for (const auto& [v, rows_of_v] : kept) held += static_cast<int64_t>(rows_of_v.size());
    for (const auto& t : targets) held += total * per_sample(t);
    held += static_cast<int64_t>(values.size()) * total * in_per;
    if (held * static_cast<int64_t>(sizeof(float)) > options.max_kept_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("int8 calibration pass ", w, " needs ", held * sizeof(float),
                       " bytes of activations for ", total, " samples; the limit is ",
                       options.max_kept_bytes, " (use fewer samples)"));
    }
    if (!targets.empty()) {
      std::vector<ValueSpec> slice_inputs;
      const std::vector<bool> need =
          NodesFeeding(run_model->graph(), targets, [&](const std::string& v) {
            if (v == input_name) {
              slice_inputs.push_back(run_model->inputs()[0]);
              return true;
            }
            if (!kept.contains(v)) return false;
            std::vector<int64_t> shape = at1.ShapeOf(v);
            shape[0] = -1;
            slice_inputs.push_back(ValueSpec{v, ElementType::kFloat32, shape});
            return true;
          });
      for (size_t i = 0; i < need.size(); ++i) done[i] = done[i] || need[i];
      ASSIGN_OR_RETURN(auto slice, run_model->Slice(slice_inputs, targets));
      CompileOptions co;
      co.intra_op_threads = options.intra_op_threads;
      co.max_batch = batch;
      co.precompile_batch_sizes =
          batch > 1 ? std::vector<int64_t>{1, batch} : std::vector<int64_t>{1};
      co.conv_algorithm = ConvAlgorithm::kDirect;
      ASSIGN_OR_RETURN(auto compiled, CompiledModel::Compile(slice, co));
      auto ctx = compiled->NewContext();
      for (const auto& t : targets) values[t].resize(total * per_sample(t));
      for (int64_t start = 0; start < total; start += batch) {
        const int64_t n = std::min(batch, total - start);
        std::vector<TensorView> inputs;
        for (const ValueSpec& in : slice->inputs()) {
          std::vector<int64_t> shape = at1.ShapeOf(in.name);
          shape[0] = n;
          auto k = kept.find(in.name);
          if (k != kept.end()) {
            inputs.push_back(TensorView{k->second.data() + start * per_sample(in.name), shape});
          } else {  // the raw model input (not quantized, or one fp32 pass)
            chunk.resize(n * in_per);
            for (int64_t b = 0; b < n; ++b)
              std::memcpy(chunk.data() + b * in_per, rows[start + b], in_per * sizeof(float));
            inputs.push_back(TensorView{chunk.data(), shape});
          }
        }
        std::vector<float*> outputs;
        for (const auto& t : targets) outputs.push_back(values[t].data() + start * per_sample(t));
        RETURN_IF_ERROR(ctx->RunInto(inputs, outputs));
      }
    }
    for (auto& [name, v] : values) {
      const int p = point_index.at(name);
      chosen[p] =
          ChooseScale(name, v.data(), static_cast<int64_t>(v.size()), options.histogram_bins);
      chosen[p].wave = w;
      if (options.layerwise) {
        FakeQuantize(chosen[p], v.data(), static_cast<int64_t>(v.size()));
        kept[name] = std::move(v);
      }
    }
    // Drop kept values every reader of which has run.
    for (auto it = kept.begin(); it != kept.end();) {
      bool needed = false;
      for (size_t c : consumers[it->first]) needed = needed || !done[c];
      if (needed) {
        ++it;
      } else {
        kept.erase(it++);
      }
    }
  }
  result.activations = chosen;

  // The QDQ file.
  onnx::ModelProto proto;
  proto.ParseFromString(folded_bytes);
  onnx::GraphProto* g = proto.mutable_graph();
  absl::flat_hash_map<std::string, std::string> renamed;  // value -> its dequantized value
  google::protobuf::RepeatedPtrField<onnx::NodeProto> nodes;
  auto add_dq = [&](const std::string& q, const std::string& scale, const std::string& zp,
                    const std::string& out, int64_t axis) {
    onnx::NodeProto* n = nodes.Add();
    n->set_op_type("DequantizeLinear");
    n->set_name(out);
    n->add_input(q);
    n->add_input(scale);
    if (!zp.empty()) n->add_input(zp);
    n->add_output(out);
    if (axis >= 0) SetIntAttr(n, "axis", axis);
  };
  auto activation_qdq = [&](const std::string& x) {
    auto pi = point_index.find(x);
    if (pi == point_index.end()) return;
    const ActivationQuantization& a = chosen[pi->second];
    const std::string scale = x + "_scale", zp = x + "_zero_point", q = x + "_quantized";
    const float s = a.scale;
    PutFloats(g, scale, {}, {s});
    const uint8_t zero = 0;
    PutInitializer(g, zp, {}, a.is_unsigned ? onnx::TensorProto::UINT8 : onnx::TensorProto::INT8,
                   &zero, 1);
    onnx::NodeProto* n = nodes.Add();
    n->set_op_type("QuantizeLinear");
    n->set_name(q);
    n->add_input(x);
    n->add_input(scale);
    n->add_input(zp);
    n->add_output(q);
    add_dq(q, scale, zp, x + "_dequantized", -1);
    renamed[x] = x + "_dequantized";
  };
  // Weights and biases: constants, so their DequantizeLinear nodes come first.
  for (const QuantizedLayer& l : layers) {
    const Node& n = *l.node;
    const std::string& wname = n.inputs[1];
    const ConstTensor& w = graph.initializers.at(wname);
    const int64_t axis = WeightAxis(n), channels = w.shape[axis];
    PutInitializer(g, wname + "_quantized", w.shape, onnx::TensorProto::INT8, l.weights.q.data(),
                   l.weights.q.size());
    PutFloats(g, wname + "_scale", {channels}, l.weights.scales);
    const std::vector<int8_t> zeros(channels, 0);
    PutInitializer(g, wname + "_zero_point", {channels}, onnx::TensorProto::INT8, zeros.data(),
                   zeros.size());
    add_dq(wname + "_quantized", wname + "_scale", wname + "_zero_point", wname + "_dequantized",
           axis);
    renamed[wname] = wname + "_dequantized";
    if (n.inputs.size() < 3 || n.inputs[2].empty() || !FloatConst(graph, n.inputs[2])) continue;
    const std::string& bname = n.inputs[2];
    const ConstTensor& b = graph.initializers.at(bname);
    if (b.size() != channels) continue;  // a broadcast Gemm bias stays float
    const float sx = chosen[point_index.at(n.inputs[0])].scale;
    std::vector<float> bscale(channels);
    std::vector<int32_t> bq(channels), bzero(channels, 0);
    for (int64_t o = 0; o < channels; ++o) {
      bscale[o] = sx * l.weights.scales[o];
      const double q = std::nearbyint(b.floats[o] / static_cast<double>(bscale[o]));
      bq[o] = static_cast<int32_t>(std::clamp(q, -2147483647.0, 2147483647.0));
    }
    PutInitializer(g, bname + "_quantized", {channels}, onnx::TensorProto::INT32, bq.data(),
                   bq.size() * sizeof(int32_t));
    PutFloats(g, bname + "_scale", {channels}, bscale);
    PutInitializer(g, bname + "_zero_point", {channels}, onnx::TensorProto::INT32, bzero.data(),
                   bzero.size() * sizeof(int32_t));
    add_dq(bname + "_quantized", bname + "_scale", bname + "_zero_point", bname + "_dequantized",
           0);
    renamed[bname] = bname + "_dequantized";
  }
  activation_qdq(input_name);
  for (const auto& n : g->node()) {
    onnx::NodeProto* copy = nodes.Add();
    *copy = n;
    for (auto& in : *copy->mutable_input()) {
      auto it = renamed.find(in);
      if (it != renamed.end()) in = it->second;
    }
    for (const auto& o : n.output()) activation_qdq(o);
  }
  g->mutable_node()->Swap(&nodes);
  SweepUnused(g);
  try {
    onnx::checker::check_model(proto);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("the QDQ model fails the ONNX checker: ", e.what()));
  }
  if (!proto.SerializeToString(&result.qdq_onnx))
    return absl::InternalError("ONNX serialization failed");
  return result;
}

}  // namespace normserve
