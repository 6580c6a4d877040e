// A Conv(3->8, 3x3, stride 2, pad 1, bias) -> BatchNormalization -> Relu model with
// seeded random weights and non-trivial frozen statistics, and its float64 reference.
#ifndef NORMSERVE_TESTS_KERNELS_CONV_BN_FIXTURE_H_
#define NORMSERVE_TESTS_KERNELS_CONV_BN_FIXTURE_H_

#include <cmath>
#include <random>
#include <vector>

#include "tests/kernels/onnx_builder.h"

namespace normserve::testing {

struct ConvBnFixture {
  static constexpr int kIn = 3, kOut = 8, kH = 9, kW = 9, kK = 3, kOH = 5, kOW = 5;
  std::vector<float> w, b, gamma, beta, mean, var;
  float eps = 1e-5f;
  std::string onnx;

  // `batch_dim`: the input's and output's first dim (-1: dynamic). `dynamic_spatial`: H and
  // W dynamic too (the reference then takes them as arguments).
  explicit ConvBnFixture(unsigned seed = 7, int64_t batch_dim = -1, bool dynamic_spatial = false) {
    std::mt19937 rng(seed);
    w = RandomVector(kOut * kIn * kK * kK, &rng);
    b = RandomVector(kOut, &rng);
    gamma = RandomVector(kOut, &rng, 0.5f, 1.5f);
    beta = RandomVector(kOut, &rng);
    mean = RandomVector(kOut, &rng, -0.5f, 0.5f);
    var = RandomVector(kOut, &rng, 0.5f, 2.f);
    OnnxBuilder m;
    const int64_t h = dynamic_spatial ? -1 : kH, w_ = dynamic_spatial ? -1 : kW;
    const int64_t oh = dynamic_spatial ? -1 : kOH, ow = dynamic_spatial ? -1 : kOW;
    m.Input("x", {batch_dim, kIn, h, w_});
    m.Output("y", {batch_dim, kOut, oh, ow});
    m.Initializer("w", {kOut, kIn, kK, kK}, w);
    m.Initializer("b", {kOut}, b);
    m.Initializer("gamma", {kOut}, gamma);
    m.Initializer("beta", {kOut}, beta);
    m.Initializer("mean", {kOut}, mean);
    m.Initializer("var", {kOut}, var);
    auto* conv = m.Node("Conv", "conv", {"x", "w", "b"}, {"c"});
    OnnxBuilder::Ints(conv, "kernel_shape", {kK, kK});
    OnnxBuilder::Ints(conv, "strides", {2, 2});
    OnnxBuilder::Ints(conv, "pads", {1, 1, 1, 1});
    auto* bn = m.Node("BatchNormalization", "bn", {"c", "gamma", "beta", "mean", "var"}, {"n"});
    OnnxBuilder::Float(bn, "epsilon", eps);
    m.Node("Relu", "relu", {"n"}, {"y"});
    onnx = m.Bytes();
  }

  // Conv output (the BN input) in float64, [N, kOut, OH, OW] for an [N, kIn, H, W] input.
  std::vector<double> ConvRef(const std::vector<float>& x, int n, int H = kH, int W = kW) const {
    const int OH = (H + 2 - kK) / 2 + 1, OW = (W + 2 - kK) / 2 + 1;
    std::vector<double> y(static_cast<size_t>(n) * kOut * OH * OW);
    for (int s = 0; s < n; ++s)
      for (int o = 0; o < kOut; ++o)
        for (int oh = 0; oh < OH; ++oh)
          for (int ow = 0; ow < OW; ++ow) {
            double acc = b[o];
            for (int i = 0; i < kIn; ++i)
              for (int kh = 0; kh < kK; ++kh)
                for (int kw = 0; kw < kK; ++kw) {
                  const int ih = oh * 2 - 1 + kh, iw = ow * 2 - 1 + kw;
                  if (ih < 0 || iw < 0 || ih >= H || iw >= W) continue;
                  acc += static_cast<double>(w[((o * kIn + i) * kK + kh) * kK + kw]) *
                         x[((static_cast<size_t>(s) * kIn + i) * H + ih) * W + iw];
                }
            y[((static_cast<size_t>(s) * kOut + o) * OH + oh) * OW + ow] = acc;
          }
    return y;
  }

  // Relu(BN(conv)) in float64 with the given statistics.
  std::vector<double> Ref(const std::vector<float>& x, int n, const std::vector<double>& m,
                          const std::vector<double>& v, int H = kH, int W = kW) const {
    std::vector<double> y = ConvRef(x, n, H, W);
    const int plane = ((H + 2 - kK) / 2 + 1) * ((W + 2 - kK) / 2 + 1);
    for (size_t i = 0; i < y.size(); ++i) {
      const int o = static_cast<int>(i / plane) % kOut;
      const double r = (y[i] - m[o]) / std::sqrt(v[o] + eps) * gamma[o] + beta[o];
      y[i] = std::max(0.0, r);
    }
    return y;
  }
  std::vector<double> Ref(const std::vector<float>& x, int n, int H = kH, int W = kW) const {
    return Ref(x, n, std::vector<double>(mean.begin(), mean.end()),
               std::vector<double>(var.begin(), var.end()), H, W);
  }
};

}  // namespace normserve::testing

#endif  // NORMSERVE_TESTS_KERNELS_CONV_BN_FIXTURE_H_
