#include "kernels/conv_algorithm_choice.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/base/const_init.h"
#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "kernels/plan.h"

namespace normserve {

using dnnl::memory;

bool WinogradApplies(const memory::dims& weights, const memory::dims& strides,
                     const memory::dims& dilates, int64_t groups) {
  return groups == 1 && weights.size() == 4 && weights[2] == 3 && weights[3] == 3 &&
         strides.size() == 2 && strides[0] == 1 && strides[1] == 1 && dilates.size() == 2 &&
         dilates[0] == 0 && dilates[1] == 0;
}

namespace {

// A memory with zeroed contents (values do not change either kernel's speed).
memory Zeroed(const memory::desc& md) {
  memory m(md, CpuEngine());
  if (md.get_size() > 0) std::memset(m.get_data_handle(), 0, md.get_size());
  return m;
}

class TimedConv {
 public:
  // `user_src`/`user_dst`: the layouts the neighbours produce and consume (the direct
  // kernel's); reorders to and from them are part of the timing when they differ.
  TimedConv(const dnnl::convolution_forward::primitive_desc& pd, const memory::desc& user_src,
            const memory::desc& user_dst)
      : conv_(pd),
        src_(Zeroed(pd.src_desc())),
        weights_(Zeroed(pd.weights_desc())),
        dst_(Zeroed(pd.dst_desc())),
        bias_(Zeroed(pd.bias_desc())),
        scratchpad_(Zeroed(pd.scratchpad_desc())) {
    if (user_src != pd.src_desc()) {
      user_src_ = Zeroed(user_src);
      in_ = dnnl::reorder(user_src_, src_);
    }
    if (user_dst != pd.dst_desc()) {
      user_dst_ = Zeroed(user_dst);
      out_ = dnnl::reorder(dst_, user_dst_);
    }
  }

  double RunMs(dnnl::stream& s) {
    const auto start = std::chrono::steady_clock::now();
    if (in_) in_.execute(s, user_src_, src_);
    std::unordered_map<int, memory> args = {{DNNL_ARG_SRC, src_},
                                            {DNNL_ARG_WEIGHTS, weights_},
                                            {DNNL_ARG_DST, dst_},
                                            {DNNL_ARG_SCRATCHPAD, scratchpad_}};
    if (bias_.get_desc().get_size() > 0) args.emplace(DNNL_ARG_BIAS, bias_);
    conv_.execute(s, args);
    if (out_) out_.execute(s, dst_, user_dst_);
    s.wait();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
        .count();
  }

 private:
  dnnl::convolution_forward conv_;
  memory src_, weights_, dst_, bias_, scratchpad_, user_src_, user_dst_;
  dnnl::reorder in_, out_;
};

// Whether `winograd` beats `direct` by `margin`: best of `runs` after `warmup`.
bool TimeBoth(const dnnl::convolution_forward::primitive_desc& direct,
              const dnnl::convolution_forward::primitive_desc& winograd, double margin, int warmup,
              int runs) {
  TimedConv d(direct, direct.src_desc(), direct.dst_desc());
  TimedConv w(winograd, direct.src_desc(), direct.dst_desc());
  dnnl::stream s(CpuEngine());
  double best_d = std::numeric_limits<double>::infinity(), best_w = best_d;
  for (int i = 0; i < warmup + runs; ++i) {
    // Interleaved, so a burst of load on the machine falls on both.
    const double td = d.RunMs(s), tw = w.RunMs(s);
    if (i >= warmup) {
      best_d = std::min(best_d, td);
      best_w = std::min(best_w, tw);
    }
  }
  return best_w < margin * best_d;
}

}  // namespace

bool WinogradIsFaster(const std::string& signature,
                      const dnnl::convolution_forward::primitive_desc& direct,
                      const dnnl::convolution_forward::primitive_desc& winograd) {
  // One decision per convolution signature and thread count for the whole process: every
  // compile of a model (serving, statistics sessions, other batch sizes) then runs the
  // same kernels and gives bit-identical activations.
  static absl::Mutex mu(absl::kConstInit);
  static auto* decided ABSL_GUARDED_BY(mu) = new absl::flat_hash_map<std::string, bool>();
  const std::string key = absl::StrCat(signature, " threads=", omp_get_max_threads());
  absl::MutexLock lock(&mu);
  auto it = decided->find(key);
  if (it != decided->end()) return it->second;
  // Winograd's precision is slightly lower (transforms in float32): demand a clear win.
  constexpr double kMargin = 0.92;
  constexpr int kWarmup = 2, kRuns = 7;
  bool faster = false;
  try {
    faster = TimeBoth(direct, winograd, kMargin, kWarmup, kRuns);
  } catch (const dnnl::error&) {
    // A kernel that cannot run here is not faster.
  }
  decided->emplace(key, faster);
  return faster;
}

}  // namespace normserve
