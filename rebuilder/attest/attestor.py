"""Writing a build's provenance (and a check's verdict) as signed DSSE envelopes."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebuilder.attest.envelope import sign_payload, write_envelope
from rebuilder.attest.git_source import git_source
from rebuilder.attest.provenance import PROVENANCE_FILE, provenance_statement
from sandbox.build import RESULT_FILE
from sandbox.result import BuildResult

if TYPE_CHECKING:
    from securesystemslib.signer import Signer

log = logging.getLogger(__name__)


def signed_envelope(payload: bytes, signers: Sequence[Signer]) -> tuple[dict[str, Any], str]:
    """The envelope signed by every signer; if signing fails, unsigned and the reason.

    An unreachable KMS must not cost the build: the statement is kept, unsigned, and the
    caller reports the failure.
    """
    try:
        return sign_payload(payload, signers), ""
    except Exception as e:  # noqa: BLE001 - signer backends (KMS, HSM, Sigstore) raise anything
        log.warning("signing failed: %s; the attestation is written unsigned", e)
        return sign_payload(payload, ()), f"signing failed: {e}"


class BuildAttestor:
    """The ``attest`` hook of a build: writes provenance.intoto.json beside result.json."""

    def __init__(
        self,
        *,
        signers: Sequence[Signer],
        builder_id: str,
        spec_document: Mapping[str, Any],
        spec_sha256: str | None,
        source_dir: Path | None = None,
        euid: int | None = None,
    ) -> None:
        self.signers = tuple(signers)
        self.builder_id = builder_id
        self.spec_document = spec_document
        # of the bytes that were parsed (Spec.sha256): the file may change meanwhile
        self.spec_sha256 = spec_sha256
        self.source_dir = source_dir  # a git checkout here is named by its commit
        self.euid = euid  # ... if this user owns it
        self.error = ""  # set when signing failed
        self.written = False

    def __call__(self, result: BuildResult, directory: Path) -> None:
        if not result.built or not result.outputs:
            return  # a statement needs subjects: a failed build has none
        source = (
            git_source(self.source_dir, result.source_digest, euid=self.euid)
            if self.source_dir is not None
            else None
        )
        payload = provenance_statement(
            result,
            spec_document=self.spec_document,
            result_json=(directory / RESULT_FILE).read_bytes(),
            builder_id=self.builder_id,
            spec_sha256=self.spec_sha256,
            source=source,
        )
        envelope, self.error = signed_envelope(payload, self.signers)
        write_envelope(directory / PROVENANCE_FILE, envelope)
        self.written = True
