"""The SBOM of a build: the image's Debian packages (from its lock), the pinned inputs, the
source tree and the outputs, as SPDX 2.3 JSON (default) or CycloneDX 1.5 JSON, written
beside the outputs and, with a key, signed as an in-toto Statement like the provenance.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from rebuilder import purls
from rebuilder.attest.attestor import signed_envelope
from rebuilder.attest.envelope import write_envelope
from rebuilder.formats.fields import Subject
from rebuilder.formats.sbom import Sbom
from sandbox.build import ARTIFACTS_DIR
from sandbox.config import SandboxConfig
from sandbox.errors import Error
from sandbox.images import ImageCatalog, ImageLock
from sandbox.result import BuildResult
from sandbox.spec import Spec
from sandbox.uris import CYCLONEDX_PREDICATE, SPDX_NAMESPACE, SPDX_PREDICATE
from sandbox.workspace import write_atomically

if TYPE_CHECKING:
    from securesystemslib.signer import Signer

SPDX_FILE = "sbom.spdx.json"
CYCLONEDX_FILE = "sbom.cdx.json"
SBOM_ATTESTATION_FILE = "sbom.intoto.json"
_NAMESPACE = uuid.UUID("6b7c4a1e-1f0c-4a53-9d0e-68e7a1b3c2d5")  # hermetic's, for uuid5


class SbomFormat(StrEnum):
    """The SBOM formats ``hermetic build --sbom-format`` writes."""

    SPDX = "spdx"
    CYCLONEDX = "cyclonedx"


@dataclass(frozen=True, kw_only=True)
class ImageContents:
    """The build image as the SBOM lists it: what its lock says was installed."""

    reference: str  # repository@sha256:…
    packages: tuple[tuple[str, str], ...]  # (name, version), from the lock
    suite: str | None = None
    known: bool = False  # False: an image hermetic did not build (its packages are unknown)
    # the archive the packages come from, when it is not Debian's own (None: Debian's)
    repository_url: str | None = None

    def purl(self, name: str, version: str) -> str:
        """A package's purl: Debian's, or qualified by the archive it came from."""
        return purls.deb(name, version, distro=self.suite, repository_url=self.repository_url)

    @property
    def supplier(self) -> str:
        return "NOASSERTION" if self.repository_url else "Organization: Debian"


def image_contents(spec: Spec, image_reference: str, config: SandboxConfig) -> ImageContents:
    """The packages of the image a build used, from the lock of its recipe.

    Only a lock that names exactly this image counts: a registry image, or a lock that
    changed since, gives an image whose packages the SBOM does not assert.
    """
    try:
        definition = ImageCatalog(config.images_dir).definition(
            spec.image, spec_dir=spec.path.resolve().parent
        )
        lock = ImageLock.load(definition.lock_path) if definition is not None else None
    except Error:
        return ImageContents(reference=image_reference, packages=())
    if definition is None or lock is None or lock.reference != image_reference:
        return ImageContents(reference=image_reference, packages=())
    recipe = definition.recipe
    archives = [recipe.mirror, *([recipe.security_mirror] if "security" in recipe.archives else [])]
    return ImageContents(
        reference=image_reference,
        packages=tuple(sorted(lock.packages.items())),
        suite=recipe.suite,
        known=True,
        repository_url=None if all(purls.debian_archive(a) for a in archives) else recipe.mirror,
    )


def download_location(url: str) -> str:
    """The URL as SPDX's downloadLocation, or NOASSERTION when SPDX's validators would not
    take it as a URL (a file:// path, an IP address, localhost: a host without a
    top-level domain); the URL is then kept in the package's comment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return "NOASSERTION"
    labels = host.split(".")
    named = (
        len(labels) >= 2
        and all(re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*", label) for label in labels)
        and re.fullmatch(r"[a-z]{2,63}", labels[-1]) is not None
    )
    if parts.scheme in ("http", "https") and named and not parts.username:
        return url
    return "NOASSERTION"


def _digests(path: Path) -> tuple[str, str]:
    """sha1 (which SPDX 2.3 requires of files) and sha256 of a file."""
    sha1, sha256 = hashlib.sha1(usedforsecurity=False), hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            sha1.update(chunk)
            sha256.update(chunk)
    return sha1.hexdigest(), sha256.hexdigest()


def _created(result: BuildResult) -> str:
    return result.finished_at.split(".")[0].removesuffix("Z") + "Z"


def spdx_document(
    result: BuildResult, image: ImageContents, artifacts: Path, version: str
) -> dict[str, Any]:
    """The SPDX 2.3 document of a built result (pure but for hashing the artifacts)."""
    repository, _, image_digest = result.image.partition("@")
    image_package: dict[str, Any] = {
        "SPDXID": "SPDXRef-Image",
        "name": repository,
        "versionInfo": image_digest,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": False,
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [{"algorithm": "SHA256", "checksumValue": image_digest.split(":")[-1]}],
        "externalRefs": [_purl_ref(purls.oci(result.image))],
    }
    if not image.known:
        image_package["comment"] = "not built by hermetic: its packages are not listed"
    packages = [
        image_package,
        {
            "SPDXID": "SPDXRef-Source",
            "name": "source",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "primaryPackagePurpose": "SOURCE",
            "checksums": [{"algorithm": "SHA256", "checksumValue": result.source_digest}],
            "comment": "the staged source tree; its SHA256 is hermetic's tree digest",
        },
    ]
    relationships: list[dict[str, str]] = []
    for index, (name, version_info) in enumerate(image.packages, 1):
        element = f"SPDXRef-Deb-{index}"
        packages.append(
            {
                "SPDXID": element,
                "name": name.partition(":")[0],
                "versionInfo": version_info,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": False,
                "supplier": image.supplier,
                "externalRefs": [_purl_ref(image.purl(name, version_info))],
            }
        )
        relationships.append(_relation("SPDXRef-Image", "CONTAINS", element))
    inputs = []
    for index, item in enumerate(result.inputs, 1):
        element = f"SPDXRef-Input-{index}"
        location = download_location(item.url)
        entry: dict[str, Any] = {
            "SPDXID": element,
            "name": item.dest,
            "downloadLocation": location,
            "filesAnalyzed": False,
            "checksums": [{"algorithm": "SHA256", "checksumValue": item.sha256}],
        }
        if location != item.url:
            entry["comment"] = f"fetched from {item.url}"
        if purl := purls.for_url(item.url):
            entry["externalRefs"] = [_purl_ref(purl)]
        packages.append(entry)
        inputs.append(element)
    files = []
    for index, output in enumerate(result.outputs, 1):
        element = f"SPDXRef-Output-{index}"
        path = artifacts / output.path
        if output.target is not None or not path.is_file():
            continue  # a symbolic link: its target is an output of its own, or outside
        sha1, sha256 = _digests(path)
        files.append(
            {
                "SPDXID": element,
                "fileName": f"./{output.path}",
                "checksums": [
                    {"algorithm": "SHA1", "checksumValue": sha1},
                    {"algorithm": "SHA256", "checksumValue": sha256},
                ],
            }
        )
        relationships.append(_relation("SPDXRef-DOCUMENT", "DESCRIBES", element))
        relationships.append(_relation(element, "GENERATED_FROM", "SPDXRef-Source"))
        relationships.append(_relation("SPDXRef-Image", "BUILD_DEPENDENCY_OF", element))
        relationships.extend(_relation(item, "BUILD_DEPENDENCY_OF", element) for item in inputs)
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"hermetic build {result.build_id}",
        "documentNamespace": f"{SPDX_NAMESPACE}/{result.digest}/{result.build_id}",
        "creationInfo": {"created": _created(result), "creators": [f"Tool: hermetic-{version}"]},
        "packages": packages,
        "files": files,
        "relationships": relationships,
    }


