#include "kernels/layerwise_calibration.h"

#include <algorithm>
#include <cstring>
#include <memory>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "kernels/activation_buffer.h"
#include "kernels/channel_moments.h"
#include "kernels/engine.h"
#include "kernels/specialize.h"
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

namespace {

// All samples' activations of one value, [samples x values per sample].
struct Rows {
  ActivationBuffer buffer;  // uninitialized
  size_t capacity = 0;      // floats
  float* data() const { return static_cast<float*>(buffer.get()); }
};

// Where the graph stands between waves: which nodes have run with final statistics, and
// the activations of every sample on the cut between those nodes and the rest.
class Frontier {
 public:
  Frontier(const Model& model, int64_t samples, const SpecializedGraph& at1,
           const absl::StatusOr<SpecializedGraph>& at2)
      : model_(model),
        samples_(samples),
        at1_(at1),
        at2_(at2),
        done_(model.graph().nodes.size(), false) {
    const auto& nodes = model.graph().nodes;
    for (size_t i = 0; i < nodes.size(); ++i) {
      for (const auto& in : nodes[i].inputs) consumers_[in].push_back(i);
    }
  }

  // The segment of the graph that computes `targets` (a wave's BN inputs) from the model
  // input and the current cut, and the cut after it if that fits in `max_bytes`.
  struct Segment {
    std::vector<ValueSpec> inputs;     // the model input and/or cut values
    std::vector<std::string> new_cut;  // cut values this segment computes (when caching)
    std::vector<std::string> cut_after;
    std::vector<bool> done_after;
    int64_t cut_bytes = 0;
    bool from_cache = false;
    bool caching = false;
  };

  Segment Plan(const std::vector<std::string>& targets, int64_t max_bytes) const {
    const auto& graph = model_.graph();
    Segment seg;
    // A value with no producer that is neither the input nor kept: Model::Slice reports it.
    const std::vector<bool> need = NodesFeeding(graph, targets, [&](const std::string& v) {
      if (!IsModelInput(v) && !cache_.contains(v)) return false;
      // The model input keeps its declared spec (a fixed batch stays fixed); cut values
      // exist only for models that batch.
      seg.inputs.push_back(IsModelInput(v) ? model_.inputs()[0]
                                           : ValueSpec{v, ElementType::kFloat32, BatchedShape(v)});
      seg.from_cache |= !IsModelInput(v);
      return true;
    });
    seg.done_after = done_;
    for (size_t i = 0; i < need.size(); ++i) seg.done_after[i] = seg.done_after[i] || need[i];
    // The cut: values computed by now that a node still to run reads (the wave's BN
    // inputs among them: their layers run in the next segment, with new statistics).
    bool cacheable = at2_.ok() && max_bytes > 0;
    for (size_t i = 0; i < graph.nodes.size() && cacheable; ++i) {
      if (!seg.done_after[i]) continue;
      for (const auto& o : graph.nodes[i].outputs) {
        if (o.empty() || at1_.IsConst(o) || !Pending(o, seg.done_after)) continue;
        if (!BatchLeading(o)) {
          cacheable = false;
          break;
        }
        seg.cut_after.push_back(o);
        seg.cut_bytes += samples_ * PerSample(o) * static_cast<int64_t>(sizeof(float));
        if (!cache_.contains(o)) seg.new_cut.push_back(o);
      }
    }
    seg.caching = cacheable && seg.cut_bytes <= max_bytes;
    if (!seg.caching) seg.new_cut.clear();
    return seg;
  }

  // Makes `seg`'s cut the current one; `produced` holds the values it computed.
  void Advance(Segment& seg, absl::flat_hash_map<std::string, Rows> produced) {
    absl::flat_hash_map<std::string, Rows> next;
    for (const auto& v : seg.cut_after) {
      auto it = produced.find(v);
      auto& from = it != produced.end() ? produced : cache_;
      next[v] = std::move(from.at(v));
      from.erase(v);
    }
    for (auto& [v, rows] : cache_) free_.push_back(std::move(rows));
    cache_ = std::move(next);
    done_ = std::move(seg.done_after);
  }

