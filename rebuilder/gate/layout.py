"""The policy as an in-toto layout, for verifiers that speak in-toto.

One step, ``rebuild``, with the policy's threshold and one functionary key per operator
(in-toto counts keys, not operators: each operator's first key stands for it, so an
operator signs its in-toto links with that key). An inspection, run by the verifier in a
directory holding the artifacts, requires every file there to MATCH the products the
rebuilders agreed on; anything else is disallowed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from in_toto.models.layout import Inspection, Layout, Step
from in_toto.models.metadata import Metablock
from securesystemslib.signer import Signer, SSlibKey

from rebuilder.gate.policy import Policy, PolicyError

REBUILD_STEP = "rebuild"


def policy_layout(policy: Policy, *, valid_for: timedelta = timedelta(days=365)) -> Layout:
    """The layout (unsigned) that states the policy's core rule."""
    layout = Layout()
    layout.expires = (datetime.now(tz=UTC) + valid_for).strftime("%Y-%m-%dT%H:%M:%SZ")
    keyids = []
    for operator in policy.operators:
        key = operator.keys[0]
        if not isinstance(key, SSlibKey):
            raise PolicyError(
                f"{policy.path}: operator {operator.name!r}: in-toto layouts need a public key, "
                "not a Sigstore identity"
            )
        layout.add_functionary_key({"keyid": key.keyid, **key.to_dict()})
        keyids.append(key.keyid)
    layout.steps = [
        Step(
            name=REBUILD_STEP,
            threshold=policy.threshold,
            pubkeys=keyids,
            expected_materials=[["ALLOW", "*"]],
            expected_products=[["ALLOW", "*"]],
            expected_command=[],
        )
    ]
    layout.inspect = [
        Inspection(
            name="release-artifacts",
            run=["true"],
            expected_materials=[
                ["MATCH", "*", "WITH", "PRODUCTS", "FROM", REBUILD_STEP],
                ["DISALLOW", "*"],
            ],
            expected_products=[["ALLOW", "*"]],
        )
    ]
    layout.validate()
    return layout


def write_layout(policy: Policy, signer: Signer, path: Path) -> Path:
    """The layout, signed by the release owner's key, as in-toto reads it."""
    metablock = Metablock(signed=policy_layout(policy))
    metablock.create_signature(signer)
    metablock.dump(str(path))
    return path
