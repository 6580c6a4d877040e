#include "kernels/onnx_import.h"

#include <cstring>
#include <exception>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "kernels/constant_folding.h"
#include "kernels/ops/op_registry.h"
#include "kernels/specialize.h"
#include "kernels/status_macros.h"
#include "onnx/checker.h"
#include "onnx/onnx_pb.h"

namespace normserve {
namespace {

// Elements a model may declare for one input or output (fixed dims only): the bound
// shape inference applies to every value.
constexpr int64_t kMaxDeclaredElements = kMaxTensorElements;

template <typename T>
void CopyRaw(const std::string& raw, std::vector<T>* out) {
  out->resize(raw.size() / sizeof(T));
  if (!out->empty()) std::memcpy(out->data(), raw.data(), out->size() * sizeof(T));
}

absl::StatusOr<ConstTensor> ConvertTensor(const onnx::TensorProto& t, const std::string& what) {
  ConstTensor c;
  c.shape.assign(t.dims().begin(), t.dims().end());
  int64_t n = 1;
  for (int64_t d : c.shape) {
    if (d < 0 || (d > 0 && n > (int64_t{1} << 40) / d)) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": invalid dims"));
    }
    n *= d;
  }
  if (t.data_location() == onnx::TensorProto::EXTERNAL) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": external tensor data is not supported; embed the weights"));
  }
  const bool raw = t.has_raw_data();
  switch (t.data_type()) {
    case onnx::TensorProto::FLOAT:
      c.type = ElementType::kFloat32;
      if (raw)
        CopyRaw(t.raw_data(), &c.floats);
      else
        c.floats.assign(t.float_data().begin(), t.float_data().end());
      break;
    case onnx::TensorProto::DOUBLE: {
      c.type = ElementType::kFloat32;
      std::vector<double> d;
      if (raw)
        CopyRaw(t.raw_data(), &d);
      else
        d.assign(t.double_data().begin(), t.double_data().end());
      c.floats.assign(d.begin(), d.end());
      break;
    }
    case onnx::TensorProto::INT64:
      c.type = ElementType::kInt64;
      if (raw)
        CopyRaw(t.raw_data(), &c.ints);
      else
        c.ints.assign(t.int64_data().begin(), t.int64_data().end());
      break;
    case onnx::TensorProto::INT32:
    case onnx::TensorProto::INT8:
    case onnx::TensorProto::UINT8:
    case onnx::TensorProto::BOOL: {
      c.type = ElementType::kInt64;
      if (raw && t.data_type() == onnx::TensorProto::INT32) {
        std::vector<int32_t> v;
        CopyRaw(t.raw_data(), &v);
        c.ints.assign(v.begin(), v.end());
      } else if (raw) {
        for (unsigned char b : t.raw_data())
          c.ints.push_back(t.data_type() == onnx::TensorProto::INT8 ? static_cast<int8_t>(b) : b);
      } else {
        c.ints.assign(t.int32_data().begin(), t.int32_data().end());
      }
      break;
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": unsupported tensor data type ", t.data_type(),
                       " (float, double and integer tensors are supported)"));
  }
  if (c.size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": has ", c.size(), " values for ", n, " elements (truncated?)"));
  }
  return c;
}

absl::StatusOr<Attribute> ConvertAttribute(const onnx::AttributeProto& a, const std::string& what) {
  Attribute r;
  switch (a.type()) {
    case onnx::AttributeProto::INT:
      r.kind = Attribute::Kind::kInt;
      r.i = a.i();
      break;
    case onnx::AttributeProto::FLOAT:
      r.kind = Attribute::Kind::kFloat;
      r.f = a.f();
      break;
    case onnx::AttributeProto::INTS:
      r.kind = Attribute::Kind::kInts;
      r.ints.assign(a.ints().begin(), a.ints().end());
      break;
    case onnx::AttributeProto::FLOATS:
      r.kind = Attribute::Kind::kFloats;
      r.floats.assign(a.floats().begin(), a.floats().end());
      break;
    case onnx::AttributeProto::STRING:
      r.kind = Attribute::Kind::kString;
      r.s = a.s();
      break;
    case onnx::AttributeProto::TENSOR: {
      r.kind = Attribute::Kind::kTensor;
      ASSIGN_OR_RETURN(r.t, ConvertTensor(a.t(), what));
      break;
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": attribute \"", a.name(), "\" has an unsupported type"));
  }
  return r;
}

