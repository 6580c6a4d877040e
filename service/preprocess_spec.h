// The checks of a model's declared image preprocessing (config.json "preprocess",
// proto/normserve/v1/preprocess.proto), shared by the server, which refuses a bad
// declaration at load, and by the clients that apply it.
#ifndef NORMSERVE_SERVICE_PREPROCESS_SPEC_H_
#define NORMSERVE_SERVICE_PREPROCESS_SPEC_H_

#include <cstdint>

#include "absl/status/status.h"
#include "normserve/v1/preprocess.pb.h"

namespace normserve {

// Known channel_order, std > 0, crop of 0 or 2 sides in 1..65536, resize side in 0..65536;
// with `channels` > 0 (the model input's) also mean/std of length 0, 1 or `channels`.
absl::Status ValidatePreprocess(const ::normserve::v1::Preprocess& p, int64_t channels);

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_PREPROCESS_SPEC_H_
