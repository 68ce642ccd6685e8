"""``TritonBackend``: the classifier scored by a Triton Inference Server, behind ``ScoringBackend``.

    spaguard triton-repo --out repo --backend python && make triton-serve TRITON_GRPC_PORT=8001
    spaguard serve --guard-backend triton --triton-url 127.0.0.1:8001

Contract
--------
* Built by ``models.backends.load_backend("triton", artifact, triton_url=...)``; ``score`` follows
  ``models.contract.ScoringBackend`` like the in-process backends: the gateway featurizes (OCR, then the
  tokenizer: where OCR runs and why is in ``models.triton_repo``), Triton runs the graph that
  ``spaguard triton-repo`` put in its repository, and the artifact's calibration turns the logits into
  verdicts here (``verdicts``, the function the door passes in: ``models.backends.verdicts_from_logits``).
  The service's batching, timeouts, fail policy and metrics apply unchanged.
* URL: ``HOST:PORT`` or ``grpc://HOST:PORT`` (gRPC, the default) or ``http://HOST:PORT`` (Triton's HTTP/REST).
* The token axis is padded up to a power of two (``SEQ_BUCKETS``, at most the artifact's ``max_length``):
  Triton's dynamic batcher joins only requests of equal shape, and few distinct lengths let requests
  from concurrent batches (and other gateway replicas) share one model execution. Padding carries
  attention mask 0, so logits do not change (parity test: within 1e-3 of in-process ONNX).
* Nothing contacts Triton at construction, so a guard may start before its Triton does. The first call
  that reaches the model checks its ``spaguard.key`` parameter against this artifact (fp32 or int8
  export) and raises ``ArtifactMismatchError`` on a repository built from another classifier.
* ``health()`` asks Triton (server live, model ready, key checked; ``health_timeout_s``); a Triton that is
  down makes it False, so ``/health`` answers 503 and readiness drops, and it turns True again once
  Triton is back, without a gateway restart. ``score`` raises on any transport error or deadline
  (``timeout_s``); the guard's fail policy decides what the request gets.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.artifact import ArtifactMismatchError, Calibration, check_card_matches, read_artifact, runtime_card
from models.contract import GuardInput, Verdict, check_batch
from models.export_onnx import artifact_key
from models.featurize import Featurizer
from models.ocr import get_reader
from models.ocr_config import OcrConfig
from models.onnx_graph import OUTPUT_NAMES
from models.triton_repo import MODEL_NAME

SEQ_MIN = 16
"""Shortest padded token axis; then powers of two up to the artifact's ``max_length``."""
VerdictFn = Callable[[Sequence[GuardInput], dict[str, Any], Calibration, Sequence[str], Sequence[str]], list[Verdict]]


def seq_bucket(length: int, max_length: int) -> int:
    """The padded token length for ``length``: the next power of two ≥ ``SEQ_MIN``, capped at ``max_length``."""
    width = SEQ_MIN
    while width < length:
        width *= 2
    return max(length, min(width, max_length))


def _parse_url(url: str) -> tuple[str, str]:
    """(protocol, host:port) of a ``--triton-url``."""
    for scheme in ("grpc", "http"):
        if url.startswith(f"{scheme}://"):
            return scheme, url[len(scheme) + 3:].rstrip("/")
    if "://" in url:
        raise ValueError(f"--triton-url {url!r}: use HOST:PORT, grpc://HOST:PORT or http://HOST:PORT")
    return "grpc", url.rstrip("/")