absl::StatusOr<ValueSpec> ConvertValueInfo(const onnx::ValueInfoProto& v) {
  ValueSpec s;
  s.name = v.name();
  if (!v.type().has_tensor_type()) {
    return absl::InvalidArgumentError(
        absl::StrCat("graph value \"", v.name(), "\" is not a tensor"));
  }
  const auto& tt = v.type().tensor_type();
  if (tt.elem_type() == onnx::TensorProto::FLOAT) {
    s.type = ElementType::kFloat32;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("graph value \"", v.name(), "\": element type ",
                                                   tt.elem_type(),
                                                   " is not supported (FP32 only)"));
  }
  int64_t fixed_elements = 1;
  for (int i = 0; i < tt.shape().dim_size(); ++i) {
    const auto& d = tt.shape().dim(i);
    if (!d.has_dim_value()) {
      s.shape.push_back(-1);
      continue;
    }
    // Checked here, before any arithmetic on them: a declared [1, 2^62, 2^62, 4] once
    // reached oneDNN and killed the server with SIGFPE at every start.
    const int64_t dim = d.dim_value();
    if (dim < 1 || dim > kMaxDeclaredElements || fixed_elements > kMaxDeclaredElements / dim) {
      return absl::InvalidArgumentError(absl::StrCat(
          "graph value \"", v.name(), "\": dim ", i, " is ", dim,
          "; dims must be >= 1 and hold at most ", kMaxDeclaredElements, " elements together"));
    }
    fixed_elements *= dim;
    s.shape.push_back(dim);
  }
  return s;
}

