// Conv(3->24, 3x3) -> BN -> Clip(0, 6) -> Conv(24->16, 1x1) -> BN -> Relu with seeded
// weights whose first BN output crosses both clip bounds, 24 channels filling no channel
// block, and its float64 reference: checks a BN that absorbed its ReLU6, observed
// (observed_batch_norm.h) or not folded.
#ifndef NORMSERVE_TESTS_KERNELS_CONV_BN_CLIP_CHAIN_H_
#define NORMSERVE_TESTS_KERNELS_CONV_BN_CLIP_CHAIN_H_

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "tests/kernels/onnx_builder.h"

namespace normserve::testing {

struct ConvBnClipChain {
  static constexpr int kIn = 3, kMid = 24, kOut = 16, kH = 12, kW = 12;
  std::vector<float> w1, g1, b1, m1, v1, w2, g2, b2, m2, v2;
  std::string onnx;

  ConvBnClipChain() {
    std::mt19937 rng(31);
    w1 = RandomVector(kMid * kIn * 9, &rng);
    g1 = RandomVector(kMid, &rng, 1.f, 3.f);
    b1 = RandomVector(kMid, &rng, 0.f, 3.f);
    m1 = RandomVector(kMid, &rng, -1.f, 1.f);
    v1 = RandomVector(kMid, &rng, 0.5f, 2.f);
    w2 = RandomVector(kOut * kMid, &rng, -0.5f, 0.5f);
    g2 = RandomVector(kOut, &rng, 0.5f, 1.5f);
    b2 = RandomVector(kOut, &rng);
    m2 = RandomVector(kOut, &rng, -1.f, 1.f);
    v2 = RandomVector(kOut, &rng, 0.5f, 2.f);
    OnnxBuilder m;
    m.Input("x", {-1, kIn, kH, kW});
    m.Output("y", {-1, kOut, kH, kW});
    m.Initializer("w1", {kMid, kIn, 3, 3}, w1);
    m.Initializer("w2", {kOut, kMid, 1, 1}, w2);
    for (const auto& [name, v] : std::vector<std::pair<std::string, std::vector<float>>>{
             {"g1", g1}, {"b1", b1}, {"m1", m1}, {"v1", v1}})
      m.Initializer(name, {kMid}, v);
    for (const auto& [name, v] : std::vector<std::pair<std::string, std::vector<float>>>{
             {"g2", g2}, {"b2", b2}, {"m2", m2}, {"v2", v2}})
      m.Initializer(name, {kOut}, v);
    m.Initializer("lo", {}, {0.f});
    m.Initializer("hi", {}, {6.f});
    auto* conv1 = m.Node("Conv", "conv1", {"x", "w1"}, {"c1"});
    OnnxBuilder::Ints(conv1, "kernel_shape", {3, 3});
    OnnxBuilder::Ints(conv1, "pads", {1, 1, 1, 1});
    m.Node("BatchNormalization", "bn1", {"c1", "g1", "b1", "m1", "v1"}, {"n1"});
    m.Node("Clip", "relu6", {"n1", "lo", "hi"}, {"a1"});
    auto* conv2 = m.Node("Conv", "conv2", {"a1", "w2"}, {"c2"});
    OnnxBuilder::Ints(conv2, "kernel_shape", {1, 1});
    m.Node("BatchNormalization", "bn2", {"c2", "g2", "b2", "m2", "v2"}, {"n2"});
    m.Node("Relu", "relu", {"n2"}, {"y"});
    onnx = m.Bytes();
  }

  // BN input of each layer and the output, in float64, plain NCHW.
  struct Values {
    std::vector<double> c1, c2, y;
  };
  Values Ref(const std::vector<float>& x, int n) const {
    const int plane = kH * kW;
    Values r;
    r.c1.assign(static_cast<size_t>(n) * kMid * plane, 0.0);
    for (int s = 0; s < n; ++s)
      for (int o = 0; o < kMid; ++o)
        for (int h = 0; h < kH; ++h)
          for (int w = 0; w < kW; ++w) {
            double acc = 0;
            for (int i = 0; i < kIn; ++i)
              for (int kh = 0; kh < 3; ++kh)
                for (int kw = 0; kw < 3; ++kw) {
                  const int ih = h - 1 + kh, iw = w - 1 + kw;
                  if (ih < 0 || iw < 0 || ih >= kH || iw >= kW) continue;
                  acc += static_cast<double>(w1[((o * kIn + i) * 3 + kh) * 3 + kw]) *
                         x[((static_cast<size_t>(s) * kIn + i) * kH + ih) * kW + iw];
                }
            r.c1[(static_cast<size_t>(s) * kMid + o) * plane + h * kW + w] = acc;
          }
    auto bn = [](double v, float g, float b, float m, float var) {
      return (v - m) / std::sqrt(static_cast<double>(var) + 1e-5) * g + b;
    };
    std::vector<double> a1(r.c1.size());
    for (size_t i = 0; i < a1.size(); ++i) {
      const int c = static_cast<int>(i / plane) % kMid;
      a1[i] = std::min(6.0, std::max(0.0, bn(r.c1[i], g1[c], b1[c], m1[c], v1[c])));
    }
    r.c2.assign(static_cast<size_t>(n) * kOut * plane, 0.0);
    r.y.resize(r.c2.size());
    for (int s = 0; s < n; ++s)
      for (int o = 0; o < kOut; ++o)
        for (int p = 0; p < plane; ++p) {
          double acc = 0;
          for (int i = 0; i < kMid; ++i)
            acc += static_cast<double>(w2[o * kMid + i]) *
                   a1[(static_cast<size_t>(s) * kMid + i) * plane + p];
          const size_t at = (static_cast<size_t>(s) * kOut + o) * plane + p;
          r.c2[at] = acc;
          r.y[at] = std::max(0.0, bn(acc, g2[o], b2[o], m2[o], v2[o]));
        }
    return r;
  }
};

}  // namespace normserve::testing

#endif  // NORMSERVE_TESTS_KERNELS_CONV_BN_CLIP_CHAIN_H_
