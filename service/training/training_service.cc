// Thin TrainingService handlers.
#include "service/training/training_service.h"

#include "absl/strings/str_cat.h"
#include "service/normserve_conversion.h"
#include "service/status_util.h"
#include "service/training/training_conversion.h"

namespace normserve {
namespace {
namespace v1 = ::normserve::v1;
}  // namespace

#define NS_AUTHENTICATE(context)                       \
  do {                                                 \
    absl::Status ns_auth_ = auth_->Check(*(context));  \
    if (!ns_auth_.ok()) return ToGrpcStatus(ns_auth_); \
  } while (0)

grpc::Status TrainingServiceImpl::StartSession(grpc::ServerContext* context,
                                               const v1::StartSessionRequest* request,
                                               v1::StartSessionResponse* response) {
  NS_AUTHENTICATE(context);
  absl::StatusOr<StartedSession> s =
      manager_->StartSession(request->model_spec().name(), request->model_spec().version(),
                             OptionsFromProto(request->options()), request->session_id());
  if (!s.ok()) return ToGrpcStatus(s.status());
  response->set_session_id(s->id);
  response->mutable_base()->set_name(s->model);
  response->mutable_base()->set_version(s->base_version);
  for (const BnLayerInfo& l : s->layers) BnLayerToProto(l, response->add_layers());
  return grpc::Status::OK;
}

grpc::Status TrainingServiceImpl::Accumulate(grpc::ServerContext* context,
                                             const v1::AccumulateRequest* request,
                                             v1::AccumulateResponse* response) {
  NS_AUTHENTICATE(context);
  absl::StatusOr<AccumulateOutcome> r =
      manager_->Accumulate(request->session_id(), request->request_id(), TrainingInputs(*request));
  if (!r.ok()) return ToGrpcStatus(r.status());
  response->set_duplicate(r->duplicate);
  response->set_requests_accepted(r->requests_accepted);
  return grpc::Status::OK;
}

grpc::Status TrainingServiceImpl::AccumulateStream(
    grpc::ServerContext* context, grpc::ServerReader<v1::AccumulateRequest>* reader,
    v1::AccumulateStreamResponse* response) {
  NS_AUTHENTICATE(context);
  v1::AccumulateRequest request;
  int64_t index = 0;
  while (reader->Read(&request)) {
    absl::StatusOr<AccumulateOutcome> r =
        manager_->Accumulate(request.session_id(), request.request_id(), TrainingInputs(request));
    if (!r.ok()) {
      // Messages before this one are applied and durable; the client resends from here
      // (request ids make resending the whole stream safe too).
      return ToGrpcStatus(absl::Status(
          r.status().code(), absl::StrCat("stream message ", index, " (request_id \"",
                                          request.request_id(), "\"): ", r.status().message())));
    }
    if (r->duplicate) {
      response->set_duplicates(response->duplicates() + 1);
    } else {
      response->set_accepted(response->accepted() + 1);
    }
    response->set_requests_accepted(r->requests_accepted);
    ++index;
  }
  return grpc::Status::OK;
}

grpc::Status TrainingServiceImpl::Report(grpc::ServerContext* context,
                                         const v1::ReportRequest* request,
                                         v1::ReportResponse* response) {
  NS_AUTHENTICATE(context);
  if (request->progress_only()) {
    absl::StatusOr<ReplayProgress> p = manager_->Progress(request->session_id());
    if (!p.ok()) return ToGrpcStatus(p.status());
    response->set_session_id(request->session_id());
    ProgressToProto(*p, absl::Now(), response->mutable_progress());
    return grpc::Status::OK;
  }
  absl::StatusOr<SessionSummary> s = manager_->Report(request->session_id(), request->exact());
  if (!s.ok()) return ToGrpcStatus(s.status());
  SummaryToReport(*s, request->per_channel(), response);
  if (absl::StatusOr<ReplayProgress> p = manager_->Progress(request->session_id()); p.ok()) {
    ProgressToProto(*p, absl::Now(), response->mutable_progress());
  }
  return grpc::Status::OK;
}

grpc::Status TrainingServiceImpl::Commit(grpc::ServerContext* context,
                                         const v1::CommitRequest* request,
                                         v1::CommitResponse* response) {
  NS_AUTHENTICATE(context);
  absl::StatusOr<SessionSummary> s =
      manager_->Commit(request->session_id(), request->force(), request->precision());
  if (!s.ok()) return ToGrpcStatus(s.status());
  response->mutable_published()->set_name(s->config.model);
  response->mutable_published()->set_version(s->config.published_version);
  SummaryToReport(*s, /*per_channel=*/false, response->mutable_report());
  return grpc::Status::OK;
}

grpc::Status TrainingServiceImpl::Abort(grpc::ServerContext* context,
                                        const v1::AbortRequest* request, v1::AbortResponse*) {
  NS_AUTHENTICATE(context);
  return ToGrpcStatus(manager_->Abort(request->session_id()));
}

grpc::Status TrainingServiceImpl::ListSessions(grpc::ServerContext* context,
                                               const v1::ListSessionsRequest*,
                                               v1::ListSessionsResponse* response) {
  NS_AUTHENTICATE(context);
  for (const SessionListing& l : manager_->List()) {
    v1::SessionSummary* s = response->add_sessions();
    s->set_session_id(l.id);
    s->mutable_base()->set_name(l.model);
    s->mutable_base()->set_version(l.base_version);
    s->set_requests_accepted(l.requests_accepted);
    s->set_state(l.state);
  }
  return grpc::Status::OK;
}

grpc::Status TrainingServiceImpl::Rebase(grpc::ServerContext* context,
                                         const v1::RebaseRequest* request,
                                         v1::RebaseResponse* response) {
  NS_AUTHENTICATE(context);
  absl::StatusOr<int64_t> v = manager_->Rebase(request->session_id());
  if (!v.ok()) return ToGrpcStatus(v.status());
  absl::StatusOr<SessionSummary> s = manager_->Report(request->session_id(), false);
  if (s.ok()) response->mutable_base()->set_name(s->config.model);
  response->mutable_base()->set_version(*v);
  return grpc::Status::OK;
}

grpc::Status TrainingServiceImpl::Rollback(grpc::ServerContext* context,
                                           const v1::RollbackRequest* request,
                                           v1::RollbackResponse* response) {
  NS_AUTHENTICATE(context);
  absl::StatusOr<int64_t> v =
      manager_->Rollback(request->model_spec().name(), request->model_spec().version());
  if (!v.ok()) return ToGrpcStatus(v.status());
  response->mutable_published()->set_name(request->model_spec().name());
  response->mutable_published()->set_version(*v);
  return grpc::Status::OK;
}

grpc::Status TrainingServiceImpl::ExportModel(grpc::ServerContext* context,
                                              const v1::ExportModelRequest* request,
                                              v1::ExportModelResponse* response) {
  NS_AUTHENTICATE(context);
  absl::StatusOr<std::pair<int64_t, std::string>> r =
      manager_->Export(request->model_spec().name(), request->model_spec().version());
  if (!r.ok()) return ToGrpcStatus(r.status());
  response->mutable_model_spec()->set_name(request->model_spec().name());
  response->mutable_model_spec()->set_version(r->first);
  response->set_onnx(std::move(r->second));
  return grpc::Status::OK;
}

}  // namespace normserve
