#!/usr/bin/python3
"""Writes the checked-in seed corpora of fuzz/corpus/ (small, hand-picked inputs: valid
ones to start from and near-misses the validators must refuse). Re-run only to change
the seeds: /usr/bin/python3 fuzz/make_seeds.py <dir holding protoc --python_out of proto/>
"""
import os
import struct
import sys
import zlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, sys.argv[1])
from kserve import grpc_predict_v2_pb2 as kserve  # noqa: E402
from normserve.v1 import inference_pb2 as ns  # noqa: E402


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def predict_seeds():
    x = np.arange(48, dtype=np.float32)
    r = ns.PredictRequest()
    r.model_spec.name = "m"
    t = r.inputs.add(name="input", dtype=ns.DATA_TYPE_FP32, shape=[1, 3, 4, 4])
    t.raw_data = x.tobytes()
    r.inputs.add(name="aux", dtype=ns.DATA_TYPE_FP32, shape=[2], float_data=[1.0, 2.0])
    write("predict_request", "valid_raw", r.SerializeToString())
    r.output_filter.append("logits")
    r.output_encoding = ns.TENSOR_ENCODING_FLOAT_DATA
    write("predict_request", "valid_filter", r.SerializeToString())
    r2 = ns.PredictRequest()
    r2.inputs.add(name="input", dtype=ns.DATA_TYPE_FP32, shape=[1, 3, 4, 4],
                  float_data=list(x[:47]) + [float("nan")])
    r2.inputs.add(name="aux", dtype=ns.DATA_TYPE_FP16, shape=[2], raw_data=b"\0" * 4)
    write("predict_request", "nan_and_fp16", r2.SerializeToString())
    r3 = ns.PredictRequest()
    r3.inputs.add(name="input", dtype=ns.DATA_TYPE_FP32, shape=[2**62, 2**62, -1, 4])
    r3.output_filter.extend(["logits", "logits"])
    write("predict_request", "huge_dims_repeated_output", r3.SerializeToString())


def kserve_seeds():
    x = np.arange(48, dtype=np.float32)
    r = kserve.ModelInferRequest(model_name="m", model_version="1")
    r.inputs.add(name="input", datatype="FP32", shape=[1, 3, 4, 4])
    r.inputs.add(name="aux", datatype="FP32", shape=[2])
    r.raw_input_contents.extend([x.tobytes(), np.ones(2, np.float32).tobytes()])
    write("kserve_infer", "valid_raw", r.SerializeToString())
    r2 = kserve.ModelInferRequest(model_name="m", model_version="")
    t = r2.inputs.add(name="input", datatype="FP32", shape=[1, 3, 4, 4])
    t.contents.fp32_contents.extend(x.tolist())
    t2 = r2.inputs.add(name="aux", datatype="INT64", shape=[2])
    t2.contents.int64_contents.extend([1, 2])
    r2.outputs.add(name="features")
    write("kserve_infer", "typed_and_int64", r2.SerializeToString())
    r3 = kserve.ModelInferRequest(model_name="m", model_version=" 1")
    r3.inputs.add(name="input", datatype="FP32", shape=[1, 3, 4, 4])
    r3.raw_input_contents.extend([b"\0" * 7, b"extra"])
    write("kserve_infer", "bad_version_short_raw", r3.SerializeToString())


def config_seeds():
    write("model_config", "full.json",
          '{"name": "m", "platform": "onnx", "max_batch_size": 64, "intra_op_threads": 2,\n'
          ' "precompile_batch_sizes": [1, 8], "allow_non_finite": false,\n'
          ' "version_policy": {"specific": {"versions": [1, 3]}}, "labels": ["a", "b"],\n'
          ' "description": "d"}\n')
    write("model_config", "latest.json", '{"version_policy": {"latest": {"num_versions": 2}}}')
    write("model_config", "all.json", '{"version_policy": {"all": {}}, "max_batch_size": "8"}')
    write("model_config", "bad.json", '{"platform": "tensorrt", "max_batch_size": -1, "x": [}')


def record(request_id, tensors):
    payload = struct.pack("<I", len(request_id)) + request_id + struct.pack("<I", len(tensors))
    for t in tensors:
        payload += struct.pack("<I", t.ndim) + struct.pack(f"<{t.ndim}q", *t.shape)
        payload += t.astype("<f4").tobytes()
    return payload


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def frame(payload):
    return struct.pack("<II", len(payload), crc32c(payload)) + payload


def sample_log_seeds():
    a = record(b"req-1", [np.ones((1, 3, 2, 2), np.float32)])
    b = record(b"req-2", [np.zeros((2, 3), np.float32), np.arange(4, dtype=np.float32)])
    write("sample_log", "two_records", frame(a) + frame(b))
    write("sample_log", "torn_tail", frame(a) + frame(b)[:-3])
    write("sample_log", "bad_crc", frame(a)[:4] + b"\0\0\0\0" + a)
    write("sample_log", "payload_only", b)


def onnx_seeds():
    def save(name, nodes, inputs, outputs, inits=(), opset=13):
        g = helper.make_graph(nodes, name, inputs, outputs, list(inits))
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 7
        write("onnx_compile", name + ".onnx", m.SerializeToString())

    f = TensorProto.FLOAT
    vi = helper.make_tensor_value_info
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    bn = [numpy_helper.from_array(v.astype(np.float32), n) for v, n in
          [(np.ones(4), "s"), (np.zeros(4), "b"), (np.zeros(4), "m"), (np.ones(4), "v")]]
    save("conv_bn_relu",
         [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
          helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"]),
          helper.make_node("Relu", ["n"], ["y"])],
         [vi("x", f, [1, 3, 8, 8])], [vi("y", f, [1, 4, 8, 8])], [w] + bn)
    save("relu", [helper.make_node("Relu", ["x"], ["y"])],
         [vi("x", f, ["N", 4, 4, 4])], [vi("y", f, ["N", 4, 4, 4])])
    wg = numpy_helper.from_array(rng.standard_normal((10, 16)).astype(np.float32), "wg")
    save("pool_gemm_softmax",
         [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
          helper.make_node("Flatten", ["p"], ["fl"]),
          helper.make_node("Gemm", ["fl", "wg"], ["g"], transB=1),
          helper.make_node("Softmax", ["g"], ["y"], axis=1)],
         [vi("x", f, [1, 16, 4, 4])], [vi("y", f, [1, 10])], [wg])
    gs = numpy_helper.from_array(np.ones(8, np.float32), "gs")
    gb = numpy_helper.from_array(np.zeros(8, np.float32), "gb")
    save("instance_norm_add",
         [helper.make_node("InstanceNormalization", ["x", "gs", "gb"], ["i"]),
          helper.make_node("Add", ["i", "x"], ["y"])],
         [vi("x", f, [1, 8, 4, 4])], [vi("y", f, [1, 8, 4, 4])], [gs, gb])


predict_seeds()
kserve_seeds()
config_seeds()
sample_log_seeds()
onnx_seeds()
