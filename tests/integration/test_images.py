"""Images are themselves reproducible: the same recipe gives the same digest twice."""

from __future__ import annotations

import pytest

from sandbox.config import SandboxConfig
from sandbox.image_build import ImageBuildStatus, build_image
from sandbox.images import ImageCatalog
from sandbox.podman_api import PodmanSession


@pytest.mark.slow
def test_minimal_image_builds_bit_for_bit_twice(
    podman_session: PodmanSession, sandbox_config: SandboxConfig, minimal_image: str
) -> None:
    definition = ImageCatalog(sandbox_config.images_dir).get(minimal_image)
    first = build_image(
        definition, store=podman_session, work_dir=sandbox_config.work_dir, rebuild=True
    )
    second = build_image(
        definition, store=podman_session, work_dir=sandbox_config.work_dir, rebuild=True
    )
    assert first.built.image_digest == second.built.image_digest
    assert first.built.rootfs_digest == second.built.rootfs_digest
    assert first.built.packages == second.built.packages
    lock = definition.lock
    assert lock is not None
    if first.built.image_digest == lock.image_digest:
        assert first.status is ImageBuildStatus.MATCHES_LOCK
        assert podman_session.image_exists(lock.reference)
    else:
        # The Debian archive moved on since the lock was written: the build must say
        # so, name the packages that changed, and load nothing.
        assert first.status is ImageBuildStatus.MISMATCH
        assert first.package_changes()