def cyclonedx_document(result: BuildResult, image: ImageContents, version: str) -> dict[str, Any]:
    """The CycloneDX 1.5 BOM of a built result (pure)."""
    repository, _, image_digest = result.image.partition("@")
    debs = [
        {
            "type": "library",
            "bom-ref": f"deb:{name}",
            "name": name.partition(":")[0],
            "version": version_info,
            "purl": image.purl(name, version_info),
        }
        for name, version_info in image.packages
    ]
    container: dict[str, Any] = {
        "type": "container",
        "bom-ref": "image",
        "name": repository,
        "version": image_digest,
        "hashes": [{"alg": "SHA-256", "content": image_digest.split(":")[-1]}],
        "purl": purls.oci(result.image),
    }
    if debs:
        container["components"] = debs
    components: list[dict[str, Any]] = [
        container,
        {
            "type": "file",
            "bom-ref": "source",
            "name": "source",
            "hashes": [{"alg": "SHA-256", "content": result.source_digest}],
            "description": "the staged source tree; its SHA-256 is hermetic's tree digest",
        },
    ]
    input_refs = []
    for item in result.inputs:
        entry: dict[str, Any] = {
            "type": "file",
            "bom-ref": f"input:{item.dest}",
            "name": item.dest,
            "hashes": [{"alg": "SHA-256", "content": item.sha256}],
            "externalReferences": [{"type": "distribution", "url": item.url}],
        }
        if purl := purls.for_url(item.url):
            entry["purl"] = purl
        components.append(entry)
        input_refs.append(entry["bom-ref"])
    dependencies = []
    for output in result.outputs:
        components.append(
            {
                "type": "file",
                "bom-ref": f"output:{output.path}",
                "name": output.path,
                "hashes": [{"alg": "SHA-256", "content": output.sha256}],
            }
        )
        dependencies.append(
            {"ref": f"output:{output.path}", "dependsOn": ["image", "source", *input_refs]}
        )
    dependencies.append({"ref": "image", "dependsOn": [d["bom-ref"] for d in debs]})
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid5(_NAMESPACE, result.build_id)}",
        "version": 1,
        "metadata": {
            "timestamp": _created(result),
            "tools": {
                "components": [{"type": "application", "name": "hermetic", "version": version}]
            },
        },
        "components": components,
        "dependencies": dependencies,
    }


