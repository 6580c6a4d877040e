"""normserve's Python client: one Client per server, thin wrappers over the generated stubs
(normserve.v1 InferenceService and TrainingService) that take and return numpy arrays."""

import hashlib
import os
from dataclasses import dataclass

import grpc
import numpy as np

from normserve.v1 import inference_pb2 as _inf
from normserve.v1 import inference_pb2_grpc as _inf_grpc
from normserve.v1 import training_pb2 as _tr
from normserve.v1 import training_pb2_grpc as _tr_grpc



class NormserveError(Exception):
    """A call failed: `code` is the grpc.StatusCode, `details` the server's message."""

    def __init__(self, code, details):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


@dataclass
class AccumulateResult:
    duplicate: bool  # this request id had already been counted (a retry)
    requests_accepted: int  # the session's total after the call


def content_request_id(x):
    """The request id of an array derived from its content (dtype, shape, bytes): sending
    the same array again, e.g. after a crash, is acknowledged as a duplicate, never counted
    twice."""
    x = np.ascontiguousarray(x)
    h = hashlib.sha256()
    h.update(f"{x.dtype.str}{list(x.shape)}".encode())
    h.update(x.tobytes())
    return "sha256:" + h.hexdigest()


def _tensor(name, x):
    x = np.ascontiguousarray(x, dtype="<f4")
    return _inf.Tensor(name=name, dtype=_inf.DATA_TYPE_FP32, shape=list(x.shape),
                       raw_data=x.tobytes())


def _array(t):
    if t.raw_data:
        return np.frombuffer(t.raw_data, dtype="<f4").reshape(list(t.shape)).copy()
    return np.asarray(t.float_data, dtype=np.float32).reshape(list(t.shape))


