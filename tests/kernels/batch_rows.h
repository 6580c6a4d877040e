// Test helper: a batch tensor as the batch-1 samples the training endpoint would receive.
#ifndef NORMSERVE_TESTS_KERNELS_BATCH_ROWS_H_
#define NORMSERVE_TESTS_KERNELS_BATCH_ROWS_H_

#include <cstdint>
#include <vector>

#include "kernels/tensor.h"

namespace normserve {

inline std::vector<Tensor> BatchOneRows(const Tensor& batch) {
  std::vector<Tensor> rows;
  const int64_t per = static_cast<int64_t>(batch.data.size()) / batch.shape[0];
  for (int64_t i = 0; i < batch.shape[0]; ++i) {
    Tensor t;
    t.shape = batch.shape;
    t.shape[0] = 1;
    t.data.assign(batch.data.begin() + i * per, batch.data.begin() + (i + 1) * per);
    rows.push_back(std::move(t));
  }
  return rows;
}

}  // namespace normserve

#endif  // NORMSERVE_TESTS_KERNELS_BATCH_ROWS_H_
