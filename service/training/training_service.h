// normserve.v1.TrainingService handlers: authenticate, decode, one TrainingManager call,
// encode. Registered only on the training listener, never on the serving port.
//
// The synchronous gRPC API on purpose: every call blocks on an fsync or on compute
// (Accumulate, Commit's layer-wise replay), which the callback API would run on gRPC's
// shared callback threads; the sync server gives these calls their own thread pool,
// bounded by the listener's ResourceQuota (the "bounded executor" of the style guide).
#ifndef NORMSERVE_SERVICE_TRAINING_TRAINING_SERVICE_H_
#define NORMSERVE_SERVICE_TRAINING_TRAINING_SERVICE_H_

#include "normserve/v1/training.grpc.pb.h"
#include "service/training/bearer_auth.h"
#include "service/training/training_manager.h"

namespace normserve {

class TrainingServiceImpl final : public normserve::v1::TrainingService::Service {
 public:
  // Both outlive the service.
  TrainingServiceImpl(TrainingManager* manager, const BearerAuth* auth)
      : manager_(manager), auth_(auth) {}

  grpc::Status StartSession(grpc::ServerContext* context,
                            const normserve::v1::StartSessionRequest* request,
                            normserve::v1::StartSessionResponse* response) override;
  grpc::Status Accumulate(grpc::ServerContext* context,
                          const normserve::v1::AccumulateRequest* request,
                          normserve::v1::AccumulateResponse* response) override;
  grpc::Status AccumulateStream(grpc::ServerContext* context,
                                grpc::ServerReader<normserve::v1::AccumulateRequest>* reader,
                                normserve::v1::AccumulateStreamResponse* response) override;
  grpc::Status Report(grpc::ServerContext* context, const normserve::v1::ReportRequest* request,
                      normserve::v1::ReportResponse* response) override;
  grpc::Status Commit(grpc::ServerContext* context, const normserve::v1::CommitRequest* request,
                      normserve::v1::CommitResponse* response) override;
  grpc::Status Abort(grpc::ServerContext* context, const normserve::v1::AbortRequest* request,
                     normserve::v1::AbortResponse* response) override;
  grpc::Status ListSessions(grpc::ServerContext* context,
                            const normserve::v1::ListSessionsRequest* request,
                            normserve::v1::ListSessionsResponse* response) override;
  grpc::Status Rebase(grpc::ServerContext* context, const normserve::v1::RebaseRequest* request,
                      normserve::v1::RebaseResponse* response) override;
  grpc::Status Rollback(grpc::ServerContext* context, const normserve::v1::RollbackRequest* request,
                        normserve::v1::RollbackResponse* response) override;
  grpc::Status ExportModel(grpc::ServerContext* context,
                           const normserve::v1::ExportModelRequest* request,
                           normserve::v1::ExportModelResponse* response) override;

 private:
  TrainingManager* const manager_;
  const BearerAuth* const auth_;
};

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_TRAINING_TRAINING_SERVICE_H_
