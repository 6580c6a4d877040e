#include "kernels/model.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "kernels/onnx_import.h"
#include "kernels/qdq_import.h"
#include "kernels/specialize.h"
#include "kernels/status_macros.h"
#include "onnx/onnx_pb.h"

namespace normserve {

absl::StatusOr<std::shared_ptr<const Model>> Model::LoadFile(const std::string& path,
                                                             const LoadOptions& options) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) return absl::NotFoundError(absl::StrCat("model file \"", path, "\" cannot be opened"));
  const std::streamoff size = f.tellg();
  if (size > options.max_model_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model file \"", path, "\" has ", size, " bytes; the limit is ", options.max_model_bytes));
  }
  std::string bytes(static_cast<size_t>(size), '\0');
  f.seekg(0);
  if (!f.read(bytes.data(), size)) {
    return absl::DataLossError(absl::StrCat("model file \"", path, "\" could not be read"));
  }
  auto model = LoadBytes(bytes, options);
  if (!model.ok()) {
    return absl::Status(model.status().code(),
                        absl::StrCat("model \"", path, "\": ", model.status().message()));
  }
  return model;
}

absl::StatusOr<std::shared_ptr<const Model>> Model::LoadBytes(std::string_view bytes,
                                                              const LoadOptions& options) {
  if (static_cast<int64_t>(bytes.size()) > options.max_model_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("model has ", bytes.size(), " bytes; the limit is ", options.max_model_bytes));
  }
  ASSIGN_OR_RETURN(ImportedOnnx imported, ImportOnnx(bytes));
  std::shared_ptr<Model> m(new Model());
  m->graph_ = std::move(imported.graph);
  m->opset_ = imported.opset;
  ASSIGN_OR_RETURN(m->int8_convs_, ImportQdq(&m->graph_, imported.uint8_initializers));
  m->options_ = options;
  m->onnx_bytes_ = std::make_shared<const std::string>(bytes);
  RETURN_IF_ERROR(m->Analyze());
  return std::shared_ptr<const Model>(std::move(m));
}

absl::Status Model::Analyze() {
  // Batch-1 specialization validates every shape at load and gives the per-request
  // sample count of each BN layer: the seed's point is to look at the whole shape.
  ASSIGN_OR_RETURN(SpecializedGraph g, Specialize(graph_, InputShapesFor(graph_, 1)));
  bn_layers_.clear();
  int index = 0;
  for (const Node& n : graph_.nodes) {
    if (n.op != "BatchNormalization") continue;
    BnLayerInfo info;
    info.name = n.name;
    info.input = n.inputs[0];
    info.input_shape = g.ShapeOf(n.inputs[0]);
    info.channels = info.input_shape.size() > 1 ? info.input_shape[1] : 0;
    info.values_per_channel = 1;
    for (size_t i = 0; i < info.input_shape.size(); ++i) {
      if (i != 1) info.values_per_channel *= info.input_shape[i];
    }
    info.reliability =
        ClassifyValuesPerChannel(info.values_per_channel, options_.reliable_values_per_channel);
    info.topo_index = index++;
    info.mean_initializer = n.inputs[3];
    info.var_initializer = n.inputs[4];
    bn_layers_.push_back(std::move(info));
  }
  return absl::OkStatus();
}

namespace {
const Node* FindBn(const Graph& g, const std::string& layer) {
  for (const Node& n : g.nodes) {
    if (n.op == "BatchNormalization" && n.name == layer) return &n;
  }
  return nullptr;
}
}  // namespace

absl::StatusOr<BnStatistics> Model::GetBnStatistics(const std::string& layer) const {
  const Node* n = FindBn(graph_, layer);
  if (n == nullptr) return absl::NotFoundError(absl::StrCat("BN layer \"", layer, "\" not found"));
  const ConstTensor& mean = graph_.initializers.at(n->inputs[3]);
  const ConstTensor& var = graph_.initializers.at(n->inputs[4]);
  BnStatistics s;
  for (int64_t i = 0; i < mean.size(); ++i) s.mean.push_back(mean.AsDouble(i));
  for (int64_t i = 0; i < var.size(); ++i) s.var.push_back(var.AsDouble(i));
  return s;
}

