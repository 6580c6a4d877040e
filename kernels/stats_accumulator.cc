#include "kernels/stats_accumulator.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace normserve {

void ChannelMomentsSum::Merge(double count, const double* mean, const double* m2) {
  if (count <= 0) return;
  const double total = count_ + count;
  for (size_t c = 0; c < mean_.size(); ++c) {
    const double delta = mean[c] - mean_[c];
    mean_[c] += delta * count / total;
    m2_[c] += m2[c] + delta * delta * count_ * count / total;
  }
  count_ = total;
}

std::vector<double> ChannelMomentsSum::Variance(int ddof) const {
  std::vector<double> v(m2_.size(), std::numeric_limits<double>::quiet_NaN());
  if (count_ > ddof) {
    for (size_t c = 0; c < m2_.size(); ++c) v[c] = m2_[c] / (count_ - ddof);
  }
  return v;
}

ChannelMomentsSum ChannelMomentsSum::FromState(double count, std::vector<double> mean,
                                               std::vector<double> m2) {
  ChannelMomentsSum s;
  s.count_ = count;
  s.mean_ = std::move(mean);
  s.m2_ = std::move(m2);
  return s;
}

absl::Status LayerAccumulator::Add(const ChannelMoments& sample) {
  const int64_t c = channels();
  if (static_cast<int64_t>(sample.mean.size()) != c ||
      static_cast<int64_t>(sample.m2.size()) != c) {
    return absl::InvalidArgumentError(
        absl::StrCat("sample has ", sample.mean.size(), " channels; the layer has ", c));
  }
  if (sample.count <= 0) return absl::InvalidArgumentError("sample has no values");
  for (int64_t i = 0; i < c; ++i) {
    if (!std::isfinite(sample.mean[i]) || !std::isfinite(sample.m2[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("non-finite activation statistics in channel ", i));
    }
  }
  values_.Merge(static_cast<double>(sample.count), sample.mean.data(), sample.m2.data());
  const std::vector<double> zero(c, 0.0);
  request_means_.Merge(1.0, sample.mean.data(), zero.data());
  return absl::OkStatus();
}

void LayerAccumulator::Merge(const LayerAccumulator& other) {
  values_.Merge(other.values_);
  request_means_.Merge(other.request_means_);
}

std::vector<double> LayerAccumulator::StandardError() const {
  std::vector<double> v = request_means_.Variance(1);
  for (double& x : v) x = std::sqrt(x / request_means_.count());
  return v;
}

std::vector<double> LayerAccumulator::RelativeStandardError() const {
  std::vector<double> sem = StandardError();
  const std::vector<double> var = values_.Variance(1);
  for (size_t c = 0; c < sem.size(); ++c) {
    sem[c] = var[c] > 0 ? sem[c] / std::sqrt(var[c]) : std::numeric_limits<double>::infinity();
  }
  return sem;
}

LayerAccumulator LayerAccumulator::FromState(ChannelMomentsSum values,
                                             ChannelMomentsSum request_means) {
  LayerAccumulator a;
  a.values_ = std::move(values);
  a.request_means_ = std::move(request_means);
  return a;
}

StatsDrift ComputeDrift(const BnStatistics& frozen, const std::vector<double>& mean,
                        const std::vector<double>& var) {
  StatsDrift d;
  const size_t c = std::min(frozen.mean.size(), mean.size());
  if (c == 0) return d;
  for (size_t i = 0; i < c; ++i) {
    const double v0 = std::max(frozen.var[i], 1e-12), v1 = std::max(var[i], 1e-12);
    const double dm = mean[i] - frozen.mean[i];
    d.mean_shift += std::fabs(dm) / std::sqrt(v0);
    d.log_var_ratio += std::fabs(std::log(v1 / v0));
    d.kl += 0.5 * (v1 / v0 + dm * dm / v0 - 1.0 + std::log(v0 / v1));
  }
  d.mean_shift /= c;
  d.log_var_ratio /= c;
  d.kl /= c;
  return d;
}

BnStatistics BlendWithPrior(const BnStatistics& frozen, const std::vector<double>& mean,
                            const std::vector<double>& var, double prior_strength, double n) {
  BnStatistics out;
  const double total = prior_strength + n;
  for (size_t c = 0; c < mean.size(); ++c) {
    out.mean.push_back((prior_strength * frozen.mean[c] + n * mean[c]) / total);
    out.var.push_back((prior_strength * frozen.var[c] + n * var[c]) / total);
  }
  return out;
}

}  // namespace normserve
