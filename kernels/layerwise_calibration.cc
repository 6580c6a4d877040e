#include "kernels/layerwise_calibration.h"

#include <algorithm>
#include <cstring>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "kernels/engine.h"
#include "kernels/status_macros.h"

namespace normserve {

std::vector<int> BnLayerWaves(const Model& model) {
  const auto& layers = model.bn_layers();
  absl::flat_hash_map<std::string, int> layer_index;
  for (size_t i = 0; i < layers.size(); ++i) layer_index[layers[i].name] = static_cast<int>(i);
  // upstream[v]: the BN layers whose output reaches value v.
  absl::flat_hash_map<std::string, std::vector<bool>> upstream;
  std::vector<int> wave(layers.size(), 0);
  const std::vector<bool> none(layers.size(), false);
  for (const Node& n : model.graph().nodes) {
    std::vector<bool> up = none;
    for (const auto& in : n.inputs) {
      auto it = upstream.find(in);
      if (it == upstream.end()) continue;
      for (size_t k = 0; k < up.size(); ++k) up[k] = up[k] || it->second[k];
    }
    auto li = layer_index.find(n.name);
    if (n.op == "BatchNormalization" && li != layer_index.end()) {
      int w = 0;
      for (size_t k = 0; k < up.size(); ++k) {
        if (up[k]) w = std::max(w, wave[k] + 1);
      }
      wave[li->second] = w;
      up[li->second] = true;
    }
    for (const auto& o : n.outputs) upstream[o] = up;
  }
  return wave;
}

absl::StatusOr<CalibrationResult> CalibrateLayerwise(std::shared_ptr<const Model> model,
                                                     absl::Span<const Tensor> samples,
                                                     const CalibrationOptions& options) {
  if (samples.empty()) return absl::InvalidArgumentError("no samples to calibrate with");
  if (options.batch < 1) return absl::InvalidArgumentError("batch must be positive");
  const auto& spec = model->inputs()[0].shape;
  int64_t per_sample = 1;
  for (size_t i = 1; i < spec.size(); ++i) per_sample *= spec[i];
  // Flatten every sample into one row-major list of batch-1 rows.
  std::vector<const float*> rows;
  for (size_t s = 0; s < samples.size(); ++s) {
    const Tensor& t = samples[s];
    if (t.shape.size() != spec.size() || !std::equal(t.shape.begin() + 1, t.shape.end(), spec.begin() + 1)) {
      return absl::InvalidArgumentError(absl::StrCat("sample ", s, " has shape ", ShapeToString(t.shape),
                                                     "; the model input is ", ShapeToString(spec)));
    }
    for (int64_t b = 0; b < t.shape[0]; ++b) rows.push_back(t.data.data() + b * per_sample);
  }

  CalibrationResult result;
  const std::vector<int> waves = BnLayerWaves(*model);
  result.waves = waves.empty() ? 0 : *std::max_element(waves.begin(), waves.end()) + 1;
  for (size_t i = 0; i < model->bn_layers().size(); ++i) {
    CalibratedLayer l;
    l.info = model->bn_layers()[i];
    l.accumulator = LayerAccumulator(l.info.channels);
    ASSIGN_OR_RETURN(l.frozen, model->GetBnStatistics(l.info.name));
    l.wave = waves[i];
    result.layers.push_back(std::move(l));
  }

  absl::flat_hash_map<std::string, BnStatistics> committed;
  std::vector<float> chunk;
  for (int w = 0; w < result.waves; ++w) {
    CompileOptions co;
    co.intra_op_threads = options.intra_op_threads;
    co.stop_after_observed = true;
    co.max_batch = options.batch;
    co.precompile_batch_sizes = {};
    absl::flat_hash_map<std::string, CalibratedLayer*> in_wave;
    for (auto& l : result.layers) {
      if (l.wave == w) {
        co.observed_bn_layers.push_back(l.info.name);
        in_wave[l.info.name] = &l;
      }
    }
    ASSIGN_OR_RETURN(auto current, model->WithBnStatistics(committed));
    ASSIGN_OR_RETURN(auto compiled, CompiledModel::Compile(current, co));
    auto ctx = compiled->NewContext();
    for (size_t start = 0; start < rows.size(); start += options.batch) {
      const int64_t n = std::min<int64_t>(options.batch, rows.size() - start);
      chunk.resize(n * per_sample);
      for (int64_t b = 0; b < n; ++b) std::memcpy(chunk.data() + b * per_sample, rows[start + b], per_sample * sizeof(float));
      std::vector<int64_t> shape = spec;
      shape[0] = n;
      BnObservations obs;
      std::vector<Tensor> unused;
      RETURN_IF_ERROR(ctx->Run({TensorView{chunk.data(), shape}}, &unused, &obs));
      for (auto& [name, per_sample_moments] : obs.per_layer) {
        CalibratedLayer* l = in_wave.at(name);
        for (size_t b = 0; b < per_sample_moments.size(); ++b) {
          absl::Status s = l->accumulator.Add(per_sample_moments[b]);
          if (!s.ok()) {
            return absl::InvalidArgumentError(absl::StrCat("sample ", start + b, ", layer \"", name, "\": ", s.message()));
          }
        }
      }
    }
    for (auto& [name, l] : in_wave) {
      const auto mean = l->accumulator.Mean();
      const auto var = l->accumulator.UnbiasedVariance();
      for (double v : var) {
        if (!(v >= 0)) {
          return absl::FailedPreconditionError(absl::StrCat(
              "layer \"", name, "\": variance undefined with ", l->accumulator.values_per_channel(), " values per channel"));
        }
      }
      l->committed = options.prior_strength > 0
                         ? BlendWithPrior(l->frozen, mean, var, options.prior_strength, l->accumulator.requests())
                         : BnStatistics{mean, var};
      committed[name] = l->committed;
    }
  }
  ASSIGN_OR_RETURN(result.model, model->WithBnStatistics(committed));
  return result;
}

}  // namespace normserve
