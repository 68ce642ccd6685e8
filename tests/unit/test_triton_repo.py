"""``spaguard triton-repo``'s config.pbtxt, parsed with Triton's own ``ModelConfig`` protobuf (tritonclient
ships it), and ``TritonBackend``'s pure helpers. A real Triton serves the repository in
tests/integration/test_triton_backend.py."""

from __future__ import annotations

import pytest

from models.triton_repo import config_pbtxt

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient (dev extra)")
text_format = pytest.importorskip("google.protobuf.text_format")

INPUTS = [{"name": n, "data_type": "TYPE_INT64", "dims": [-1]} for n in ("input_ids", "attention_mask")]
INPUTS.append({"name": "response_mask", "data_type": "TYPE_FP32", "dims": [-1]})
OUTPUTS = [{"name": "prompt", "data_type": "TYPE_FP32", "dims": []},
           {"name": "response", "data_type": "TYPE_FP32", "dims": []},
           {"name": "nodes", "data_type": "TYPE_FP32", "dims": [56]}]


def _parse(text: str):
    return text_format.Parse(text, model_config_pb2.ModelConfig())  # raises on an unknown field or bad syntax


def test_config_is_a_valid_triton_model_config() -> None:
    cfg = _parse(config_pbtxt(INPUTS, OUTPUTS, key="k123", kind="gpu", instances=2, max_batch_size=64,
                              preferred=(8, 16, 32, 128), max_queue_delay_us=1500, threads=2))
    assert cfg.backend == "onnxruntime" and cfg.max_batch_size == 64
    assert [i.name for i in cfg.input] == ["input_ids", "attention_mask", "response_mask"]
    assert list(cfg.input[0].dims) == [-1] and cfg.input[0].data_type == model_config_pb2.TYPE_INT64
    prompt = cfg.output[0]
    assert list(prompt.dims) == [1] and prompt.HasField("reshape") and list(prompt.reshape.shape) == []
    assert list(cfg.output[2].dims) == [56] and not cfg.output[2].HasField("reshape")
    assert list(cfg.dynamic_batching.preferred_batch_size) == [8, 16, 32]  # 128 > max_batch_size dropped
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 1500
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert cfg.instance_group[0].count == 2
    assert cfg.parameters["spaguard.key"].string_value == "k123"
    assert cfg.parameters["intra_op_thread_count"].string_value == "2"


def test_python_backend_and_cpu_kind() -> None:
    cfg = _parse(config_pbtxt(INPUTS, OUTPUTS, key="k", backend="python"))
    assert cfg.backend == "python"
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert "intra_op_thread_count" not in cfg.parameters


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"backend": "tensorrt"}, "backend"), ({"kind": "tpu"}, "kind"), ({"instances": 0}, "≥ 1"),
])
def test_bad_options_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_pbtxt(INPUTS, OUTPUTS, key="k", **kwargs)


def test_seq_buckets_and_urls() -> None:
    from models.triton_backend import _parse_url, seq_bucket

    assert [seq_bucket(n, 128) for n in (1, 16, 17, 40, 64, 100, 128)] == [16, 16, 32, 64, 64, 128, 128]
    assert seq_bucket(200, 128) == 200  # never shorter than the tensor (the featurizer caps at max_length)
    assert _parse_url("127.0.0.1:8001") == ("grpc", "127.0.0.1:8001")
    assert _parse_url("grpc://h:1") == ("grpc", "h:1")
    assert _parse_url("http://h:8000/") == ("http", "h:8000")
    with pytest.raises(ValueError, match="HOST:PORT"):
        _parse_url("https://h:1")
