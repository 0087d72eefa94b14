"""Deterministic OCI image archives from one root filesystem tarball.

Fixed config, a single uncompressed layer, fixed timestamps and canonical JSON: the
same rootfs gives the same manifest digest on every machine.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox.digests import Sha256, canonical_json, sha256_bytes

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _canonical(value: Any) -> bytes:
    return canonical_json(value, ascii_only=False)


@dataclass(frozen=True, kw_only=True)
class OciImage:
    """The small JSON documents of an image, and their digests."""

    config: bytes
    manifest: bytes
    index: bytes
    layer_digest: Sha256
    layer_size: int

    @property
    def config_digest(self) -> Sha256:
        return sha256_bytes(self.config)

    @property
    def manifest_digest(self) -> Sha256:
        return sha256_bytes(self.manifest)


def describe_image(
    *,
    layer_digest: Sha256,
    layer_size: int,
    architecture: str,
    created: int,
    ref_name: str,
    labels: dict[str, str],
) -> OciImage:
    """Compose config, manifest and index for a single-layer image (pure).

    Args:
        layer_digest: sha256 of the uncompressed rootfs tarball.
        layer_size: its size in bytes.
        architecture: OCI architecture (amd64, arm64, ...).
        created: SOURCE_DATE_EPOCH, the image's only timestamp.
        ref_name: tag podman gives the image on load.
        labels: image labels (recipe digest and the like).
    """
    timestamp = datetime.fromtimestamp(created, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = _canonical(
        {
            "architecture": architecture,
            "os": "linux",
            "created": timestamp,
            "config": {
                "Env": [f"PATH={DEFAULT_PATH}"],
                "Cmd": ["/bin/sh"],
                "WorkingDir": "/",
                "Labels": labels,
            },
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
            "history": [{"created": timestamp, "created_by": "hermetic image build (mmdebstrap)"}],
        }
    )
    manifest = _canonical(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {
                "mediaType": MEDIA_CONFIG,
                "digest": f"sha256:{sha256_bytes(config)}",
                "size": len(config),
            },
            "layers": [
                {"mediaType": MEDIA_LAYER, "digest": f"sha256:{layer_digest}", "size": layer_size}
            ],
        }
    )
    index = _canonical(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": MEDIA_MANIFEST,
                    "digest": f"sha256:{sha256_bytes(manifest)}",
                    "size": len(manifest),
                    "annotations": {"org.opencontainers.image.ref.name": ref_name},
                }
            ],
        }
    )
    return OciImage(
        config=config,
        manifest=manifest,
        index=index,
        layer_digest=layer_digest,
        layer_size=layer_size,
    )


def write_archive(image: OciImage, layer: Path, archive: Path) -> None:
    """Write an OCI image layout as a tar archive (``oci-archive``), entries in fixed order."""

    def entry(name: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = 0
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (
            ("oci-layout", _canonical({"imageLayoutVersion": "1.0.0"})),
            ("index.json", image.index),
            (f"blobs/sha256/{image.config_digest}", image.config),
            (f"blobs/sha256/{image.manifest_digest}", image.manifest),
        ):
            tar.addfile(entry(name, len(data)), io.BytesIO(data))
        with layer.open("rb") as stream:
            tar.addfile(entry(f"blobs/sha256/{image.layer_digest}", image.layer_size), stream)
