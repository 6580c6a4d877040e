// normserve.v1 training messages <-> the training domain types.
#ifndef NORMSERVE_SERVICE_TRAINING_TRAINING_CONVERSION_H_
#define NORMSERVE_SERVICE_TRAINING_TRAINING_CONVERSION_H_

#include <vector>

#include "absl/time/time.h"
#include "normserve/v1/training.pb.h"
#include "service/request_validation.h"
#include "service/training/session.h"
#include "service/training/training_manager.h"

namespace normserve {

// Borrow from `request`, which must outlive the result.
std::vector<RequestTensor> TrainingInputs(const normserve::v1::AccumulateRequest& request);

void SummaryToReport(const SessionSummary& summary, bool per_channel,
                     normserve::v1::ReportResponse* out);

// `now`: the time elapsed_seconds of a running replay is measured to.
void ProgressToProto(const ReplayProgress& progress, absl::Time now,
                     normserve::v1::ReplayProgress* out);

SessionRequestOptions OptionsFromProto(const normserve::v1::SessionOptions& options);

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_TRAINING_TRAINING_CONVERSION_H_
