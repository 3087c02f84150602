"""In-test OTLP trace receivers on 127.0.0.1: gRPC ``TraceService`` and HTTP ``/v1/traces``, decoding what
arrives with ``opentelemetry-proto``; plus endpoints that refuse or hang, for fault tests."""

from __future__ import annotations

import gzip
import socket
import threading
import time
import zlib
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class _Store:
    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self._cond = threading.Condition()

    def add(self, request: Any, headers: dict[str, str]) -> None:
        with self._cond:
            self.requests.append(request)
            self.headers.append(headers)
            self._cond.notify_all()

    def spans(self) -> list[dict[str, Any]]:
        """Every span received, flattened with its resource and scope: dicts of plain values."""
        out = []
        with self._cond:
            requests = list(self.requests)
        for req in requests:
            for rs in req.resource_spans:
                resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        out.append(
                            {
                                "name": s.name,
                                "kind": s.kind,
                                "trace_id": s.trace_id.hex(),
                                "span_id": s.span_id.hex(),
                                "parent_span_id": s.parent_span_id.hex(),
                                "start": s.start_time_unix_nano,
                                "end": s.end_time_unix_nano,
                                "status": s.status.code,
                                "status_message": s.status.message,
                                "attributes": {a.key: _value(a.value) for a in s.attributes},
                                "events": [
                                    (e.name, {a.key: _value(a.value) for a in e.attributes}) for e in s.events
                                ],
                                "links": [(ln.trace_id.hex(), ln.span_id.hex()) for ln in s.links],
                                "resource": resource,
                                "scope": (ss.scope.name, ss.scope.version),
                            }
                        )
        return out

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if predicate(spans) or time.monotonic() > deadline:
                return spans
            with self._cond:
                self._cond.wait(0.05)


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


Reply = tuple[int, dict[str, str], bytes]  # an HTTP reply: status, headers, body
NOT_FOUND: Reply = (404, {}, b"")


def otlp_ok(response: Any) -> Reply:
    """An OTLP/HTTP success: the service's (empty) response message, as protobuf."""
    return 200, {"Content-Type": "application/x-protobuf"}, response.SerializeToString()


class LocalHttp:
    """An HTTP server on 127.0.0.1 (``port`` 0: a free one), each request on a daemon thread of its own.
    A subclass answers every POST in ``answer(path, headers, body)``: the reply's status, headers and body."""

    def __init__(self, port: int = 0) -> None:
        answer = self.answer

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, headers, payload = answer(self.path, self.headers, body)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def answer(self, path: str, headers: Any, body: bytes) -> Reply:
        raise NotImplementedError

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class HttpReceiver(_Store, LocalHttp):
    """``POST /v1/traces`` (protobuf, optionally gzip/deflate)."""

    def __init__(self) -> None:
        _Store.__init__(self)
        LocalHttp.__init__(self)

    def answer(self, path: str, headers: Any, body: bytes) -> Reply:
        encoding = (headers.get("Content-Encoding") or "").lower()
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        if path != "/v1/traces":
            return NOT_FOUND
        req = trace_service_pb2.ExportTraceServiceRequest()
        req.ParseFromString(body)
        self.add(req, {k.lower(): v for k, v in headers.items()})
        return otlp_ok(trace_service_pb2.ExportTraceServiceResponse())


class GrpcReceiver(_Store):
    """An OTLP gRPC ``TraceService`` (insecure)."""

    def __init__(self) -> None:
        super().__init__()
        import grpc

        store = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                store.add(request, {k: v for k, v in context.invocation_metadata()})
                return trace_service_pb2.ExportTraceServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.url = f"http://127.0.0.1:{self.port}"
        self.server.start()

    def close(self) -> None:
        self.server.stop(0)


def refused_url() -> str:
    """A loopback address where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class HangingEndpoint:
    """Accepts TCP connections and never answers (nor closes them) until ``close()``."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted: list[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop = True
        self._thread.join(1)
        for c in self.accepted:
            c.close()
        self.sock.close()


def reset_global_telemetry() -> None:
    """End a ``configure()`` session and forget the global TracerProvider (tests only: OpenTelemetry sets
    it once per process)."""
    from opentelemetry import trace
    from opentelemetry.util._once import Once

    from looplet.telemetry import setup

    session = setup.current_session()
    if session is not None:
        session.shutdown(timeout_s=1.0)
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    setup._warned_again = False
