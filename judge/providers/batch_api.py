"""Provider batch APIs (profile mode "batch"): OpenAI's Batch API (a JSONL file uploaded through
the files API, then `/v1/batches`, 24 h window, at most 50,000 requests and 200 MB per file) and
Anthropic's Message Batches (at most 100,000 requests or 256 MB per batch), both at half price,
through the official SDKs' batch and file methods. An openai-compatible server gets the OpenAI
calls (it must implement them: `pjudge llm-sim` does).

A protocol of its own beside the interactive `Provider` (judge/providers/base.py), which stays two
methods. Submitting is two steps, `upload` then `create`, so that a caller stores the input file's
id before the batch exists and the batch's id as soon as it does (judge/batching.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from judge.endpoints import NO_KEY, Access, AccessError, local_access
from judge.profiles import JudgeProfile
from judge.providers import guard
from judge.providers.base import CallRequest, CallResult, ProviderError, describe_sdk_error

OPENAI_MAX_REQUESTS, OPENAI_MAX_BYTES = 50_000, 200 * 1024 * 1024
ANTHROPIC_MAX_REQUESTS, ANTHROPIC_MAX_BYTES = 100_000, 256 * 1024 * 1024
# How many of the most recent OpenAI batches `find` looks through.
FIND_LOOKBACK = 1000


@dataclass(frozen=True)
class BatchRequest:
    custom_id: str
    request: CallRequest


@dataclass(frozen=True)
class BatchStatus:
    ended: bool  # no request will be answered any more (completed, expired, cancelled, failed)
    detail: str  # the provider's own status word


@dataclass(frozen=True)
class BatchOutcome:
    """One request's end: its answer, or why it has none (then it may be resubmitted)."""

    custom_id: str
    result: CallResult | None = None
    error: str | None = None


class BatchProvider(Protocol):
    name: str
    max_requests: int
    max_bytes: int

    def line_size(self, request: BatchRequest) -> int: ...

    async def upload(self, requests: Sequence[BatchRequest]) -> str | None:
        """The input file's id (None: the provider takes the requests with `create`)."""
        ...

    async def create(self, requests: Sequence[BatchRequest], input_file_id: str | None,
                     metadata: dict[str, str]) -> str: ...

    async def find(self, input_file_id: str) -> str | None:
        """The batch created from this input file, if any (a process that died between creating
        a batch and recording its id); None where the provider cannot tell (Anthropic)."""
        ...

    async def status(self, batch_id: str) -> BatchStatus: ...

    async def results(self, batch_id: str) -> list[BatchOutcome]: ...

    async def cancel(self, batch_id: str) -> None: ...

    async def aclose(self) -> None: ...


def _no_key(exc: AccessError) -> ProviderError:
    return ProviderError(str(exc))


class _SdkBatches:
    """What both batch APIs share: the access's key (the SDK's own where none: NO_KEY) and their
    SDK's errors as secret-free ProviderErrors (a client-chosen endpoint's bodies never shown)."""

    def __init__(self, access: Access, error: type[Exception]):
        self._api_key = access.api_key or NO_KEY
        self._echo = access.operator
        self._error = error

    @contextmanager
    def _sdk_errors(self) -> Iterator[None]:
        try:
            yield
        except self._error as exc:
            raise ProviderError(describe_sdk_error(exc, self._api_key, echo=self._echo)) from None


class OpenAIBatches(_SdkBatches):
    max_requests, max_bytes = OPENAI_MAX_REQUESTS, OPENAI_MAX_BYTES

    def __init__(self, profile: JudgeProfile, access: Access):
        import openai

        self.name: str = profile.provider
        self._compatible = profile.provider == "openai-compatible"
        if access.base_url is None:
            raise ProviderError(f"provider '{self.name}' needs a base URL")
        super().__init__(access, openai.OpenAIError)
        self._client = openai.AsyncOpenAI(api_key=self._api_key, base_url=access.base_url,
                                          max_retries=profile.max_retries, timeout=max(profile.timeout_s, 300),
                                          http_client=guard.sdk_http_client(openai, access))

    def _line(self, request: BatchRequest) -> bytes:
        from judge.providers.openai_provider import chat_body

        line = {"custom_id": request.custom_id, "method": "POST", "url": "/v1/chat/completions",
                "body": chat_body(request.request, self._compatible)}
        return (json.dumps(line, ensure_ascii=False) + "\n").encode()

    def line_size(self, request: BatchRequest) -> int:
        return len(self._line(request))

    async def upload(self, requests: Sequence[BatchRequest]) -> str | None:
        content = b"".join(self._line(r) for r in requests)
        with self._sdk_errors():
            uploaded = await self._client.files.create(file=("pjudge-batch.jsonl", content), purpose="batch")
        return uploaded.id

    async def create(self, requests: Sequence[BatchRequest], input_file_id: str | None,
                     metadata: dict[str, str]) -> str:
        if input_file_id is None:
            raise ProviderError("an OpenAI batch needs its uploaded input file")
        with self._sdk_errors():
            batch = await self._client.batches.create(input_file_id=input_file_id, endpoint="/v1/chat/completions",
                                                      completion_window="24h", metadata=metadata)
        return batch.id

    async def find(self, input_file_id: str) -> str | None:
        with self._sdk_errors():
            seen = 0
            async for batch in self._client.batches.list(limit=100):
                if batch.input_file_id == input_file_id:
                    return batch.id
                seen += 1
                if seen >= FIND_LOOKBACK:
                    break
        return None

    async def status(self, batch_id: str) -> BatchStatus:
        with self._sdk_errors():
            batch = await self._client.batches.retrieve(batch_id)
        return BatchStatus(ended=batch.status in ("completed", "expired", "cancelled", "failed"), detail=batch.status)

    async def _file_lines(self, file_id: str | None) -> list[dict[str, Any]]:
        if not file_id:
            return []
        with self._sdk_errors():
            content = await self._client.files.content(file_id)
        return [json.loads(line) for line in content.text.splitlines() if line.strip()]

    async def results(self, batch_id: str) -> list[BatchOutcome]:
        from judge.providers.openai_provider import chat_result

        with self._sdk_errors():
            batch = await self._client.batches.retrieve(batch_id)
        outcomes = []
        for line in await self._file_lines(batch.output_file_id) + await self._file_lines(batch.error_file_id):
            custom_id = str(line.get("custom_id"))
            response = line.get("response") or {}
            if line.get("error") is None and response.get("status_code") == 200:
                try:
                    outcomes.append(BatchOutcome(custom_id, result=chat_result(response.get("body"), self._echo)))
                except ProviderError as exc:
                    outcomes.append(BatchOutcome(custom_id, error=str(exc)))
                continue
            error = line.get("error") or (response.get("body") or {}).get("error") or {}
            status = response.get("status_code")
            text = error.get("message") or error.get("code") or "no answer" if isinstance(error, dict) else "no answer"
            outcomes.append(BatchOutcome(custom_id, error=f"batch request failed ({status or batch.status}): {text}"
                                         if self._echo else f"batch request failed ({status or batch.status})"))
        return outcomes

    async def cancel(self, batch_id: str) -> None:
        with self._sdk_errors():
            await self._client.batches.cancel(batch_id)

    async def aclose(self) -> None:
        await self._client.close()