def _purl_ref(purl: str) -> dict[str, str]:
    return {
        "referenceCategory": "PACKAGE-MANAGER",
        "referenceType": "purl",
        "referenceLocator": purl,
    }


def _relation(element: str, kind: str, related: str) -> dict[str, str]:
    return {"spdxElementId": element, "relationshipType": kind, "relatedSpdxElement": related}


class SbomWriter:
    """The SBOM hook of a build: writes the SBOM (and, with signers, its attestation)."""

    def __init__(
        self,
        *,
        image: Callable[[BuildResult], ImageContents],
        sbom_format: SbomFormat = SbomFormat.SPDX,
        signers: Sequence[Signer] = (),
    ) -> None:
        self.image = image
        self.sbom_format = sbom_format
        self.signers = tuple(signers)
        self.error = ""  # set when signing failed
        self.written: list[str] = []

    def __call__(self, result: BuildResult, directory: Path) -> None:
        if not result.built or not result.outputs:
            return  # nothing was built: there is nothing for an SBOM to describe
        contents = self.image(result)
        if self.sbom_format is SbomFormat.SPDX:
            name, predicate_type = SPDX_FILE, SPDX_PREDICATE
            document = spdx_document(
                result, contents, directory / ARTIFACTS_DIR, result.hermetic_version
            )
        else:
            name, predicate_type = CYCLONEDX_FILE, CYCLONEDX_PREDICATE
            document = cyclonedx_document(result, contents, result.hermetic_version)
        write_atomically(directory / name, json.dumps(document, indent=2).encode() + b"\n")
        self.written.append(name)
        if self.signers:
            subjects = [Subject(item.path, item.sha256) for item in result.outputs]
            payload = Sbom(predicate_type=predicate_type, document=document).statement(subjects)
            envelope, self.error = signed_envelope(payload, self.signers)
            write_envelope(directory / SBOM_ATTESTATION_FILE, envelope)
            self.written.append(SBOM_ATTESTATION_FILE)
