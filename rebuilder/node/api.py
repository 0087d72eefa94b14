"""The node's HTTP API, version 1 (JSON; request bodies are raw bytes).

GET  /v1/node                              identity and public key          read
POST /v1/rebuilds                          body: source tar.gz -> 202 job   submit
GET  /v1/rebuilds/{id}                     job status                       read
GET  /v1/rebuilds/{id}/attestation         the signed attestation (stored)  read
GET  /v1/rebuilds/{id}/artifacts/{path}    an output file                   read
POST /v1/rebuilds/{id}/cosign              body: statement -> signature     cosign
GET  /v1/attestations?subject=sha256:HEX   jobs with an output of that digest read
GET  /docs, /openapi.json                  the API's description                read

A client sees only the jobs submitted under its own name (token name or certificate
subject) unless it has the ``read-all`` scope; another tenant's job answers 404, like a
job that does not exist.
"""

# No "from __future__ import annotations": FastAPI reads the dependency annotations at
# runtime, and they name closures.
import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from rebuilder.formats.fields import StatementError
from rebuilder.node.auth import ClientScopes, Principal, RateLimiter, TokenRegistry
from rebuilder.node.node import Node, NodeBusy, NodeFull, UnknownJob
from rebuilder.node.requests import RequestError

API_VERSION = "hermetic-node/v1"


TLS_SUBJECT = "hermetic_tls_subject"  # request.state key the TLS layer fills (serve.py)
_READ_CHUNK = 1 << 20
MAX_COSIGN_BYTES = 1024**2  # an agreement statement is a few kilobytes
BODY_TIMEOUT_S = 600.0  # a request body arrives within this, or the request is dropped


@dataclass(frozen=True, kw_only=True)
class ApiSettings:
    """Who may use the node and how much.

    Attributes:
        tokens: bearer tokens (``--tokens``).
        client_scopes: mutual-TLS clients' scopes by certificate subject (``--client-scopes``).
    """

    tokens: TokenRegistry | None = None
    client_scopes: ClientScopes | None = None
    max_request_bytes: int = 64 * 1024**2
    requests_per_minute: int = 600
    max_connections: int = 256  # open HTTP connections (serve.py closes the rest)

    def __post_init__(self) -> None:
        if self.tokens is None and self.client_scopes is None:
            raise ValueError("a node needs tokens or client scopes: nobody could use it")


