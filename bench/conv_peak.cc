// One 3x3 convolution through oneDNN, shaped like the middle of a ResNet (C=K=256, 56x56),
// in the blocked layouts oneDNN picks (format_tag::any), inputs reordered once outside the
// timed loop, as in oneDNN's examples/cnn_inference_f32.cpp.
#include "bench/conv_peak.h"

#include <omp.h>

#include <chrono>
#include <random>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "bench/latency_stats.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace normserve {
namespace bench {
namespace {

using Clock = std::chrono::steady_clock;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

// Uniform [-1, 1): no denormals, so the timing reflects the arithmetic only.
void FillUniform(dnnl::memory& mem, uint32_t seed) {
  float* p = static_cast<float*>(mem.get_data_handle());
  const size_t n = mem.get_desc().get_size() / sizeof(float);
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  for (size_t i = 0; i < n; ++i) p[i] = dist(gen);
}

// `user` in the layout `want`, reordering once if oneDNN chose a different one.
dnnl::memory InLayout(dnnl::memory user, const dnnl::memory::desc& want, const dnnl::engine& eng,
                      dnnl::stream& strm) {
  if (user.get_desc() == want) return user;
  dnnl::memory out(want, eng);
  dnnl::reorder(user, out).execute(strm, user, out);
  strm.wait();
  return out;
}

absl::StatusOr<ConvPeakResult> MeasureConvPeakOrThrow(const ConvPeakOptions& o) {
  if (o.batch < 1 || o.channels < 1 || o.out_channels < 1 || o.height < 1 || o.width < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("conv peak: every dim must be >= 1, got N=", o.batch, " C=", o.channels,
                     " K=", o.out_channels, " H=", o.height, " W=", o.width));
  }
  if (o.threads > 0) omp_set_num_threads(o.threads);

  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream strm(eng);

  const dnnl::memory::dims src_dims = {o.batch, o.channels, o.height, o.width};
  const dnnl::memory::dims wei_dims = {o.out_channels, o.channels, 3, 3};
  const dnnl::memory::dims bias_dims = {o.out_channels};
  const dnnl::memory::dims dst_dims = {o.batch, o.out_channels, o.height, o.width};
  const dnnl::memory::dims strides = {1, 1}, padding = {1, 1};

  const dt act = o.bf16 ? dt::bf16 : dt::f32;
  dnnl::convolution_forward::desc desc(
      dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
      dnnl::memory::desc(src_dims, act, tag::any), dnnl::memory::desc(wei_dims, act, tag::any),
      dnnl::memory::desc(bias_dims, dt::f32, tag::any), dnnl::memory::desc(dst_dims, act, tag::any),
      strides, padding, padding);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  dnnl::convolution_forward::primitive_desc pd(desc, attr, eng);
  dnnl::convolution_forward conv(pd);

  dnnl::memory user_src({src_dims, dt::f32, tag::nchw}, eng);
  dnnl::memory user_wei({wei_dims, dt::f32, tag::oihw}, eng);
  dnnl::memory user_bias({bias_dims, dt::f32, tag::x}, eng);
  FillUniform(user_src, 1);
  FillUniform(user_wei, 2);
  FillUniform(user_bias, 3);
  dnnl::memory src = InLayout(user_src, pd.src_desc(), eng, strm);
  dnnl::memory wei = InLayout(user_wei, pd.weights_desc(), eng, strm);
  dnnl::memory bias = InLayout(user_bias, pd.bias_desc(), eng, strm);
  dnnl::memory dst(pd.dst_desc(), eng);
  dnnl::memory scratch(pd.scratchpad_desc(), eng);
  std::unordered_map<int, dnnl::memory> args = {{DNNL_ARG_SRC, src},
                                                {DNNL_ARG_WEIGHTS, wei},
                                                {DNNL_ARG_BIAS, bias},
                                                {DNNL_ARG_DST, dst},
                                                {DNNL_ARG_SCRATCHPAD, scratch}};

  for (int i = 0; i < o.warmup; ++i) conv.execute(strm, args);
  strm.wait();

  std::vector<double> times_ms;
  const auto start = Clock::now();
  const auto budget = std::chrono::duration<double>(o.seconds);
  while (true) {
    const auto t0 = Clock::now();
    conv.execute(strm, args);
    strm.wait();
    const auto t1 = Clock::now();
    times_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    if (static_cast<int>(times_ms.size()) >= o.min_iters && t1 - start >= budget) break;
  }
  const LatencyStats stats = Summarize(std::move(times_ms));

  ConvPeakResult r;
  // 2 flops (multiply + add) per MAC; MACs = N*K*OH*OW * C*KH*KW (stride 1, same padding).
  r.gflop_per_run = 2.0 * o.batch * o.out_channels * o.height * o.width * o.channels * 9 / 1e9;
  r.median_ms = stats.median_ms;
  r.min_ms = stats.min_ms;
  r.gflops = r.gflop_per_run / (stats.median_ms / 1e3);
  r.gflops_best = r.gflop_per_run / (stats.min_ms / 1e3);
  r.iters = stats.iters;
  r.implementation = pd.impl_info_str();
  return r;
}

}  // namespace

absl::StatusOr<ConvPeakResult> MeasureConvPeak(const ConvPeakOptions& options) {
  try {
    return MeasureConvPeakOrThrow(options);
  } catch (const dnnl::error& e) {
    return absl::InternalError(
        absl::StrCat("conv peak: oneDNN error ", static_cast<int>(e.status), ": ", e.what()));
  }
}

}  // namespace bench
}  // namespace normserve
