// Training wire conversions; the handlers only call these.
#include "service/training/training_conversion.h"

#include "service/normserve_conversion.h"

namespace normserve {

std::vector<RequestTensor> TrainingInputs(const v1::AccumulateRequest& request) {
  std::vector<RequestTensor> out;
  for (const v1::Tensor& in : request.inputs()) out.push_back(ProtoToRequestTensor(in));
  return out;
}

void ProgressToProto(const ReplayProgress& p, absl::Time now, v1::ReplayProgress* out) {
  out->set_running(p.running);
  out->set_operation(p.operation);
  out->set_waves_done(p.calibration.waves_done);
  out->set_waves_total(p.calibration.waves_total);
  out->set_samples_done(p.calibration.samples_done);
  out->set_samples_total(p.calibration.samples_total);
  if (p.started != absl::InfinitePast()) {
    out->set_elapsed_seconds(absl::ToDoubleSeconds((p.running ? now : p.finished) - p.started));
  }
}

void SummaryToReport(const SessionSummary& s, bool per_channel, v1::ReportResponse* out) {
  out->set_session_id(s.config.id);
  out->mutable_base()->set_name(s.config.model);
  out->mutable_base()->set_version(s.config.base_version);
  out->set_requests_accepted(s.requests_accepted);
  out->set_requests_refused(s.requests_refused);
  out->set_samples_kept(s.samples_kept);
  out->set_exact(s.exact);
  out->set_gate_passed(s.gate_passed);
  if (s.int8.has_value()) {
    v1::Int8Report* q = out->mutable_int8();
    q->set_calibration_samples(s.int8->calibration_samples);
    q->set_held_out_samples(s.int8->held_out_samples);
    q->set_quantized_layers(s.int8->quantized_layers);
    q->set_top1_agreement(s.int8->top1_agreement);
    q->set_max_relative_logit_error(s.int8->max_relative_logit_error);
    q->set_gate_passed(s.int8->gate_passed);
    q->set_min_top1_agreement(s.int8->gate.min_top1_agreement);
    q->set_max_relative_logit_error_limit(s.int8->gate.max_relative_logit_error);
  }
  for (const LayerSummary& l : s.layers) {
    v1::LayerReport* r = out->add_layers();
    r->set_name(l.info.name);
    r->set_channels(l.info.channels);
    r->set_values_per_request(l.info.values_per_channel);
    r->set_reliability(ToReliability(l.info.reliability));
    r->set_requests(l.requests);
    r->set_min_values_per_channel(l.values_per_channel);
    r->set_max_relative_sem(l.max_relative_sem);
    r->set_mean_relative_sem(l.mean_relative_sem);
    r->set_drift_mean_shift(l.drift.mean_shift);
    r->set_drift_log_var_ratio(l.drift.log_var_ratio);
    r->set_drift_kl(l.drift.kl);
    r->set_gate_passed(l.gate_passed);
    r->set_gate_reason(l.gate_reason);
    if (!per_channel) continue;
    for (size_t c = 0; c < l.mean.size(); ++c) {
      v1::ChannelReport* ch = r->add_channels_detail();
      ch->set_mean(l.mean[c]);
      ch->set_variance(l.variance[c]);
      ch->set_standard_error(l.standard_error[c]);
      ch->set_relative_standard_error(l.relative_standard_error[c]);
      if (c < l.frozen.mean.size()) ch->set_frozen_mean(l.frozen.mean[c]);
      if (c < l.frozen.var.size()) ch->set_frozen_variance(l.frozen.var[c]);
    }
  }
}

SessionRequestOptions OptionsFromProto(const v1::SessionOptions& o) {
  SessionRequestOptions out;
  out.min_values_per_channel = o.min_values_per_channel();
  out.max_relative_sem = o.max_relative_sem();
  out.prior_strength = o.prior_strength();
  out.max_samples = o.max_samples();
  return out;
}

}  // namespace normserve
