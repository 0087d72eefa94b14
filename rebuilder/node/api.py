"""The node's HTTP API, version 1 (JSON; request bodies are raw bytes).

GET  /v1/node                              identity and public key          read
POST /v1/rebuilds                          body: source tar.gz -> 202 job   submit
GET  /v1/rebuilds/{id}                     job status                       read
GET  /v1/rebuilds/{id}/attestation         the signed attestation (stored)  read
GET  /v1/rebuilds/{id}/artifacts/{path}    an output file                   read
POST /v1/rebuilds/{id}/cosign              body: statement -> signature     cosign
GET  /v1/attestations?subject=sha256:HEX   jobs with an output of that digest read
"""

# No "from __future__ import annotations": FastAPI reads the dependency annotations at
# runtime, and they name closures.
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from rebuilder.attest.statement import StatementError
from rebuilder.node.auth import Principal, RateLimiter, TokenRegistry
from rebuilder.node.node import Node, NodeBusy, UnknownJob
from rebuilder.node.requests import RequestError, unpack_source

API_VERSION = "hermetic-node/v1"


@dataclass(frozen=True, kw_only=True)
class ApiSettings:
    tokens: TokenRegistry | None  # None: mutual TLS authenticates every client
    max_request_bytes: int = 64 * 1024**2
    requests_per_minute: int = 600


def _error(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def create_app(node: Node, settings: ApiSettings) -> FastAPI:
    """The node's API; authentication and limits apply to every route."""
    app = FastAPI(title="hermetic rebuilder node", version=API_VERSION)
    limiter = RateLimiter(settings.requests_per_minute)
    mtls_principal = Principal("mtls-client", frozenset({"submit", "read", "cosign"}))

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
        if settings.tokens is None:
            who = mtls_principal
        else:
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            found = settings.tokens.principal(token) if scheme.lower() == "bearer" else None
            if found is None:
                raise HTTPException(
                    401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"}
                )
            who = found
        # every mTLS client has the same principal: limit each address on its own
        client = who.name if settings.tokens else f"{who.name}@{_address(request)}"
        if not limiter.allow(client):
            raise _error(429, "rate limit exceeded; slow down")
        return who

    def scope(name: str) -> Callable[[Principal], Principal]:
        def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
            if name not in who.scopes:
                raise _error(403, f"token {who.name!r} lacks the {name!r} scope")
            return who

        return check

    async def body(request: Request) -> bytes:
        data = bytearray()
        async for chunk in request.stream():
            data.extend(chunk)
            if len(data) > settings.max_request_bytes:
                raise _error(413, f"request larger than {settings.max_request_bytes} bytes")
        return bytes(data)

    def job_json(job_id: str) -> dict[str, Any]:
        try:
            job = node.job(job_id)
        except UnknownJob as e:
            raise _error(404, str(e)) from None
        base = f"/v1/rebuilds/{job.id}"
        return {**job.to_json(), "links": {"self": base, "attestation": f"{base}/attestation"}}

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
        archive = await body(request)
        with tempfile.TemporaryDirectory(prefix="hermetic-request-") as scratch:
            try:
                unpack_source(archive, Path(scratch) / "src")  # refuse bad requests now
            except RequestError as e:
                raise _error(400, str(e)) from None
        try:
            job = node.submit(archive, who.name)
        except NodeBusy as e:
            raise _error(429, str(e)) from None
        return job_json(job.id)

    @app.get("/v1/rebuilds/{job_id}")
    def status(job_id: str, who: Annotated[Principal, Depends(scope("read"))]) -> dict[str, Any]:
        return job_json(job_id)

    @app.get("/v1/rebuilds/{job_id}/attestation")
    def attestation(job_id: str, who: Annotated[Principal, Depends(scope("read"))]) -> Response:
        job_json(job_id)
        stored = node.attestation(job_id)
        if stored is None:
            raise _error(409, "the job has not finished")
        return Response(stored, media_type="application/json")  # the bytes as signed

    @app.get("/v1/rebuilds/{job_id}/artifacts/{path:path}")
    def artifact(
        job_id: str, path: str, who: Annotated[Principal, Depends(scope("read"))]
    ) -> FileResponse:
        try:
            return FileResponse(node.artifact(job_id, path))
        except UnknownJob as e:
            raise _error(404, str(e)) from None

    @app.post("/v1/rebuilds/{job_id}/cosign")
    async def cosign(
        job_id: str, request: Request, who: Annotated[Principal, Depends(scope("cosign"))]
    ) -> JSONResponse:
        job_json(job_id)
        payload = await body(request)
        try:
            agreed, answer = node.cosign(job_id, payload)
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
        return {
            "subject": f"sha256:{digest}",
            "jobs": [job_json(job_id) for job_id in node.store.by_subject(digest)],
        }

    return app