  // A buffer for `floats` values: a dropped cut's if one is large enough. Reuse matters:
  // first-touching fresh pages cost more than filling them (measured here: ~145 ms for a
  // 51 MB ResNet-18 stem chunk of 16 samples, against ~10 ms to copy into mapped pages).
  absl::StatusOr<Rows> Acquire(size_t floats) {
    size_t best = free_.size();
    for (size_t i = 0; i < free_.size(); ++i) {
      if (free_[i].capacity >= floats &&
          (best == free_.size() || free_[i].capacity < free_[best].capacity))
        best = i;
    }
    if (best == free_.size()) {
      Rows r{AllocateActivations(floats * sizeof(float), /*huge_pages=*/true), floats};
      if (r.buffer == nullptr) {
        return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", floats * sizeof(float),
                                                         " bytes for kept activations"));
      }
      return r;
    }
    Rows r = std::move(free_[best]);
    free_.erase(free_.begin() + best);
    return r;
  }

  bool IsModelInput(const std::string& v) const { return v == model_.inputs()[0].name; }
  const float* RowsOf(const std::string& v, int64_t first) const {
    return cache_.at(v).data() + first * PerSample(v);
  }
  int64_t PerSample(const std::string& v) const {
    int64_t n = 1;
    const auto& s = at1_.ShapeOf(v);
    for (size_t i = 1; i < s.size(); ++i) n *= s[i];
    return n;
  }
  std::vector<int64_t> BatchedShape(const std::string& v) const {
    std::vector<int64_t> s = at1_.ShapeOf(v);
    s[0] = -1;
    return s;
  }

 private:
  bool Pending(const std::string& v, const std::vector<bool>& done) const {
    auto it = consumers_.find(v);
    if (it == consumers_.end()) return false;
    for (size_t c : it->second) {
      if (!done[c]) return true;
    }
    return false;
  }
  // Batch in dim 0, so one sample's activation is one contiguous row.
  bool BatchLeading(const std::string& v) const {
    const auto& s1 = at1_.ShapeOf(v);
    auto it = at2_->shapes.find(v);
    if (s1.empty() || s1[0] != 1 || it == at2_->shapes.end() || it->second.size() != s1.size())
      return false;
    return it->second[0] == 2 && std::equal(s1.begin() + 1, s1.end(), it->second.begin() + 1);
  }

  const Model& model_;
  const int64_t samples_;
  const SpecializedGraph& at1_;
  const absl::StatusOr<SpecializedGraph>& at2_;
  absl::flat_hash_map<std::string, std::vector<size_t>> consumers_;
  std::vector<bool> done_;
  absl::flat_hash_map<std::string, Rows> cache_;
  std::vector<Rows> free_;
};

