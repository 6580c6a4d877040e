// What the serving path tells an onlooker about answered requests (the training side's
// live drift watch implements it), so serving depends on no training header.
#ifndef NORMSERVE_SERVICE_INFERENCE_OBSERVER_H_
#define NORMSERVE_SERVICE_INFERENCE_OBSERVER_H_

#include <memory>
#include <vector>

#include "kernels/tensor.h"
#include "service/servable.h"

namespace normserve {

class InferenceObserver {
 public:
  virtual ~InferenceObserver() = default;
  // Whether this request's inputs should be copied for Offer; called on the request path,
  // so it must be cheap and lock-free.
  virtual bool Sample() = 0;
  // A sampled request's validated inputs, after it has been answered. Must not block.
  virtual void Offer(std::shared_ptr<const Servable> servable, std::vector<Tensor> inputs) = 0;
};

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_INFERENCE_OBSERVER_H_
