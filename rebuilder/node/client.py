"""Talking to a rebuilder node over its v1 API (httpx; bearer token and/or mutual TLS).

A node is not trusted to answer sensibly: what the gate reads of it (job lists and
attestations) is read within a size cap and a deadline, and parsed as untrusted JSON.
"""

from __future__ import annotations

import re
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from rebuilder.attest.untrusted_json import UntrustedJsonError, parse_json, shown
from rebuilder.errors import InfrastructureError

MAX_JOBS = 1000  # per subject: more is not an answer the gate reads
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class NodeError(InfrastructureError):
    """A node could not be reached, or refused a request; names the node and why."""


# What a node may send back, at most: a node is a stranger too.
MAX_JSON_BYTES = 4 * 1024**2
MAX_ATTESTATION_BYTES = 16 * 1024**2
MAX_ARTIFACT_BYTES = 256 * 1024**2  # as diffoscope's own per-file limit


@dataclass(frozen=True, kw_only=True)
class Credentials:
    token: str | None = None
    client_cert: Path | None = None  # mutual TLS: our certificate and key
    client_key: Path | None = None
    ca: Path | None = None  # the CA that signed the nodes' server certificates


class NodeClient:
    def __init__(self, url: str, credentials: Credentials, timeout_s: float = 60.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {credentials.token}"} if credentials.token else {}
        headers["Accept-Encoding"] = "identity"  # what is read is what is counted
        verify: ssl.SSLContext | bool = True
        if bool(credentials.client_cert) != bool(credentials.client_key):
            raise NodeError("mutual TLS needs both --tls-cert and --tls-key")
        if credentials.ca or credentials.client_cert:
            try:
                verify = ssl.create_default_context(cafile=credentials.ca)
                if credentials.client_cert and credentials.client_key:
                    verify.load_cert_chain(credentials.client_cert, credentials.client_key)
            except (OSError, ssl.SSLError) as e:
                raise NodeError(f"TLS set-up for {self.url}: {e}") from None
        self.timeout_s = timeout_s
        self._http = httpx.Client(
            base_url=self.url, headers=headers, verify=verify, timeout=timeout_s
        )

    def close(self) -> None:
        self._http.close()

    def _request(
        self, method: str, path: str, *, limit: int = MAX_JSON_BYTES, **kwargs: Any
    ) -> httpx.Response:
        """One request whose answer is read up to ``limit`` bytes and within the client's
        timeout for the whole body (a node that drips bytes is as unreachable as one that
        is down).

        Raises:
            NodeError: unreachable, refused, too large, too slow, or compressed.
        """
        where = f"{self.url}{path}"
        deadline = time.monotonic() + self.timeout_s
        try:
            with self._http.stream(method, path, **kwargs) as response:
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise NodeError(f"{where}: an answer of more than {limit} bytes; refused")
                body = bytearray()
                for chunk in response.iter_raw():
                    body.extend(chunk)
                    if len(body) > limit:
                        raise NodeError(f"{where}: an answer of more than {limit} bytes; refused")
                    if time.monotonic() > deadline:
                        raise NodeError(f"{where}: no whole answer within {self.timeout_s}s")
                if response.headers.get("content-encoding", "identity") != "identity":
                    raise NodeError(f"{where}: a compressed answer was not asked for")
                response = httpx.Response(
                    response.status_code, content=bytes(body), request=response.request
                )
        except httpx.HTTPError as e:
            raise NodeError(f"{self.url}: {e}") from None
        if response.status_code in (401, 403):
            raise NodeError(f"{self.url}: {response.status_code} {_detail(response)}")
        return response

    def _ok(self, response: httpx.Response) -> httpx.Response:
        if response.is_error:
            raise NodeError(f"{self.url}: {response.status_code} {_detail(response)}")
        return response

    def identity(self) -> dict[str, Any]:
        data: dict[str, Any] = self._ok(self._request("GET", "/v1/node")).json()
        return data

    def submit(self, archive: bytes) -> dict[str, Any]:
        response = self._request(
            "POST", "/v1/rebuilds", content=archive, headers={"Content-Type": "application/gzip"}
        )
        data: dict[str, Any] = self._ok(response).json()
        return data

    def status(self, job_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self._ok(self._request("GET", f"/v1/rebuilds/{job_id}")).json()
        return data

    def _read(self, path: str, *, limit: int, **kwargs: Any) -> bytes:
        """A GET answer's body (at most ``limit`` bytes), or NodeError with what it said."""
        return self._ok(self._request("GET", path, limit=limit, **kwargs)).content

    def attestation(self, job_id: str, *, limit: int = MAX_ATTESTATION_BYTES) -> bytes:
        """A job's signed attestation, as stored (at most ``limit`` bytes).

        Raises:
            NodeError: as :meth:`_request`; and a job id that is not one.
        """
        if not _JOB_ID.fullmatch(job_id):
            raise NodeError(f"{self.url}: {shown(job_id)} is not a job id")
        return self._read(f"/v1/rebuilds/{job_id}/attestation", limit=limit)

    def artifact(self, job_id: str, path: str) -> bytes:
        where = f"/v1/rebuilds/{job_id}/artifacts/{path}"
        return self._ok(self._request("GET", where, limit=MAX_ARTIFACT_BYTES)).content

    def by_subject(self, sha256: str) -> list[str]:
        """The ids of the node's finished jobs with an output of that digest.

        Raises:
            NodeError: unreachable, or an answer that is not a list of job ids.
        """
        where = f"{self.url}/v1/attestations"
        data = self._read(
            "/v1/attestations", limit=MAX_JSON_BYTES, params={"subject": f"sha256:{sha256}"}
        )
        try:
            document = parse_json(data, where)
        except UntrustedJsonError as e:
            raise NodeError(str(e)) from None
        jobs = document.get("jobs") if isinstance(document, dict) else None
        if not isinstance(jobs, list) or len(jobs) > MAX_JOBS:
            raise NodeError(f"{where}: not a list of at most {MAX_JOBS} jobs")
        ids = []
        for job in jobs:
            job_id = job.get("id") if isinstance(job, dict) else None
            if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
                raise NodeError(f"{where}: {shown(job_id)} is not a job id")
            ids.append(job_id)
        return ids

    def cosign(self, job_id: str, payload: bytes) -> tuple[bool, dict[str, Any]]:
        """(True, signature entry) or (False, the node's signed disagreement)."""
        response = self._request("POST", f"/v1/rebuilds/{job_id}/cosign", content=payload)
        if response.status_code == 409:
            return False, dict(response.json()["disagreement"])
        return True, dict(self._ok(response).json()["signature"])


def _told(body: bytes) -> str:
    """What an error answer says (its ``detail``), cut short."""
    try:
        document = parse_json(body, "the answer")
    except UntrustedJsonError:
        return shown(body.decode("utf-8", "replace"), 200)
    detail = document.get("detail") if isinstance(document, dict) else document
    return shown(detail, 200) if not isinstance(detail, str) else detail[:200]


def _detail(response: httpx.Response) -> str:
    return _told(response.content)
