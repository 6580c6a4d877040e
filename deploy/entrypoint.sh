#!/bin/sh
# Container entrypoint: turns NORMSERVE_<FLAG> environment variables into normserve's
# --<flag> command-line flags, then execs the server (PID 1 gets SIGTERM and drains).
# Arguments given to the container are appended, so they override the environment.
#
#   NORMSERVE_HOST NORMSERVE_PORT NORMSERVE_METRICS_PORT NORMSERVE_MODEL_REPOSITORY
#   NORMSERVE_WORKERS NORMSERVE_INTRA_OP_THREADS NORMSERVE_MAX_QUEUE
#   NORMSERVE_MAX_MESSAGE_BYTES NORMSERVE_ALLOW_NON_FINITE NORMSERVE_POLL_SECONDS
#   NORMSERVE_DRAIN_SECONDS NORMSERVE_TLS_CERT NORMSERVE_TLS_KEY
#   training endpoint: NORMSERVE_TRAINING_HOST (default 0.0.0.0 in the container, so a
#   pod's internal Service can reach it), NORMSERVE_TRAINING_PORT (server default 8003),
#   NORMSERVE_TRAINING_TOKEN_FILE, NORMSERVE_TRAINING_CLIENT_CA,
#   NORMSERVE_TRAINING_STATE_DIR (default $NORMSERVE_STATE_DIR/training),
#   NORMSERVE_TRAINING_MAX_SESSIONS, NORMSERVE_TRAINING_MAX_SAMPLES,
#   NORMSERVE_TRAINING_MIN_VALUES_PER_CHANNEL, NORMSERVE_TRAINING_MAX_RELATIVE_SEM,
#   NORMSERVE_LIVE_DRIFT_FRACTION. NORMSERVE_TRAINING_TOKEN is read by the server itself.
#   Without a token or client CA the server leaves the training endpoint off; setting
#   NORMSERVE_TRAINING_PORT without one is a startup error (the server's rule).
set -eu

args=""
add() {  # add FLAG ENVVAR: append --FLAG=value when the variable is set and non-empty
  eval "v=\${$2:-}"
  if [ -n "$v" ]; then
    args="$args --$1=$v"
  fi
}

for f in host port metrics_port model_repository workers cores performance_hint intra_op_threads max_queue \
         max_message_bytes allow_non_finite poll_seconds drain_seconds tls_cert tls_key \
         training_host training_port training_token_file training_client_ca \
         training_state_dir training_max_sessions training_max_samples \
         training_min_values_per_channel training_max_relative_sem live_drift_fraction; do
  add "$f" "NORMSERVE_$(echo "$f" | tr '[:lower:]' '[:upper:]')"
done
if [ -z "${NORMSERVE_TRAINING_HOST:-}" ]; then
  args="$args --training_host=0.0.0.0"
fi
if [ -z "${NORMSERVE_TRAINING_STATE_DIR:-}" ] && [ -n "${NORMSERVE_STATE_DIR:-}" ]; then
  args="$args --training_state_dir=${NORMSERVE_STATE_DIR}/training"
fi

# The training flags are accepted even by a build without the training endpoint
# (Abseil's --undefok), so one image configuration fits both.
undefok=training_host,training_port,training_token_file,training_client_ca,training_state_dir
undefok=$undefok,training_max_sessions,training_max_samples,training_min_values_per_channel
undefok=$undefok,training_max_relative_sem,live_drift_fraction

# Values are single tokens (paths, numbers, addresses); word splitting of $args is intended.
# shellcheck disable=SC2086
exec /usr/local/bin/normserve --undefok="$undefok" $args "$@"