class AnthropicBatches(_SdkBatches):
    name = "anthropic"
    max_requests, max_bytes = ANTHROPIC_MAX_REQUESTS, ANTHROPIC_MAX_BYTES

    def __init__(self, profile: JudgeProfile, access: Access):
        import anthropic

        super().__init__(access, anthropic.AnthropicError)
        self._client = anthropic.AsyncAnthropic(api_key=self._api_key, base_url=access.base_url,
                                                max_retries=profile.max_retries, timeout=max(profile.timeout_s, 300),
                                                http_client=guard.sdk_http_client(anthropic, access))

    @staticmethod
    def _entry(request: BatchRequest) -> dict[str, Any]:
        from judge.providers.anthropic_provider import messages_body

        return {"custom_id": request.custom_id, "params": messages_body(request.request)}

    def line_size(self, request: BatchRequest) -> int:
        return len(json.dumps(self._entry(request), ensure_ascii=False).encode()) + 1

    async def upload(self, requests: Sequence[BatchRequest]) -> str | None:
        return None

    async def create(self, requests: Sequence[BatchRequest], input_file_id: str | None,
                     metadata: dict[str, str]) -> str:
        with self._sdk_errors():
            batch = await self._client.messages.batches.create(requests=[self._entry(r) for r in requests])  # type: ignore[misc]  # plain dicts of the params' TypedDict shape
        return batch.id

    async def find(self, input_file_id: str) -> str | None:
        return None  # a message batch has no input file: one created unrecorded cannot be found

    async def status(self, batch_id: str) -> BatchStatus:
        with self._sdk_errors():
            batch = await self._client.messages.batches.retrieve(batch_id)
        return BatchStatus(ended=batch.processing_status == "ended", detail=batch.processing_status)

    async def results(self, batch_id: str) -> list[BatchOutcome]:
        from judge.providers.anthropic_provider import message_result

        outcomes = []
        with self._sdk_errors():
            async for entry in await self._client.messages.batches.results(batch_id):
                result = entry.result
                if result.type == "succeeded":
                    try:
                        answer = message_result(result.message.model_dump(), self._echo)
                        outcomes.append(BatchOutcome(entry.custom_id, result=answer))
                    except ProviderError as exc:
                        outcomes.append(BatchOutcome(entry.custom_id, error=str(exc)))
                elif result.type == "errored":
                    detail = getattr(getattr(result.error, "error", None), "message", "") if self._echo else ""
                    outcomes.append(BatchOutcome(entry.custom_id, error=f"batch request failed (errored) {detail}"
                                                 .strip()))
                else:
                    outcomes.append(BatchOutcome(entry.custom_id, error=f"batch request not run ({result.type})"))
        return outcomes

    async def cancel(self, batch_id: str) -> None:
        with self._sdk_errors():
            await self._client.messages.batches.cancel(batch_id)

    async def aclose(self) -> None:
        await self._client.close()


def create_batch_provider(profile: JudgeProfile, access: Access | None = None) -> BatchProvider:
    """The profile's batch API; without `access`, the CLI's (judge.endpoints.local_access)."""
    if access is None:
        try:
            access = local_access(profile)
        except AccessError as exc:
            raise _no_key(exc) from None
    kind: Literal["openai", "anthropic"] | None = (
        "anthropic" if profile.provider == "anthropic"
        else "openai" if profile.provider in ("openai", "openai-compatible") else None)
    if kind is None:
        raise ProviderError(f"provider '{profile.provider}' has no batch API (mode 'batch' needs openai, "
                            "anthropic or an openai-compatible server implementing /v1/batches)")
    if kind == "anthropic":
        if access.api_key is None and access.key_variable:
            raise ProviderError(f"provider 'anthropic' needs a key: set {access.key_variable}")
        return AnthropicBatches(profile, access)
    if access.api_key is None and access.key_variable and profile.provider == "openai":
        raise ProviderError(f"provider 'openai' needs a key: set {access.key_variable}")
    return OpenAIBatches(profile, access)