absl::Status AddMoments(CalibratedLayer* l, int64_t first_sample,
                        const std::vector<ChannelMoments>& moments) {
  for (size_t b = 0; b < moments.size(); ++b) {
    absl::Status s = l->accumulator.Add(moments[b]);
    if (!s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("sample ", first_sample + b, ", layer \"",
                                                     l->info.name, "\": ", s.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

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
    if (t.shape.size() != spec.size() ||
        !std::equal(t.shape.begin() + 1, t.shape.end(), spec.begin() + 1)) {
      return absl::InvalidArgumentError(absl::StrCat("sample ", s, " has shape ",
                                                     ShapeToString(t.shape),
                                                     "; the model input is ", ShapeToString(spec)));
    }
    for (int64_t b = 0; b < t.shape[0]; ++b) rows.push_back(t.data.data() + b * per_sample);
  }
  const int64_t total = static_cast<int64_t>(rows.size());

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
  absl::flat_hash_map<std::string, const Node*> nodes_by_name;
  for (const Node& n : model->graph().nodes) nodes_by_name[n.name] = &n;

  ASSIGN_OR_RETURN(SpecializedGraph at1,
                   Specialize(model->graph(), InputShapesFor(model->graph(), 1)));
  // A model exported with a fixed batch of 1 (no batch-2 specialization) keeps no cuts
  // and runs sample by sample.
  const std::vector<std::vector<int64_t>> shapes2 = InputShapesFor(model->graph(), 2);
  const bool batchable = !shapes2.empty() && !shapes2[0].empty() && shapes2[0][0] == 2;
  const absl::StatusOr<SpecializedGraph> at2 =
      batchable ? Specialize(model->graph(), shapes2)
                : absl::StatusOr<SpecializedGraph>(
                      absl::FailedPreconditionError("the model has a fixed batch"));
  Frontier frontier(*model, total, at1, at2);
  const int64_t batch = at2.ok() ? options.batch : 1;

  absl::flat_hash_map<std::string, BnStatistics> committed;
  std::vector<float> chunk;
  auto report = [&](int waves_done, int64_t samples_done) {
    if (options.on_progress) options.on_progress({waves_done, result.waves, samples_done, total});
  };
  for (int w = 0; w < result.waves; ++w) {
    report(w, 0);
    std::vector<CalibratedLayer*> in_wave;
    std::vector<std::string> targets, layer_outputs;
    for (auto& l : result.layers) {
      if (l.wave != w) continue;
      in_wave.push_back(&l);
      targets.push_back(l.info.input);
      layer_outputs.push_back(nodes_by_name.at(l.info.name)->outputs[0]);
    }
    Frontier::Segment seg = frontier.Plan(targets, options.max_cached_bytes);
    // Caching: the segment ends at the cut and the moments are taken from it. Otherwise
    // the segment runs the wave's layers observed and stops there (no outputs).
    CompileOptions co;
    co.intra_op_threads = options.intra_op_threads;
    co.max_batch = batch;
    co.precompile_batch_sizes = {};
    co.conv_algorithm = ConvAlgorithm::kDirect;  // statistics must not depend on the batching
    absl::flat_hash_map<std::string, CalibratedLayer*> observed;
    if (!seg.caching) {
      co.stop_after_observed = true;
      for (CalibratedLayer* l : in_wave) {
        co.observed_bn_layers.push_back(l->info.name);
        observed[l->info.name] = l;
      }
    }
    const std::vector<std::string>& slice_outputs = seg.caching ? seg.new_cut : layer_outputs;
    absl::flat_hash_map<std::string, Rows> produced;
    if (!slice_outputs.empty()) {
      ASSIGN_OR_RETURN(auto slice, model->Slice(seg.inputs, slice_outputs));
      absl::flat_hash_map<std::string, BnStatistics> upstream;
      for (const auto& l : slice->bn_layers()) {
        auto it = committed.find(l.name);
        if (it != committed.end()) upstream.insert(*it);
      }
      ASSIGN_OR_RETURN(auto current, slice->WithBnStatistics(upstream));
      ASSIGN_OR_RETURN(auto compiled, CompiledModel::Compile(current, co));
      auto ctx = compiled->NewContext();
      for (const auto& v : seg.new_cut) {
        ASSIGN_OR_RETURN(produced[v], frontier.Acquire(total * frontier.PerSample(v)));
      }
      for (int64_t start = 0; start < total; start += batch) {
        const int64_t n = std::min<int64_t>(batch, total - start);
        std::vector<TensorView> inputs;
        for (const ValueSpec& in : current->inputs()) {
          std::vector<int64_t> shape = in.shape;
          shape[0] = n;
          if (frontier.IsModelInput(in.name)) {
            chunk.resize(n * per_sample);
            for (int64_t b = 0; b < n; ++b) {
              std::memcpy(chunk.data() + b * per_sample, rows[start + b],
                          per_sample * sizeof(float));
            }
            inputs.push_back(TensorView{chunk.data(), shape});
          } else {
            inputs.push_back(TensorView{frontier.RowsOf(in.name, start), shape});
          }
        }
        std::vector<float*> outputs;
        for (const auto& v : seg.new_cut)
          outputs.push_back(produced[v].data() + start * frontier.PerSample(v));
        BnObservations obs;
        RETURN_IF_ERROR(ctx->RunInto(inputs, outputs, &obs));
        for (auto& [name, moments] : obs.per_layer)
          RETURN_IF_ERROR(AddMoments(observed.at(name), start, moments));
        report(w, start + n);
      }
    }
    result.waves_from_cache += seg.from_cache ? 1 : 0;
    if (seg.caching) {
      result.peak_cached_bytes = std::max(result.peak_cached_bytes, seg.cut_bytes);
      frontier.Advance(seg, std::move(produced));
      for (CalibratedLayer* l : in_wave) {
        const int64_t channels = l->info.channels;
        const int64_t spatial = l->info.values_per_channel;  // at batch 1
        if (frontier.IsModelInput(l->info.input)) {
          for (int64_t s = 0; s < total; ++s) {
            RETURN_IF_ERROR(AddMoments(l, s, ChannelMomentsOf(rows[s], 1, channels, spatial)));
          }
        } else {
          RETURN_IF_ERROR(AddMoments(
              l, 0, ChannelMomentsOf(frontier.RowsOf(l->info.input, 0), total, channels, spatial)));
        }
      }
    }
    for (CalibratedLayer* l : in_wave) {
      const auto mean = l->accumulator.Mean();
      const auto var = l->accumulator.UnbiasedVariance();
      for (double v : var) {
        if (!(v >= 0)) {
          return absl::FailedPreconditionError(
              absl::StrCat("layer \"", l->info.name, "\": variance undefined with ",
                           l->accumulator.values_per_channel(), " values per channel"));
        }
      }
      l->committed = options.prior_strength > 0
                         ? BlendWithPrior(l->frozen, mean, var, options.prior_strength,
                                          l->accumulator.requests())
                         : BnStatistics{mean, var};
      committed[l->info.name] = l->committed;
    }
  }
  ASSIGN_OR_RETURN(result.model, model->WithBnStatistics(committed));
  report(result.waves, total);
  return result;
}

}  // namespace normserve
