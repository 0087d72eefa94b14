"""Every predicate, build-type and schema URI (and media type) hermetic writes or reads,
defined once.

Here, at the bottom of the import graph, so that the sandbox (``result.json``,
``trace.json``) and the rebuilder (statements, reports) name their formats from one table.
"""

from __future__ import annotations

from typing import Final

# documents hermetic writes beside a build or a check (their "_schema")
RESULT_SCHEMA: Final = "https://hermetic.dev/schemas/build-result/v1"
TRACE_SCHEMA: Final = "https://hermetic.dev/schemas/trace/v1"
CHECK_SCHEMA: Final = "https://hermetic.dev/schemas/check-result/v1"

# in-toto statements: the predicate types hermetic writes and reads
SLSA_PROVENANCE: Final = "https://slsa.dev/provenance/v1"
SLSA_VSA: Final = "https://slsa.dev/verification_summary/v1"
CHECK_PREDICATE: Final = "https://hermetic.dev/attestations/check/v1"
FAILURE_PREDICATE: Final = "https://hermetic.dev/attestations/rebuild-failure/v1"
DISAGREEMENT_PREDICATE: Final = "https://hermetic.dev/attestations/rebuild-disagreement/v1"
# v2: names the source and spec, and only nodes that check them and the time sign it
AGREEMENT_PREDICATE: Final = "https://hermetic.dev/attestations/rebuild-agreement/v2"
POLICY_PREDICATE: Final = "https://hermetic.dev/attestations/gate-policy/v1"
SPDX_PREDICATE: Final = "https://spdx.dev/Document"
CYCLONEDX_PREDICATE: Final = "https://cyclonedx.org/bom"

# what kind of build a provenance describes, and who built it
BUILD_TYPE: Final = "https://hermetic.dev/build-types/podman-sandbox/v1"
LOCAL_BUILDER: Final = "https://hermetic.dev/builders/local"
NODE_BUILDER: Final = "https://hermetic.dev/builders/node"
SPDX_NAMESPACE: Final = "https://hermetic.dev/spdx"

# media types of what carries a statement
PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"  # a DSSE payload that is in-toto
BUNDLE_MEDIA_TYPE: Final = "application/vnd.dev.sigstore.bundle"  # and its versions
