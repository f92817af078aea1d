"""A model served by a Triton Inference Server, as a backend: ``PoseEstimator("grpc://HOST:PORT/NAME")``.

Only ``infer`` crosses the wire: :class:`poet.runtime.PoseEstimator` letterboxes and decodes on this machine as
for a local file. What it needs to do so (input size, normalisation, layout, decoding) travels in the served
model's Triton config, as the parameter :data:`poet.modelinfo.METADATA_KEY` that ``poet-serve`` and its
``--write-repository`` put there, so a URL is all an app needs. tritonclient (the ``client`` extra) is imported
only when a URL is opened, so the base install does not need it.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np

from poet.errors import ModelError, PoetError, ServerError
from poet.extras import missing_extra
from poet.modelinfo import IMAGES, MASK, METADATA_KEY, ModelInfo
from poet.runtime.backends import check_graph_io

SCHEMES = {"grpc": 8001, "http": 8000}  # scheme -> Triton's default port
# Triton's element type names -> numpy's, for the inputs this client sends and checks.
TRITON_TYPES = {"TYPE_FP32": "float32", "TYPE_UINT8": "uint8", "TYPE_BOOL": "bool"}
WIRE_TYPES = {"float32": "FP32", "uint8": "UINT8", "bool": "BOOL"}
# Seconds the start-up questions (live, config, ready) may take when no request timeout is given.
PROBE_TIMEOUT = 10.0
_NAME = re.compile(r"[A-Za-z0-9._-]+")

T = TypeVar("T")


@dataclass(frozen=True)
class ModelURL:
    """``grpc://HOST:PORT/NAME`` taken apart; the port defaults to Triton's for the scheme."""

    scheme: str
    host: str
    port: int
    name: str

    @property
    def address(self) -> str:
        """``HOST:PORT`` as tritonclient takes it (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def server(self) -> str:
        return f"{self.scheme}://{self.address}"

    def __str__(self) -> str:
        return f"{self.server}/{self.name}"


def parse_model_url(url: str) -> ModelURL:
    """A model URL checked in full before any connection, each fault one line saying what was expected."""
    expected = "expected grpc://HOST:PORT/NAME or http://HOST:PORT/NAME"
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ModelError(f"model URL {url}: the scheme {parts.scheme!r} is not served by Triton; {expected}")
    try:
        port = parts.port or SCHEMES[parts.scheme]
    except ValueError:
        raise ModelError(f"model URL {url} has a bad port; {expected}") from None
    if not parts.hostname:
        raise ModelError(f"model URL {url} names no host; {expected}")
    name = parts.path.strip("/")
    if not name:
        raise ModelError(
            f"model URL {url} names no model: {expected} (poet-serve serves its model as 'poet' unless --name says)"
        )
    if not _NAME.fullmatch(name) or parts.query or parts.fragment:
        raise ModelError(f"model URL {url}: {name!r} is not a Triton model name (letters, digits, . _ -); {expected}")
    return ModelURL(parts.scheme, parts.hostname, port, name)


def client_module(scheme: str) -> ModuleType:
    """``tritonclient.grpc`` or ``tritonclient.http``; without them, the one line naming the client extra."""
    try:
        if scheme == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except ModuleNotFoundError as error:
        raise (missing_extra(error, "a Triton model URL", ["client"]) or error) from None
    return module


def served_model(url: ModelURL, config: dict[str, Any]) -> tuple[ModelInfo, int]:
    """The :class:`ModelInfo` and largest request batch of a served model, from its Triton config (as JSON).

    A config with ``max_batch_size`` > 0 batches on the server (Triton's dimensions then leave the batch out):
    the client sends as many images as it has, up to that size, and the server pads a fixed-batch model
    itself. With 0, the dimensions include the batch and requests carry exactly the model's own batch.
    The graph's inputs and outputs are checked against the model info, as for a local file.
    """
    parameter = (config.get("parameters") or {}).get(METADATA_KEY, {}).get("string_value")
    if parameter is None:
        raise ModelError(
            f"{url} is not a poet-edge model: its Triton config has no {METADATA_KEY!r} parameter "
            "(serve it with poet-serve, or write its repository with poet-serve --write-repository)"
        )
    try:
        info = ModelInfo.from_json(parameter)
    except ValueError as error:
        raise ModelError(f"{url}: damaged {METADATA_KEY!r} parameter in its Triton config: {error}") from None
    max_batch_size = int(config.get("max_batch_size", 0))
    if max_batch_size > 0:
        info = info.replace(batch=None, max_batch=max_batch_size)
    batch: list[int | None] = [None] if max_batch_size > 0 else []

    def shape(tensor: dict[str, Any]) -> list[int | None]:
        return batch + [None if int(dim) < 0 else int(dim) for dim in tensor.get("dims", [])]

    inputs = {
        tensor["name"]: (TRITON_TYPES.get(tensor.get("data_type", ""), tensor.get("data_type", "?")), shape(tensor))
        for tensor in config.get("input", [])
    }
    outputs = {tensor["name"]: shape(tensor) for tensor in config.get("output", [])}
    check_graph_io(str(url), info, inputs, outputs)
    return info, info.batch or info.max_batch


class TritonBackend:
    """A poet-edge model on a Triton Inference Server, at ``grpc://HOST:PORT/NAME`` or ``http://HOST:PORT/NAME``.

    Opening it asks the server whether it is live, serves ``NAME`` and has it ready, and reads the model info
    from its config; each fault is a :class:`ServerError` or :class:`ModelError` naming the URL. ``timeout``
    bounds each request in seconds (None: no bound but the server's). Each calling thread has its own client
    (tritonclient's HTTP client is not thread-safe), so concurrent calls from many threads (cameras) are safe
    and reach the server together, where its dynamic batcher can join them.
    """

    thread_safe = True

    def __init__(self, url: str, timeout: float | None = None) -> None:
        if timeout is not None and not timeout > 0:
            raise ModelError(f"the request timeout must be a positive number of seconds, got {timeout}")
        self.url = parse_model_url(url)
        self.timeout = timeout
        self._module = client_module(self.url.scheme)
        self._local = threading.local()
        client = self._client()
        probe = {"client_timeout": timeout or PROBE_TIMEOUT} if self.url.scheme == "grpc" else {}
        live = self._call(lambda: client.is_server_live(**probe), "asking whether it is live")
        if not live:
            raise ServerError(f"the Triton server at {self.url.server} is not live (it is starting or stopping)")
        config = self._call(lambda: self._config(client, probe), "reading the model's config")
        ready = self._call(lambda: client.is_model_ready(self.url.name, **probe), "asking whether the model is ready")
        if not ready:
            raise ServerError(f"model {self.url.name!r} at {self.url.server} is not ready{self._state(client)}")
        self.info, self.max_batch = served_model(self.url, config)
        self.output_names = list(self.info.output_names)

    def _client(self) -> Any:
        """This thread's client, made on first use."""
        client = getattr(self._local, "client", None)
        if client is None:
            if self.url.scheme == "grpc":
                client = self._module.InferenceServerClient(self.url.address)
            else:
                seconds = self.timeout or 60.0
                client = self._module.InferenceServerClient(
                    self.url.address, connection_timeout=seconds, network_timeout=seconds
                )
            self._local.client = client
        return client

    def _config(self, client: Any, probe: dict[str, float]) -> dict[str, Any]:
        if self.url.scheme == "grpc":
            reply: dict[str, Any] = client.get_model_config(self.url.name, as_json=True, **probe)
            return reply.get("config", reply)
        return dict(client.get_model_config(self.url.name))

    def _served(self, client: Any) -> list[dict[str, Any]] | None:
        """The server's models (name, state, reason), or None where it does not list them (poet-serve restricts
        its repository API, which could also load and unload models)."""
        try:
            if self.url.scheme == "grpc":
                index = client.get_model_repository_index(as_json=True).get("models", [])
            else:
                index = client.get_model_repository_index()
        except Exception:  # restricted, or the server went meanwhile: the caller's message stands without a list
            return None
        return [dict(model) for model in index]

    def _state(self, client: Any) -> str:
        for model in self._served(client) or []:
            if model.get("name") == self.url.name and model.get("state"):
                reason = f": {model['reason']}" if model.get("reason") else ""
                return f" (its state is {model['state']}{reason})"
        return ""

    def _unknown_model(self, client: Any) -> ServerError:
        served = self._served(client)
        if served is None:
            listed = "; this server does not list its models (poet-serve prints the name it serves when it starts)"
        elif not served:
            listed = "; it serves no models"
        else:
            names = sorted({str(model.get("name")) for model in served})
            listed = f"; it serves {', '.join(names)}"
        return ServerError(f"the Triton server at {self.url.server} has no model {self.url.name!r}{listed}")

    def _call(self, request: Callable[[], T], doing: str) -> T:
        """Run one request; any failure becomes one line naming the URL, what was being done and why."""
        try:
            return request()
        except Exception as error:  # tritonclient, grpc, gevent and sockets each raise their own types
            raise self._error(error, doing) from None

    def _error(self, error: Exception, doing: str) -> PoetError:
        text = _message(error)
        where = f"the Triton server at {self.url.server}"
        if isinstance(error, ConnectionError) or any(
            sign in text for sign in ("failed to connect", "Connection refused", "connection refused")
        ):
            return ServerError(f"no Triton server answers at {self.url.server} ({doing}): {text}")
        if isinstance(error, TimeoutError | socket.timeout) or "Deadline Exceeded" in text or "timed out" in text:
            return ServerError(f"{where} did not answer within {self.timeout or PROBE_TIMEOUT:g} s ({doing})")
        if "has no available versions" in text:
            state = self._state(self._client()) or f": {where} is loading or unloading it (stopping?)"
            return ServerError(f"model {self.url.name!r} at {self.url.server} is not ready{state} ({doing})")
        if "unknown model" in text:
            return self._unknown_model(self._client())
        return ServerError(f"{where} failed {doing} for model {self.url.name!r}: {text}")

    def infer(self, images: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        client, module = self._client(), self._module
        inputs = []
        for name, array in ((IMAGES, images), (MASK, mask)):
            tensor = module.InferInput(name, list(array.shape), WIRE_TYPES[array.dtype.name])
            tensor.set_data_from_numpy(np.ascontiguousarray(array))
            inputs.append(tensor)
        outputs = [module.InferRequestedOutput(name) for name in self.output_names]
        options = {"client_timeout": self.timeout} if self.url.scheme == "grpc" else {}
        result = self._call(lambda: client.infer(self.url.name, inputs, outputs=outputs, **options), "inference")
        return {name: result.as_numpy(name) for name in self.output_names}


def _message(error: Exception) -> str:
    """tritonclient's own message (``InferenceServerException.message()``), else the exception's text."""
    message = getattr(error, "message", None)
    text = message() if callable(message) else str(error)
    return " ".join(str(text or type(error).__name__).split())
