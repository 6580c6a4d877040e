// Builds small ONNX models in tests (through libonnx's protobuf classes), so kernel tests
// control every weight and can compare against a float64 reference computed beside them.
#ifndef NORMSERVE_TESTS_KERNELS_ONNX_BUILDER_H_
#define NORMSERVE_TESTS_KERNELS_ONNX_BUILDER_H_

#include <random>
#include <string>
#include <vector>

#include "onnx/onnx_pb.h"

namespace normserve::testing {

class OnnxBuilder {
 public:
  explicit OnnxBuilder(int opset = 13) {
    model_.set_ir_version(8);
    auto* op = model_.add_opset_import();
    op->set_domain("");
    op->set_version(opset);
    model_.set_producer_name("normserve-test");
    model_.mutable_graph()->set_name("test");
  }

  // Input with a dynamic batch dim (-1 written as a dim_param).
  void Input(const std::string& name, std::vector<int64_t> shape) {
    AddValue(model_.mutable_graph()->add_input(), name, shape);
  }
  void Output(const std::string& name, std::vector<int64_t> shape) {
    AddValue(model_.mutable_graph()->add_output(), name, shape);
  }

  void Initializer(const std::string& name, std::vector<int64_t> dims,
                   const std::vector<float>& values) {
    auto* t = model_.mutable_graph()->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : dims) t->add_dims(d);
    for (float v : values) t->add_float_data(v);
  }

  onnx::NodeProto* Node(const std::string& op, const std::string& name,
                        std::vector<std::string> inputs, std::vector<std::string> outputs) {
    auto* n = model_.mutable_graph()->add_node();
    n->set_op_type(op);
    n->set_name(name);
    for (auto& i : inputs) n->add_input(i);
    for (auto& o : outputs) n->add_output(o);
    return n;
  }
  static void Ints(onnx::NodeProto* n, const std::string& key, std::vector<int64_t> v) {
    auto* a = n->add_attribute();
    a->set_name(key);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  }
  static void Int(onnx::NodeProto* n, const std::string& key, int64_t v) {
    auto* a = n->add_attribute();
    a->set_name(key);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void Float(onnx::NodeProto* n, const std::string& key, float v) {
    auto* a = n->add_attribute();
    a->set_name(key);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
  }

  std::string Bytes() const { return model_.SerializeAsString(); }
  onnx::ModelProto& proto() { return model_; }

 private:
  static void AddValue(onnx::ValueInfoProto* v, const std::string& name,
                       const std::vector<int64_t>& shape) {
    v->set_name(name);
    auto* tt = v->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(onnx::TensorProto::FLOAT);
    for (int64_t d : shape) {
      auto* dim = tt->mutable_shape()->add_dim();
      if (d < 0)
        dim->set_dim_param("batch");
      else
        dim->set_dim_value(d);
    }
  }
  onnx::ModelProto model_;
};

inline std::vector<float> RandomVector(size_t n, std::mt19937* rng, float lo = -1.f,
                                       float hi = 1.f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(*rng);
  return v;
}

}  // namespace normserve::testing

#endif  // NORMSERVE_TESTS_KERNELS_ONNX_BUILDER_H_