class Client:
    """Connects to normserve's serving port and, for the session workflow, to its training
    endpoint. The training token comes from `token`, else `token_file`, else the
    NORMSERVE_TRAINING_TOKEN environment variable (as normserve-cli). With
    `root_certificates` (PEM bytes) both channels use TLS; `client_cert`/`client_key` (PEM)
    authenticate to a training endpoint that takes client certificates."""

    def __init__(self, server="localhost:8001", training_server="localhost:8003", token=None,
                 token_file=None, root_certificates=None, client_cert=None, client_key=None,
                 timeout=30.0):
        options = [("grpc.max_receive_message_length", -1),
                   ("grpc.max_send_message_length", -1)]
        if root_certificates is not None:
            creds = grpc.ssl_channel_credentials(root_certificates, client_key, client_cert)
            self._serving = grpc.secure_channel(server, creds, options)
            self._training = grpc.secure_channel(training_server, creds, options)
        else:
            self._serving = grpc.insecure_channel(server, options)
            self._training = grpc.insecure_channel(training_server, options)
        if token is None and token_file is not None:
            with open(token_file) as f:
                token = f.read().strip()
            self._token_source = f"token_file={token_file}"
        elif token is None:
            token = os.environ.get("NORMSERVE_TRAINING_TOKEN", "").strip() or None
            self._token_source = "NORMSERVE_TRAINING_TOKEN"
        else:
            self._token_source = "token="
        self._auth = (("authorization", f"Bearer {token}"),) if token else ()
        self._has_token = bool(token)
        self.timeout = timeout
        self._inference = _inf_grpc.InferenceServiceStub(self._serving)
        self._trainer = _tr_grpc.TrainingServiceStub(self._training)
        self._metadata = {}

    def close(self):
        self._serving.close()
        self._training.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- calls ----

    def _call(self, method, request, training=False):
        try:
            if training:
                return method(request, metadata=self._auth, timeout=self.timeout)
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            details = e.details()
            if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                details += (f" (the token from {self._token_source} was refused)"
                            if self._has_token else
                            " (no token given: pass token= or token_file=, or set "
                            "NORMSERVE_TRAINING_TOKEN)")
            raise NormserveError(e.code(), details) from None

    # ---- serving ----

    def metadata(self, model, version=0):
        """GetModelMetadataResponse of `model` (cached per version)."""
        key = (model, version)
        if key not in self._metadata:
            self._metadata[key] = self._call(self._inference.GetModelMetadata,
                                             _inf.GetModelMetadataRequest(
                                                 model_spec=_inf.ModelSpec(name=model,
                                                                           version=version)))
        return self._metadata[key]

    def predict(self, model, inputs, version=0, return_version=False):
        """Runs `inputs` (an array with the batch dimension first, or {name: array}) and
        returns the output array (or {name: array} for several outputs). float32 inputs;
        other dtypes are converted."""
        if not isinstance(inputs, dict):
            names = [t.name for t in self.metadata(model, version).inputs]
            if len(names) != 1:
                raise ValueError(f"{model} has {len(names)} inputs: pass {{name: array}}")
            inputs = {names[0]: inputs}
        response = self._call(self._inference.Predict, _inf.PredictRequest(
            model_spec=_inf.ModelSpec(name=model, version=version),
            inputs=[_tensor(n, x) for n, x in inputs.items()]))
        outputs = {t.name: _array(t) for t in response.outputs}
        result = next(iter(outputs.values())) if len(outputs) == 1 else outputs
        return (result, response.model_spec.version) if return_version else result

    def predict_classes(self, model, x, version=0, batch_size=64):
        """argmax of the output over batches of at most `batch_size` rows."""
        out = [self.predict(model, x[i:i + batch_size], version).argmax(axis=1)
               for i in range(0, len(x), batch_size)]
        return np.concatenate(out)

    # ---- training sessions ----

    def start_session(self, model, version=0, min_values_per_channel=0, max_relative_sem=0.0,
                      prior_strength=0.0, max_samples=0, session_id=""):
        """Opens a session on a serving version; returns a Session."""
        r = self._call(self._trainer.StartSession, _tr.StartSessionRequest(
            model_spec=_inf.ModelSpec(name=model, version=version),
            options=_tr.SessionOptions(min_values_per_channel=min_values_per_channel,
                                       max_relative_sem=max_relative_sem,
                                       prior_strength=prior_strength, max_samples=max_samples),
            session_id=session_id), training=True)
        return Session(self, r.session_id, r.base.name, r.base.version, list(r.layers))

    def session(self, session_id):
        """A Session handle for an existing session (e.g. after a restart of the caller)."""
        for s in self.sessions():
            if s.session_id == session_id:
                return Session(self, s.session_id, s.base.name, s.base.version, [])
        raise NormserveError(grpc.StatusCode.NOT_FOUND, f"session {session_id!r} not found")

    def accumulate(self, session_id, inputs, request_id=None, input_name=None, model=None):
        """One request (batch 1, or batch N counted as N requests). The request id defaults
        to the content hash, so repeating a call counts it once."""
        if request_id is None:
            request_id = content_request_id(inputs)
        if input_name is None:
            input_name = self.metadata(model).inputs[0].name if model else "input"
        r = self._call(self._trainer.Accumulate, _tr.AccumulateRequest(
            session_id=session_id, request_id=request_id,
            inputs=[_tensor(input_name, inputs)]), training=True)
        return AccumulateResult(r.duplicate, r.requests_accepted)

    def report(self, session_id, per_channel=False, exact=False):
        """ReportResponse: per layer values per channel, relative SEM, drift, gate."""
        return self._call(self._trainer.Report, _tr.ReportRequest(
            session_id=session_id, per_channel=per_channel, exact=exact), training=True)

    def progress(self, session_id):
        """ReplayProgress of the session's last layer-wise replay (commit or exact report):
        waves and samples done; answered at once, also while that replay runs."""
        return self._call(self._trainer.Report, _tr.ReportRequest(
            session_id=session_id, progress_only=True), training=True).progress

    def commit(self, session_id, force=False, precision=""):
        """Publishes the exact layer-wise statistics as a new version; returns it. A failed
        quality gate raises NormserveError(FAILED_PRECONDITION) naming the layers.
        precision="int8" publishes a QDQ version calibrated on the session's samples."""
        r = self._call(self._trainer.Commit,
                       _tr.CommitRequest(session_id=session_id, force=force, precision=precision),
                       training=True)
        return r.published.version

    def abort(self, session_id):
        self._call(self._trainer.Abort, _tr.AbortRequest(session_id=session_id), training=True)

    def sessions(self):
        return list(self._call(self._trainer.ListSessions, _tr.ListSessionsRequest(),
                               training=True).sessions)

    def rebase(self, session_id):
        return self._call(self._trainer.Rebase, _tr.RebaseRequest(session_id=session_id),
                          training=True).base.version

    def rollback(self, model, version):
        """Publishes `version`'s statistics again as a new version; returns the new one."""
        return self._call(self._trainer.Rollback, _tr.RollbackRequest(
            model_spec=_inf.ModelSpec(name=model, version=version)), training=True
        ).published.version

    def export(self, model, version=0):
        """The ONNX bytes of a version (BN initializers hold its statistics)."""
        return self._call(self._trainer.ExportModel, _tr.ExportModelRequest(
            model_spec=_inf.ModelSpec(name=model, version=version)), training=True).onnx


class Session:
    """A training session: accumulate samples, read the report, commit or abort."""

    def __init__(self, client, session_id, model, base_version, layers):
        self.client = client
        self.id = session_id
        self.model = model
        self.base_version = base_version
        self.layers = layers
        self._input = client.metadata(model).inputs[0].name

    def accumulate(self, x, request_id=None):
        return self.client.accumulate(self.id, x, request_id, input_name=self._input)

    def accumulate_each(self, samples):
        """Each row of `samples` as one batch-1 request; returns (accepted, duplicates)."""
        accepted = duplicates = 0
        for i in range(len(samples)):
            r = self.accumulate(samples[i:i + 1])
            duplicates += r.duplicate
            accepted += not r.duplicate
        return accepted, duplicates

    def report(self, per_channel=False, exact=False):
        return self.client.report(self.id, per_channel, exact)

    def progress(self):
        return self.client.progress(self.id)

    def commit(self, force=False, precision=""):
        return self.client.commit(self.id, force, precision)

    def abort(self):
        self.client.abort(self.id)

    def rebase(self):
        self.base_version = self.client.rebase(self.id)
        return self.base_version
