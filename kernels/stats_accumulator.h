// Exact accumulation of per-channel BN input statistics across batch-1 requests, in
// float64, with Chan et al. (1979) pairwise merges so any split or order of the samples
// gives the same result up to rounding. Besides all values of a channel it tracks the
// per-request channel means, because values inside one image are correlated: the
// standard error of the mean must come from the spread of those means.
#ifndef NORMSERVE_KERNELS_STATS_ACCUMULATOR_H_
#define NORMSERVE_KERNELS_STATS_ACCUMULATOR_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/engine.h"
#include "kernels/model.h"

namespace normserve {

// count, mean and M2 (sum of squared deviations) per channel.
class ChannelMomentsSum {
 public:
  explicit ChannelMomentsSum(int64_t channels = 0) : mean_(channels, 0.0), m2_(channels, 0.0) {}

  // Chan et al. 1979: merging (n_a, mu_a, M2_a) and (n_b, mu_b, M2_b) gives
  // n = n_a + n_b, mu = mu_a + d * n_b / n, M2 = M2_a + M2_b + d^2 * n_a * n_b / n, d = mu_b -
  // mu_a.
  void Merge(double count, const double* mean, const double* m2);
  void Merge(const ChannelMomentsSum& other) {
    Merge(other.count_, other.mean_.data(), other.m2_.data());
  }

  double count() const { return count_; }
  int64_t channels() const { return static_cast<int64_t>(mean_.size()); }
  const std::vector<double>& mean() const { return mean_; }
  const std::vector<double>& m2() const { return m2_; }
  // M2 / (count - ddof); NaN where count <= ddof.
  std::vector<double> Variance(int ddof) const;

  // State, for durable checkpoints and for merging accumulators across replicas.
  static ChannelMomentsSum FromState(double count, std::vector<double> mean,
                                     std::vector<double> m2);

 private:
  double count_ = 0;
  std::vector<double> mean_, m2_;
};

class LayerAccumulator {
 public:
  explicit LayerAccumulator(int64_t channels = 0) : values_(channels), request_means_(channels) {}

  // One request's observation of the layer input. Refused whole (nothing merged) on a
  // channel-count mismatch or any non-finite moment.
  absl::Status Add(const ChannelMoments& sample);
  void Merge(const LayerAccumulator& other);

  int64_t channels() const { return values_.channels(); }
  int64_t requests() const { return static_cast<int64_t>(request_means_.count()); }
  // Values per channel accumulated so far (requests * values per request).
  int64_t values_per_channel() const { return static_cast<int64_t>(values_.count()); }
  const ChannelMomentsSum& values() const { return values_; }
  const ChannelMomentsSum& request_means() const { return request_means_; }

  std::vector<double> Mean() const { return values_.mean(); }
  // Variance of all values of the channel across all requests (within- plus
  // between-request spread), unbiased as PyTorch stores running_var.
  std::vector<double> UnbiasedVariance() const { return values_.Variance(1); }
  // SEM = std(per-request means) / sqrt(requests); NaN with fewer than 2 requests.
  std::vector<double> StandardError() const;
  // SEM / sqrt(variance of the values).
  std::vector<double> RelativeStandardError() const;

  static LayerAccumulator FromState(ChannelMomentsSum values, ChannelMomentsSum request_means);

 private:
  ChannelMomentsSum values_;
  ChannelMomentsSum request_means_;
};

// Drift of new statistics from frozen ones, averaged over channels.
struct StatsDrift {
  double mean_shift = 0;     // mean |mu_new - mu_old| / sigma_old
  double log_var_ratio = 0;  // mean |log(var_new / var_old)|
  double kl = 0;             // mean KL(N(mu_new, var_new) || N(mu_old, var_old))
};
StatsDrift ComputeDrift(const BnStatistics& frozen, const std::vector<double>& mean,
                        const std::vector<double>& var);

// Schneider et al. 2020: (N * old + n * new) / (N + n) for mean and variance, N the prior
// strength in requests and n the requests seen.
BnStatistics BlendWithPrior(const BnStatistics& frozen, const std::vector<double>& mean,
                            const std::vector<double>& var, double prior_strength, double n);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_STATS_ACCUMULATOR_H_
