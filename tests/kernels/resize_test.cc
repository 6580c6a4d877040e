// Resize/Upsample beyond what the PyTorch parity models cover: the coordinate and rounding
// modes PyTorch never emits, checked against a float64 implementation of the ONNX spec
// formulas; which nodes run on oneDNN's resampling; and the refusals of unsupported
// variants, which must name the node, the attribute and the value.
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/engine.h"
#include "kernels/model.h"
#include "tests/kernels/onnx_builder.h"

namespace normserve {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

struct Case {
  std::string op = "Resize";
  int opset = 13;
  std::map<std::string, std::string> attrs;
  std::vector<float> scales;  // empty: sizes form
  std::vector<int64_t> sizes;
  std::vector<int64_t> in = {1, 2, 5, 6};
};

std::string Build(const Case& c, const std::vector<int64_t>& out) {
  testing::OnnxBuilder b(c.opset);
  b.Input("x", c.in);
  b.Output("y", out);
  std::vector<std::string> inputs = {"x"};
  if (c.op == "Upsample" && c.opset < 9) {
    // Upsample-7: scales is an attribute.
  } else if (c.op == "Upsample") {
    b.Initializer("scales", {4}, c.scales);
    inputs.push_back("scales");
  } else if (!c.scales.empty()) {
    b.Initializer("scales", {4}, c.scales);
    inputs.insert(inputs.end(), {"", "scales"});
  } else {
    auto* t = b.proto().mutable_graph()->add_initializer();
    t->set_name("sizes");
    t->set_data_type(onnx::TensorProto::INT64);
    t->add_dims(4);
    for (int64_t v : c.sizes) t->add_int64_data(v);
    inputs.insert(inputs.end(), {"", "", "sizes"});
  }
  auto* n = b.Node(c.op, "rs", inputs, {"y"});
  if (c.op == "Upsample" && c.opset < 9) {
    auto* a = n->add_attribute();
    a->set_name("scales");
    a->set_type(onnx::AttributeProto::FLOATS);
    for (float v : c.scales) a->add_floats(v);
  }
  for (const auto& [key, value] : c.attrs) {
    auto* a = n->add_attribute();
    a->set_name(key);
    a->set_type(onnx::AttributeProto::STRING);
    a->set_s(value);
  }
  return b.Bytes();
}

// ONNX Resize (opset 13 text) for one axis, in float64: source coordinate, then linear
// weights clamped to the border or the nearest index by nearest_mode.
struct Tap {
  int64_t lo, hi;
  double w;
};
std::vector<Tap> ReferenceAxis(int64_t in, int64_t out, double scale, const std::string& coord,
                               bool linear, const std::string& nearest_mode) {
  std::vector<Tap> taps;
  for (int64_t o = 0; o < out; ++o) {
    double x;
    if (coord == "half_pixel")
      x = (o + 0.5) / scale - 0.5;
    else if (coord == "pytorch_half_pixel")
      x = out > 1 ? (o + 0.5) / scale - 0.5 : 0;
    else if (coord == "align_corners")
      x = out == 1 ? 0 : o * double(in - 1) / double(out - 1);
    else
      x = o / scale;
    if (linear) {
      x = std::clamp(x, 0.0, double(in - 1));
      const int64_t lo = static_cast<int64_t>(std::floor(x));
      taps.push_back({lo, std::min(lo + 1, in - 1), x - lo});
      continue;
    }
    double r;
    if (nearest_mode == "floor")
      r = std::floor(x);
    else if (nearest_mode == "ceil")
      r = std::ceil(x);
    else if (x - std::floor(x) == 0.5)
      r = nearest_mode == "round_prefer_floor" ? std::floor(x) : std::ceil(x);
    else
      r = std::round(x);
    const int64_t i = std::clamp<int64_t>(static_cast<int64_t>(r), 0, in - 1);
    taps.push_back({i, i, 0});
  }
  return taps;
}

struct Result {
  std::string plan;
  double max_err = 0;
};

// Runs the case on random data and compares with the float64 reference.
Result RunAgainstReference(const Case& c) {
  const bool legacy = c.op == "Upsample";
  const auto get = [&](const char* k, const char* d) {
    auto it = c.attrs.find(k);
    return it == c.attrs.end() ? std::string(d) : it->second;
  };
  const bool linear = get("mode", "nearest") != "nearest";
  const std::string coord =
      legacy ? "asymmetric" : get("coordinate_transformation_mode", "half_pixel");
  const std::string nearest = legacy ? "floor" : get("nearest_mode", "round_prefer_floor");
  std::vector<int64_t> out = c.in;
  double scale[2];
  for (int i = 0; i < 2; ++i) {
    if (c.scales.empty()) {
      out[2 + i] = c.sizes[2 + i];
      scale[i] = double(out[2 + i]) / double(c.in[2 + i]);
    } else {
      scale[i] = c.scales[2 + i];
      out[2 + i] = static_cast<int64_t>(std::floor(c.in[2 + i] * scale[i]));
    }
  }
  Result r;
  auto model = Model::LoadBytes(Build(c, out));
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return r;
  CompileOptions options;
  options.intra_op_threads = 2;
  auto compiled = CompiledModel::Compile(*model, options);
  EXPECT_TRUE(compiled.ok()) << compiled.status();
  if (!compiled.ok()) return r;
  r.plan = (*compiled)->DescribePlan();
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> x(c.in[0] * c.in[1] * c.in[2] * c.in[3]);
  for (float& v : x) v = normal(rng);
  std::vector<Tensor> got;
  auto status = (*compiled)->NewContext()->Run({TensorView{x.data(), c.in}}, &got);
  EXPECT_TRUE(status.ok()) << status;
  if (!status.ok()) return r;
  EXPECT_EQ(got[0].shape, out);
  const auto th = ReferenceAxis(c.in[2], out[2], scale[0], coord, linear, nearest);
  const auto tw = ReferenceAxis(c.in[3], out[3], scale[1], coord, linear, nearest);
  const int64_t ih = c.in[2], iw = c.in[3], oh = out[2], ow = out[3];
  for (int64_t p = 0; p < c.in[0] * c.in[1]; ++p) {
    const float* src = x.data() + p * ih * iw;
    for (int64_t y = 0; y < oh; ++y) {
      for (int64_t z = 0; z < ow; ++z) {
        const auto at = [&](int64_t h, int64_t w) { return double(src[h * iw + w]); };
        const Tap& a = th[y];
        const Tap& b = tw[z];
        const double want = (1 - a.w) * ((1 - b.w) * at(a.lo, b.lo) + b.w * at(a.lo, b.hi)) +
                            a.w * ((1 - b.w) * at(a.hi, b.lo) + b.w * at(a.hi, b.hi));
        r.max_err = std::max(r.max_err, std::fabs(got[0].data[(p * oh + y) * ow + z] - want));
      }
    }
  }
  return r;
}

TEST(Resize, ModesPyTorchDoesNotEmitMatchTheOnnxFormulas) {
  Case upsample_linear;  // ONNX Upsample: asymmetric coordinates
  upsample_linear.op = "Upsample";
  upsample_linear.opset = 9;
  upsample_linear.attrs = {{"mode", "linear"}};
  upsample_linear.scales = {1, 1, 2, 1.5f};
  Case upsample7 = upsample_linear;  // scales as an attribute, nearest rounding down
  upsample7.opset = 7;
  upsample7.attrs = {{"mode", "nearest"}};
  upsample7.scales = {1, 1, 3, 2.5f};
  Case nearest_ceil;  // half-pixel centres, ties up, non-integer ratio in both directions
  nearest_ceil.attrs = {{"mode", "nearest"}, {"nearest_mode", "round_prefer_ceil"}};
  nearest_ceil.sizes = {1, 2, 7, 4};
  Case nearest_ceil_mode;
  nearest_ceil_mode.attrs = {{"mode", "nearest"},
                             {"coordinate_transformation_mode", "asymmetric"},
                             {"nearest_mode", "ceil"}};
  nearest_ceil_mode.sizes = {1, 2, 9, 4};
  Case single_row;  // pytorch_half_pixel maps a length-1 output to coordinate 0
  single_row.attrs = {{"mode", "linear"}, {"coordinate_transformation_mode", "pytorch_half_pixel"}};
  single_row.scales = {1, 1, 0.2f, 1};
  Case half_pixel_down;  // half_pixel on a length-1 output: the centre of the input
  half_pixel_down.attrs = {{"mode", "linear"}};
  half_pixel_down.scales = {1, 1, 0.2f, 0.5f};
  for (const Case& c :
       {upsample_linear, nearest_ceil, nearest_ceil_mode, single_row, half_pixel_down}) {
    const Result r = RunAgainstReference(c);
    EXPECT_LT(r.max_err, 1e-5) << r.plan;
  }
}

TEST(Resize, OneDnnRunsWhereItsConventionIsTheNodes) {
  Case linear;  // sizes form: ratio in/out exactly as oneDNN takes it
  linear.attrs = {{"mode", "linear"}};
  linear.sizes = {1, 2, 10, 12};
  Case nearest;
  nearest.attrs = {{"mode", "nearest"},
                   {"coordinate_transformation_mode", "asymmetric"},
                   {"nearest_mode", "floor"}};
  nearest.scales = {1, 1, 2, 3};
  for (const Case& c : {linear, nearest}) {
    const Result r = RunAgainstReference(c);
    EXPECT_LT(r.max_err, 1e-5) << r.plan;
    EXPECT_THAT(r.plan, AllOf(HasSubstr("resize rs"), Not(HasSubstr("custom")))) << r.plan;
  }
  Case corners;  // align_corners has no oneDNN counterpart
  corners.attrs = {{"mode", "linear"}, {"coordinate_transformation_mode", "align_corners"}};
  corners.sizes = {1, 2, 10, 12};
  const Result r = RunAgainstReference(corners);
  EXPECT_LT(r.max_err, 1e-5) << r.plan;
  EXPECT_THAT(r.plan, HasSubstr("custom")) << r.plan;
}

absl::Status CompileStatus(const std::string& bytes) {
  auto model = Model::LoadBytes(bytes);
  if (!model.ok()) return model.status();
  return CompiledModel::Compile(*model, CompileOptions()).status();
}

TEST(Resize, UnsupportedVariantsNameNodeAttributeAndValue) {
  Case crop;
  crop.attrs = {{"mode", "linear"}, {"coordinate_transformation_mode", "tf_crop_and_resize"}};
  crop.sizes = {1, 2, 10, 12};
  EXPECT_THAT(std::string(CompileStatus(Build(crop, {1, 2, 10, 12})).message()),
              AllOf(HasSubstr("node \"rs\" (Resize)"), HasSubstr("coordinate_transformation_mode"),
                    HasSubstr("\"tf_crop_and_resize\""), HasSubstr("half_pixel")));
  Case cubic;
  cubic.attrs = {{"mode", "cubic"}};
  cubic.sizes = {1, 2, 10, 12};
  EXPECT_THAT(std::string(CompileStatus(Build(cubic, {1, 2, 10, 12})).message()),
              AllOf(HasSubstr("node \"rs\" (Resize)"), HasSubstr("mode \"cubic\""),
                    HasSubstr("nearest, linear")));
  Case channels;
  channels.scales = {1, 2, 2, 2};
  EXPECT_THAT(std::string(CompileStatus(Build(channels, {1, 4, 10, 12})).message()),
              AllOf(HasSubstr("node \"rs\""), HasSubstr("only H and W")));
  Case huge;
  huge.scales = {1, 1, 1e12f, 1};
  EXPECT_THAT(std::string(CompileStatus(Build(huge, {1, 2, 5, 6})).message()),
              AllOf(HasSubstr("node \"rs\""), HasSubstr("scales[2]"), HasSubstr("4294967296")));
}

TEST(Resize, ScalesComputedAtRunTimeAreRefused) {
  testing::OnnxBuilder b(13);
  b.Input("x", {1, 2, 5, 6});
  b.Input("s", {4});
  b.Output("y", {1, 2, 10, 12});
  b.Node("Resize", "rs", {"x", "", "s"}, {"y"});
  EXPECT_THAT(std::string(CompileStatus(b.Bytes()).message()),
              AllOf(HasSubstr("node \"rs\""), HasSubstr("scales must be a constant")));
}

}  // namespace
}  // namespace normserve