absl::StatusOr<std::shared_ptr<const Model>> Model::WithBnStatistics(
    const absl::flat_hash_map<std::string, BnStatistics>& stats) const {
  std::shared_ptr<Model> m(new Model(*this));
  for (const auto& [layer, s] : stats) {
    const Node* n = FindBn(m->graph_, layer);
    if (n == nullptr)
      return absl::NotFoundError(absl::StrCat("BN layer \"", layer, "\" not found"));
    ConstTensor& mean = m->graph_.initializers.at(n->inputs[3]);
    ConstTensor& var = m->graph_.initializers.at(n->inputs[4]);
    if (static_cast<int64_t>(s.mean.size()) != mean.size() ||
        static_cast<int64_t>(s.var.size()) != var.size()) {
      return absl::InvalidArgumentError(absl::StrCat("BN layer \"", layer, "\": got ",
                                                     s.mean.size(), " means and ", s.var.size(),
                                                     " variances for ", mean.size(), " channels"));
    }
    for (size_t c = 0; c < s.mean.size(); ++c) {
      if (!std::isfinite(s.mean[c]) || !std::isfinite(s.var[c]) || s.var[c] < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("BN layer \"", layer, "\" channel ", c,
                         ": mean and variance must be finite, variance >= 0"));
      }
    }
    mean.type = var.type = ElementType::kFloat32;
    mean.floats.assign(s.mean.begin(), s.mean.end());
    var.floats.assign(s.var.begin(), s.var.end());
    mean.ints.clear();
    var.ints.clear();
  }
  return std::shared_ptr<const Model>(std::move(m));
}

absl::StatusOr<std::string> Model::SerializeOnnx() const {
  if (onnx_bytes_ == nullptr)
    return absl::FailedPreconditionError("a model slice has no ONNX file");
  onnx::ModelProto proto;
  if (!proto.ParseFromString(*onnx_bytes_))
    return absl::InternalError("stored ONNX bytes do not parse");
  absl::flat_hash_map<std::string, const ConstTensor*> bn_params;
  for (const Node& n : graph_.nodes) {
    if (n.op != "BatchNormalization") continue;
    for (int i : {3, 4}) bn_params[n.inputs[i]] = &graph_.initializers.at(n.inputs[i]);
  }
  for (auto& init : *proto.mutable_graph()->mutable_initializer()) {
    auto it = bn_params.find(init.name());
    if (it == bn_params.end()) continue;
    const ConstTensor& c = *it->second;
    init.clear_float_data();
    init.clear_double_data();
    init.set_data_type(onnx::TensorProto::FLOAT);
    init.set_raw_data(std::string(reinterpret_cast<const char*>(c.floats.data()),
                                  c.floats.size() * sizeof(float)));
  }
  std::string out;
  if (!proto.SerializeToString(&out)) return absl::InternalError("ONNX serialization failed");
  return out;
}

absl::StatusOr<std::shared_ptr<const Model>> Model::Slice(
    const std::vector<ValueSpec>& inputs, const std::vector<std::string>& outputs) const {
  absl::flat_hash_set<std::string> produced;
  for (const Node& n : graph_.nodes) produced.insert(n.outputs.begin(), n.outputs.end());
  absl::flat_hash_set<std::string> given;
  for (const ValueSpec& in : inputs) {
    bool graph_input = false;
    for (const ValueSpec& g : graph_.inputs) graph_input |= g.name == in.name;
    if (!graph_input && !produced.contains(in.name)) {
      return absl::NotFoundError(
          absl::StrCat("slice input \"", in.name, "\" is not a runtime value of the model"));
    }
    given.insert(in.name);
  }
  if (outputs.empty()) return absl::InvalidArgumentError("a slice needs at least one output");
  std::string unproduced;
  const std::vector<bool> keep = NodesFeeding(
      graph_, outputs, [&](const std::string& v) { return given.contains(v); }, &unproduced);
  if (!unproduced.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("value \"", unproduced,
                     "\" is needed by the slice but is neither one of its inputs nor computable"));
  }

  std::shared_ptr<Model> m(new Model());
  m->options_ = options_;
  m->opset_ = opset_;
  m->int8_convs_ = int8_convs_;
  m->graph_.inputs = inputs;
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    if (!keep[i]) continue;
    const Node& n = graph_.nodes[i];
    for (const auto& in : n.inputs) {
      auto c = graph_.initializers.find(in);
      if (c != graph_.initializers.end()) m->graph_.initializers.insert(*c);
    }
    m->graph_.nodes.push_back(n);
  }
  for (const auto& o : outputs)
    m->graph_.outputs.push_back(ValueSpec{o, ElementType::kFloat32, {}});
  ASSIGN_OR_RETURN(SpecializedGraph g, Specialize(m->graph_, InputShapesFor(m->graph_, 1)));
  for (size_t i = 0; i < g.outputs.size(); ++i) {
    m->graph_.outputs[i].shape = g.outputs[i].shape;
    if (!g.outputs[i].shape.empty()) m->graph_.outputs[i].shape[0] = -1;
  }
  RETURN_IF_ERROR(m->Analyze());
  return std::shared_ptr<const Model>(std::move(m));
}

}  // namespace normserve
