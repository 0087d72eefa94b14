"""Talking to a rebuilder node over its v1 API (httpx; bearer token and/or mutual TLS)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from rebuilder.errors import Error


class NodeError(Error):
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
        self._http = httpx.Client(
            base_url=self.url, headers=headers, verify=verify, timeout=timeout_s
        )

    def close(self) -> None:
        self._http.close()

    def _request(
        self, method: str, path: str, *, limit: int = MAX_JSON_BYTES, **kwargs: Any
    ) -> httpx.Response:
        """One request whose answer is read up to ``limit`` bytes (NodeError past it)."""
        try:
            with self._http.stream(method, path, **kwargs) as response:
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise NodeError(f"{self.url}{path}: answer larger than {limit} bytes; refused")
                body = bytearray()
                for chunk in response.iter_raw():
                    body.extend(chunk)
                    if len(body) > limit:
                        raise NodeError(
                            f"{self.url}{path}: answer larger than {limit} bytes; refused"
                        )
                if response.headers.get("content-encoding", "identity") != "identity":
                    raise NodeError(f"{self.url}{path}: a compressed answer was not asked for")
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

    def attestation(self, job_id: str) -> bytes:
        path = f"/v1/rebuilds/{job_id}/attestation"
        return self._ok(self._request("GET", path, limit=MAX_ATTESTATION_BYTES)).content

    def artifact(self, job_id: str, path: str) -> bytes:
        where = f"/v1/rebuilds/{job_id}/artifacts/{path}"
        return self._ok(self._request("GET", where, limit=MAX_ARTIFACT_BYTES)).content

    def by_subject(self, sha256: str) -> list[dict[str, Any]]:
        """The node's finished jobs with an output of that digest."""
        response = self._request("GET", "/v1/attestations", params={"subject": f"sha256:{sha256}"})
        jobs: list[dict[str, Any]] = self._ok(response).json()["jobs"]
        return jobs

    def cosign(self, job_id: str, payload: bytes) -> tuple[bool, dict[str, Any]]:
        """(True, signature entry) or (False, the node's signed disagreement)."""
        response = self._request("POST", f"/v1/rebuilds/{job_id}/cosign", content=payload)
        if response.status_code == 409:
            return False, dict(response.json()["disagreement"])
        return True, dict(self._ok(response).json()["signature"])


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:200]