def _error(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def create_app(node: Node, settings: ApiSettings) -> FastAPI:
    """The node's API; authentication and limits apply to every route."""
    # the API's description is served below, behind the read scope like everything else
    app = FastAPI(
        title="hermetic rebuilder node",
        version=API_VERSION,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    limiter = RateLimiter(settings.requests_per_minute)

    @app.middleware("http")
    async def limit_size(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and not declared.isdigit():
            return JSONResponse({"detail": "Content-Length is not a number"}, 400)
        if declared is not None and int(declared) > settings.max_request_bytes:
            return JSONResponse(
                {"detail": f"request larger than {settings.max_request_bytes} bytes"}, 413
            )
        return await call_next(request)

    def principal(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        subject = getattr(request.state, TLS_SUBJECT, None)
        who: Principal | None = None
        if settings.tokens is not None and scheme.lower() == "bearer":
            who = settings.tokens.principal(token)
        elif settings.client_scopes is not None and subject:
            who = settings.client_scopes.principal(subject)
            if who is None:
                raise _error(403, f"the certificate subject {subject!r} has no scopes here")
        if who is None:
            raise HTTPException(
                401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"}
            )
        if not limiter.allow(who.tenant):
            raise _error(429, "rate limit exceeded; slow down")
        return who

    def scope(name: str) -> Callable[[Principal], Principal]:
        def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
            if not who.may(name):
                raise _error(403, f"{who.name!r} lacks the {name!r} scope")
            return who

        return check

    def tenant(who: Principal) -> str | None:
        """Whose jobs a client sees: its own, or everyone's with read-all."""
        return None if who.sees_all else who.tenant

    async def body(request: Request, limit: int) -> bytes:
        """The body, read up to ``limit`` bytes and within BODY_TIMEOUT_S (a client that
        drips its body holds a connection no longer)."""
        data = bytearray()

        async def read() -> None:
            async for chunk in request.stream():
                data.extend(chunk)
                if len(data) > limit:
                    raise _error(413, f"request larger than {limit} bytes")

        try:
            await asyncio.wait_for(read(), BODY_TIMEOUT_S)
        except TimeoutError:
            raise _error(
                408, f"the request body did not arrive within {BODY_TIMEOUT_S:.0f}s"
            ) from None
        return bytes(data)

    def job_json(job_id: str, who: Principal) -> dict[str, Any]:
        try:
            job = node.job(job_id, visible_to=tenant(who))
        except UnknownJob as e:
            raise _error(404, str(e)) from None
        base = f"/v1/rebuilds/{job.id}"
        return {**job.to_json(), "links": {"self": base, "attestation": f"{base}/attestation"}}

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(who: Annotated[Principal, Depends(scope("read"))]) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    def docs(who: Annotated[Principal, Depends(scope("read"))]) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=app.title)

    @app.get("/v1/node")
    def identity(who: Annotated[Principal, Depends(scope("read"))]) -> dict[str, Any]:
        key = node.signer.public_key
        return {
            "api": API_VERSION,
            "builder_id": node.settings.builder_id,
            "public_key": {"keyid": key.keyid, **key.to_dict()},
        }

    @app.post("/v1/rebuilds", status_code=202)
    async def submit(
        request: Request, who: Annotated[Principal, Depends(scope("submit"))]
    ) -> dict[str, Any]:
        archive = await body(request, settings.max_request_bytes)
        try:
            # unpacking is slow work on untrusted bytes: never on the event loop
            await run_in_threadpool(node.check_request, archive)  # refuse bad requests now
            job = await run_in_threadpool(node.submit, archive, who.tenant)
        except RequestError as e:
            raise _error(400, str(e)) from None
        except NodeBusy as e:
            raise _error(429, str(e)) from None
        except NodeFull as e:
            raise HTTPException(503, str(e), {"Retry-After": "600"}) from None
        return job_json(job.id, who)

    @app.get("/v1/rebuilds/{job_id}")
    def status(job_id: str, who: Annotated[Principal, Depends(scope("read"))]) -> dict[str, Any]:
        return job_json(job_id, who)

    @app.get("/v1/rebuilds/{job_id}/attestation")
    def attestation(job_id: str, who: Annotated[Principal, Depends(scope("read"))]) -> Response:
        job_json(job_id, who)
        stored = node.attestation(job_id)
        if stored is None:
            raise _error(409, "the job has not finished")
        return Response(stored, media_type="application/json")  # the bytes as signed

    @app.get("/v1/rebuilds/{job_id}/artifacts/{path:path}")
    def artifact(
        job_id: str, path: str, who: Annotated[Principal, Depends(scope("read"))]
    ) -> Response:
        try:
            found = node.artifact(job_id, path, visible_to=tenant(who))
        except UnknownJob as e:
            raise _error(404, str(e)) from None
        if found.link_target is not None:  # a link output: its target text, never followed
            return Response(found.link_target, headers={"X-Hermetic-Symlink": "1"})
        assert found.fd is not None
        size = os.fstat(found.fd).st_size
        return StreamingResponse(
            _read_fd(found.fd),
            media_type="application/octet-stream",
            headers={"Content-Length": str(size)},
        )

    @app.post("/v1/rebuilds/{job_id}/cosign")
    async def cosign(
        job_id: str, request: Request, who: Annotated[Principal, Depends(scope("cosign"))]
    ) -> JSONResponse:
        job_json(job_id, who)
        payload = await body(request, MAX_COSIGN_BYTES)
        try:
            # parsing and signing are work on a stranger's bytes: never on the event loop
            agreed, answer = await run_in_threadpool(node.cosign, job_id, payload)
        except StatementError as e:
            raise _error(400, str(e)) from None
        if agreed:
            return JSONResponse({"signature": answer})
        return JSONResponse(
            {
                "refused": "the statement's subjects are not this node's outputs",
                "disagreement": answer,
            },
            409,
        )

    @app.get("/v1/attestations")
    def by_subject(
        subject: str, who: Annotated[Principal, Depends(scope("read"))]
    ) -> dict[str, Any]:
        digest = subject.removeprefix("sha256:")
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise _error(400, "subject must be sha256:<64 lowercase hex>")
        found = node.store.by_subject(digest, submitted_by=tenant(who))
        return {"subject": f"sha256:{digest}", "jobs": [job_json(j, who) for j in found]}

    return app


def _read_fd(fd: int) -> Iterator[bytes]:
    """An open file's bytes in chunks, closing it at the end (or when the client leaves)."""
    with os.fdopen(fd, "rb") as stream:
        while chunk := stream.read(_READ_CHUNK):
            yield chunk