class TritonBackend:
    """The classifier on a Triton server (see module docstring)."""

    name = "triton"

    def __init__(self, artifact: str | Path, url: str, *, verdicts: VerdictFn, model_name: str = MODEL_NAME,
                 timeout_s: float = 5.0, health_timeout_s: float = 2.0, max_batch_size: int = 32,
                 threads: int | None = None) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be ≥ 1, got {max_batch_size}")
        folder = Path(artifact)
        config, card, self.calibration = read_artifact(folder)
        check_card_matches(card, runtime_card(config))
        self.node_keys = list(config.node_keys)
        self.max_batch_size = max_batch_size
        self.featurizer = Featurizer(config, ocr=None if threads is None else get_reader(OcrConfig(threads=int(threads))))
        self.protocol, self.address = _parse_url(url)
        self.model_name = model_name
        self.timeout_s, self.health_timeout_s = float(timeout_s), float(health_timeout_s)
        self._verdicts = verdicts
        self._keys = {artifact_key(folder, False), artifact_key(folder, True)}  # the fp32 or int8 export
        self._verified = False
        self._local = threading.local()  # one client per thread: the HTTP client is not thread-safe
        if self.protocol == "grpc":
            import tritonclient.grpc as client_module
        else:
            import tritonclient.http as client_module
        self._tc = client_module

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "grpc":
                client = self._tc.InferenceServerClient(self.address)
            else:
                client = self._tc.InferenceServerClient(self.address, connection_timeout=self.timeout_s,
                                                        network_timeout=self.timeout_s)
            self._local.client = client
        return client

    def _timeout_kw(self, seconds: float) -> dict[str, float]:
        # The gRPC client takes a per-call deadline; the HTTP client's timeouts are set on the client.
        return {"client_timeout": seconds} if self.protocol == "grpc" else {}

    def _verify(self, client: Any, seconds: float) -> None:
        if self._verified:
            return
        if self.protocol == "grpc":
            cfg = client.get_model_config(self.model_name, as_json=True, client_timeout=seconds)["config"]
        else:
            cfg = client.get_model_config(self.model_name)
        key = cfg.get("parameters", {}).get("spaguard.key", {}).get("string_value")
        if key not in self._keys:
            raise ArtifactMismatchError(
                f"Triton model {self.model_name!r} at {self.address} was not exported from this classifier "
                f"(spaguard.key {key!r}); rewrite its repository with `spaguard triton-repo`")
        self._verified = True

    def health(self) -> bool:
        """True when Triton is live, the model is ready and it was exported from this artifact."""
        try:
            client = self._client()
            kw = self._timeout_kw(self.health_timeout_s)
            ok = client.is_server_live(**kw) and client.is_model_ready(self.model_name, **kw)
            if ok:
                self._verify(client, self.health_timeout_s)
            return bool(ok)
        except Exception:  # noqa: BLE001 - unreachable, refused, deadline, wrong model: all mean "cannot score"
            self._local.client = None  # reconnect next time (a restarted server)
            return False

    def score(self, batch: list[GuardInput]) -> list[Verdict]:
        """One verdict per item, in order (``ScoringBackend``); raises when Triton cannot answer."""
        if not batch:
            return []
        check_batch(batch, self.max_batch_size)
        features, ocr_texts = self.featurizer(batch)  # bad inputs (e.g. undecodable images) raise here
        try:
            logits = self._logits(features)
        except Exception:
            self._local.client = None
            raise
        return self._verdicts(batch, logits, self.calibration, self.node_keys, ocr_texts)

    def _logits(self, features: dict[str, Any]) -> dict[str, np.ndarray]:
        client = self._client()
        self._verify(client, self.timeout_s)
        width = seq_bucket(int(features["input_ids"].shape[1]), self.featurizer.max_length)
        inputs = []
        for name, tensor in features.items():
            arr = tensor.numpy()
            if arr.ndim == 2 and arr.shape[1] < width:  # (B, T) token tensors -> (B, width)
                arr = np.pad(arr, [(0, 0), (0, width - arr.shape[1])])
            arr = np.ascontiguousarray(arr)
            inp = self._tc.InferInput(name, list(arr.shape), "INT64" if arr.dtype == np.int64 else "FP32")
            inp.set_data_from_numpy(arr)
            inputs.append(inp)
        outputs = [self._tc.InferRequestedOutput(name) for name in OUTPUT_NAMES]
        result = client.infer(self.model_name, inputs, outputs=outputs, **self._timeout_kw(self.timeout_s))
        batch = int(features["input_ids"].shape[0])
        out = {name: result.as_numpy(name) for name in OUTPUT_NAMES}
        # Triton's client-side dims of the (B,) heads are (B, 1) (config.pbtxt reshape); nodes (B, K).
        return {"prompt": out["prompt"].reshape(batch), "response": out["response"].reshape(batch),
                "nodes": out["nodes"].reshape(batch, -1)}