// External data would make the checker and the loader read paths named by the file
// (relative to the working directory); refuse before anything touches the filesystem.
absl::Status RefuseExternalData(const onnx::GraphProto& g) {
  auto external = [](const onnx::TensorProto& t) {
    return t.data_location() == onnx::TensorProto::EXTERNAL;
  };
  for (const auto& init : g.initializer()) {
    if (external(init)) {
      return absl::InvalidArgumentError(
          absl::StrCat("initializer \"", init.name(),
                       "\": external tensor data is not supported; embed the weights"));
    }
  }
  for (const auto& n : g.node()) {
    for (const auto& a : n.attribute()) {
      if (a.has_t() && external(a.t())) {
        return absl::InvalidArgumentError(
            absl::StrCat("node \"", n.name(), "\" attribute \"", a.name(),
                         "\": external tensor data is not supported"));
      }
      for (const auto& t : a.tensors()) {
        if (external(t)) {
          return absl::InvalidArgumentError(
              absl::StrCat("node \"", n.name(), "\" attribute \"", a.name(),
                           "\": external tensor data is not supported"));
        }
      }
      if (a.has_g() || a.graphs_size() > 0) {
        return absl::InvalidArgumentError(absl::StrCat("node \"", n.name(), "\" (", n.op_type(),
                                                       "): subgraph attributes are not supported"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

// One source of truth: what the planner lowers (kernels/ops/op_registry.cc), what constant
// folding evaluates, and the two the import and the specialization consume themselves.
bool IsSupportedOp(const std::string& op) {
  return FindOp(op) != nullptr || CanFoldConstant(op) || op == "Constant" || op == "Shape" ||
         op == "QuantizeLinear" || op == "DequantizeLinear";  // consumed by ImportQdq
}

absl::StatusOr<ImportedOnnx> ImportOnnx(std::string_view bytes) {
  onnx::ModelProto proto;
  if (bytes.empty() || bytes.size() > static_cast<size_t>(INT32_MAX) ||
      !proto.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::InvalidArgumentError(absl::StrCat("model is not a valid ONNX protobuf (",
                                                   bytes.size(), " bytes; truncated or corrupt?)"));
  }
  RETURN_IF_ERROR(RefuseExternalData(proto.graph()));
  try {
    onnx::checker::check_model(proto);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("ONNX checker rejected the model: ", e.what()));
  }
  ImportedOnnx out;
  for (const auto& op : proto.opset_import()) {
    if (op.domain().empty() || op.domain() == "ai.onnx") out.opset = op.version();
  }
  if (out.opset < 7) {
    return absl::InvalidArgumentError(
        absl::StrCat("model opset ", out.opset, " is not supported (7 to 17)"));
  }
  const onnx::GraphProto& g = proto.graph();
  Graph& graph = out.graph;
  absl::flat_hash_set<std::string> defined;
  for (const auto& init : g.initializer()) {
    ASSIGN_OR_RETURN(graph.initializers[init.name()],
                     ConvertTensor(init, absl::StrCat("initializer \"", init.name(), "\"")));
    defined.insert(init.name());
    if (init.data_type() == onnx::TensorProto::UINT8) out.uint8_initializers.insert(init.name());
  }
  for (const auto& in : g.input()) {
    if (graph.initializers.contains(in.name())) continue;
    ASSIGN_OR_RETURN(ValueSpec spec, ConvertValueInfo(in));
    graph.inputs.push_back(std::move(spec));
    defined.insert(in.name());
  }
  if (graph.inputs.empty()) return absl::InvalidArgumentError("model has no runtime input");
  absl::flat_hash_set<std::string> names;
  for (int i = 0; i < g.node_size(); ++i) {
    const auto& n = g.node(i);
    std::string name = n.name().empty() ? absl::StrCat(n.op_type(), "_", i) : n.name();
    while (names.contains(name)) name = absl::StrCat(name, "_", i);
    names.insert(name);
    const std::string what = absl::StrCat("node \"", name, "\" (", n.op_type(), ")");
    if (!n.domain().empty() && n.domain() != "ai.onnx") {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": operator domain \"", n.domain(), "\" is not supported"));
    }
    if (!IsSupportedOp(n.op_type())) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": unsupported operator"));
    }
    Node node;
    node.name = name;
    node.op = n.op_type();
    for (const auto& in : n.input()) {
      if (!in.empty() && !defined.contains(in)) {
        return absl::InvalidArgumentError(absl::StrCat(
            what, ": input \"", in,
            "\" is not produced by an earlier node (graph not topologically sorted or truncated)"));
      }
      node.inputs.push_back(in);
    }
    node.outputs.assign(n.output().begin(), n.output().end());
    for (const auto& a : n.attribute()) {
      ASSIGN_OR_RETURN(node.attrs[a.name()], ConvertAttribute(a, what));
    }
    for (const auto& o : node.outputs) defined.insert(o);
    if (node.op == "Constant") {
      auto it = node.attrs.find("value");
      if (it == node.attrs.end() || it->second.kind != Attribute::Kind::kTensor) {
        // value_float / value_ints forms.
        ConstTensor c;
        if (node.HasAttr("value_float")) {
          c.floats = {node.FloatAttr("value_float", 0)};
        } else if (node.HasAttr("value_floats")) {
          c.floats = node.attrs["value_floats"].floats;
          c.shape = {static_cast<int64_t>(c.floats.size())};
        } else if (node.HasAttr("value_int")) {
          c.type = ElementType::kInt64;
          c.ints = {node.IntAttr("value_int", 0)};
        } else if (node.HasAttr("value_ints")) {
          c.type = ElementType::kInt64;
          c.ints = node.IntsAttr("value_ints");
          c.shape = {static_cast<int64_t>(c.ints.size())};
        } else {
          return absl::InvalidArgumentError(absl::StrCat(what, ": unsupported Constant form"));
        }
        graph.initializers[node.outputs[0]] = std::move(c);
      } else {
        graph.initializers[node.outputs[0]] = std::move(it->second.t);
      }
      continue;
    }
    graph.nodes.push_back(std::move(node));
  }
  for (const auto& o : g.output()) {
    if (!defined.contains(o.name())) {
      return absl::InvalidArgumentError(
          absl::StrCat("graph output \"", o.name(), "\" is not produced by any node"));
    }
    ASSIGN_OR_RETURN(ValueSpec spec, ConvertValueInfo(o));
    graph.outputs.push_back(std::move(spec));
  }
  return out;
}

}  // namespace normserve
