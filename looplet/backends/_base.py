"""What the OpenAI and Anthropic backends share above the wire: one sync and one async call route.

A provider's class says where its call is, how a request is built, how a whole answer is read and how a
stream is folded (a :class:`StreamReader`); the deadline, the stream loop, the error mapping and the async
client made per event loop are here, once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, Protocol

from looplet.backends._common import (
    Assembly,
    Deadline,
    adeliver,
    bad_json,
    call_error,
    check_stream,
    deliver,
    old_style,
    server_of,
    total_seconds,
)
from looplet.errors import LLMError
from looplet.telemetry.redact import add_secret
from looplet.types import LLMResponse


class StreamReader(Protocol):
    """Folds a provider's stream events into an :class:`Assembly` (``asm``)."""

    asm: Assembly

    def absorb(self, event: Any) -> list[dict[str, Any]]: ...

    def finish(self, server: tuple[str | None, int | None]) -> LLMResponse: ...


class ProviderBackend:
    """The base of :class:`~looplet.backends.OpenAIBackend` and :class:`~looplet.backends.AnthropicBackend`.

    Class attributes a provider sets: ``provider`` (``gen_ai.provider.name``), ``_key_env`` (the variable
    an authentication error names), ``_async_given`` (the error of a sync call on an async-only backend),
    and, on the public class itself, ``_call_path`` and ``_old_keywords``: how a looplet 0.4.1-style
    construction is recognised (:func:`~looplet.backends._common.old_style`).
    """

    provider: str
    _key_env: str
    _async_given: str
    # what a provider defines: where its call is (the object whose ``create`` makes it; on a sync client,
    # ``with_streaming_response.create`` too), the request, its stream reader, how a whole answer is read,
    # a tool schema in its format, and an async client (with the settings of the user's sync client)
    _api: Callable[[Any], Any]
    _request: Callable[[list[dict[str, Any]], list[dict[str, Any]] | None, dict[str, Any]], dict[str, Any]]
    _reader: Callable[[float], StreamReader]
    _parse: Callable[[Any], LLMResponse]
    _tool_schema: Callable[[dict[str, Any]], dict[str, Any]]
    _async_settings: Callable[[Any], dict[str, Any]]
    _new_async_client: Callable[[dict[str, Any]], Any]

    def __new__(cls, client: Any = None, *args: Any, **kwargs: Any) -> Any:
        # only the public class switches (vars: its subclasses, the 0.4.1 ones included, do not)
        path = vars(cls).get("_call_path")
        if path and old_style(client, kwargs, cls.provider, path, vars(cls)["_old_keywords"]):
            from looplet._compat_backends import old_backend_class  # looplet 0.4.1's way, deprecated

            cls = old_backend_class(cls.provider)
        return object.__new__(cls)

    # -- construction -----------------------------------------------------------------------------------

    def _setup(self, sdk: Any, errors: tuple[type[BaseException], ...], model: str) -> None:
        """The state every backend starts from: no client yet, no settings of ours, no tools converted."""
        self._sdk = sdk
        self._errors = errors
        self.model = model
        self._client: Any = None
        self._aclient: Any = None
        self._aloop: Any = None  # the event loop self._aclient belongs to (None: the user's own client)
        self._settings: dict[str, Any] | None = None
        self._tools_in: Any = None
        self._tools_out: list[dict[str, Any]] = []

    def _take_client(self, client: Any, sync: Any, async_: Any, options: dict[str, Any], wrong: str) -> None:
        """Keep the user's ``client`` (sync or async) with ``options``; ``wrong``: the error for any other."""
        if isinstance(client, async_):
            self._aclient = client.with_options(**options)
        elif isinstance(client, sync):
            self._client = client.with_options(**options)
        else:
            raise TypeError(f"{wrong}, got {type(client).__name__}")
        self.timeout = (self._client or self._aclient).timeout

    def _endpoint(self) -> None:
        """What every call reads of the client: the whole-call bound, the URL and server; the key is
        registered as a secret, so it is redacted everywhere."""
        client = self._client or self._aclient
        self._total = total_seconds(self.timeout)
        self.base_url = str(client.base_url)
        self.server_address, self.server_port = server_of(self.base_url)
        add_secret(getattr(client, "api_key", None), "api_key")

    # -- calls ------------------------------------------------------------------------------------------

    def generate(
        self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None, **options: Any
    ) -> LLMResponse:
        if self._client is None:
            raise TypeError(self._async_given)
        on_chunk, params, reader, deadline = self._start(messages, tools, options)
        api = self._api(self._client)
        try:
            if not params.get("stream"):
                with api.with_streaming_response.create(**params) as raw:
                    with deadline.watching(raw.http_response):
                        return self._parse(raw.parse())
            with api.create(**params) as events, deadline.watching(events.response):
                check_stream(events, self.provider, self.base_url)
                for event in events:
                    for chunk in reader.absorb(event):
                        deliver(on_chunk, chunk)
            return reader.finish((self.server_address, self.server_port))
        except self._errors as exc:
            raise self._error(exc, reader, deadline) from exc
        except json.JSONDecodeError as exc:
            raise bad_json(self.provider, self.base_url, exc) from exc

    async def agenerate(
        self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None, **options: Any
    ) -> LLMResponse:
        api = self._api(self._async_client())
        on_chunk, params, reader, deadline = self._start(messages, tools, options)
        try:
            async with asyncio.timeout(deadline.left()):
                if not params.get("stream"):
                    return self._parse(await api.create(**params))
                async with await api.create(**params) as events:
                    check_stream(events, self.provider, self.base_url)
                    async for event in events:
                        for chunk in reader.absorb(event):
                            await adeliver(on_chunk, chunk)
            return reader.finish((self.server_address, self.server_port))
        except TimeoutError as exc:
            raise deadline.error(self.provider, self.base_url) from exc
        except self._errors as exc:
            raise self._error(exc, reader, deadline) from exc
        except json.JSONDecodeError as exc:
            raise bad_json(self.provider, self.base_url, exc) from exc

    def close(self) -> None:
        """Close the HTTP connections of the clients this backend built."""
        if self._settings is not None and self._client is not None:
            self._client.close()

    def _start(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, options: dict[str, Any]
    ) -> tuple[Any, dict[str, Any], StreamReader, Deadline]:
        """A call's ``on_chunk``, request, stream reader and deadline (which bounds the request too)."""
        on_chunk = options.pop("on_chunk", None)
        params = self._request(messages, tools, options)
        reader = self._reader(time.perf_counter())
        deadline = Deadline(self._total)
        if deadline.at is not None:
            params.setdefault("timeout", deadline.left())
        return on_chunk, params, reader, deadline

    def _tool_schemas(self, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The tools in the provider's format (``_tool_schema``), converted once: the loop passes the same
        list every call."""
        if tools is not self._tools_in:
            self._tools_in = tools
            self._tools_out = [self._tool_schema(t) for t in tools]
        return self._tools_out

    def _async_client(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._aclient is not None and (self._aloop is None or self._aloop is loop):
            return self._aclient
        # the user's sync client (no settings of ours): the same endpoint and credentials
        settings = self._settings if self._settings is not None else self._async_settings(self._client)
        # an async client's connections belong to one event loop: make one per loop
        self._aclient, self._aloop = self._new_async_client(settings), loop
        return self._aclient

    def _error(self, exc: BaseException, reader: StreamReader, deadline: Deadline) -> LLMError:
        return call_error(
            exc,
            deadline,
            provider=self.provider,
            key_env=self._key_env,
            base_url=self.base_url,
            model=self.model,
            timeout=getattr(self.timeout, "read", None) or self.timeout,
            mid_stream=reader.asm.model is not None,
        )
