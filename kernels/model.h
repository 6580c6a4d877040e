// An imported ONNX model: its graph, its I/O signature and its BN layers. Immutable once
// loaded; a copy with new BN statistics is a new Model (the original keeps serving).
#ifndef NORMSERVE_KERNELS_MODEL_H_
#define NORMSERVE_KERNELS_MODEL_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "kernels/bn_analysis.h"
#include "kernels/graph.h"

namespace normserve {

struct LoadOptions {
  // Largest file accepted; a model beyond it is refused before parsing.
  int64_t max_model_bytes = int64_t{2} << 30;
  int64_t reliable_values_per_channel = kDefaultReliableValuesPerChannel;
};

// Frozen statistics of one BN layer, as ONNX stores them (input_mean, input_var).
struct BnStatistics {
  std::vector<double> mean;
  std::vector<double> var;
};

class Model {
 public:
  static absl::StatusOr<std::shared_ptr<const Model>> LoadFile(const std::string& path,
                                                               const LoadOptions& options = {});
  static absl::StatusOr<std::shared_ptr<const Model>> LoadBytes(std::string_view bytes,
                                                                const LoadOptions& options = {});

  const Graph& graph() const { return graph_; }
  const std::vector<ValueSpec>& inputs() const { return graph_.inputs; }
  const std::vector<ValueSpec>& outputs() const { return graph_.outputs; }
  const std::vector<BnLayerInfo>& bn_layers() const { return bn_layers_; }
  const LoadOptions& options() const { return options_; }
  int64_t opset() const { return opset_; }
  // Convolutions a QDQ file gave int8 scales (qdq_import.h); 0 for a float model.
  int int8_convs() const { return int8_convs_; }

  absl::StatusOr<BnStatistics> GetBnStatistics(const std::string& layer) const;

  // A new model whose named BN layers use `stats` (mean, var per channel); other layers
  // keep theirs. Fails naming the layer on an unknown name, a wrong channel count, or a
  // negative / non-finite value.
  absl::StatusOr<std::shared_ptr<const Model>> WithBnStatistics(
      const absl::flat_hash_map<std::string, BnStatistics>& stats) const;

  // The ONNX file of this model (BN initializers replaced where WithBnStatistics changed
  // them), loadable by PyTorch and ONNX Runtime. Fails for a slice.
  absl::StatusOr<std::string> SerializeOnnx() const;

  // The part of this model that computes `outputs` from `inputs` and the constants: the
  // nodes the outputs need and nothing upstream of the inputs. Inputs are runtime values
  // of this graph with their shapes (batch dim -1); output shapes are inferred. Lets a
  // caller run the graph piecewise and keep the activations in between (layer-wise
  // calibration replays each segment once instead of the whole prefix per wave). Fails
  // naming the value if an output needs a value that is neither an input nor computable.
  absl::StatusOr<std::shared_ptr<const Model>> Slice(const std::vector<ValueSpec>& inputs,
                                                     const std::vector<std::string>& outputs) const;

 private:
  Model() = default;
  absl::Status Analyze();

  Graph graph_;
  std::vector<BnLayerInfo> bn_layers_;
  LoadOptions options_;
  int64_t opset_ = 0;
  int int8_convs_ = 0;
  std::shared_ptr<const std::string> onnx_bytes_;  // the file as loaded; null for a slice
};

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_MODEL_H_
