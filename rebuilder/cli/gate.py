"""``hermetic gate``, ``sign-policy`` and ``layout``: the release gate and its policy."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from rebuilder.cli.common import (
    EXIT_NEGATIVE,
    EXIT_OK,
    JsonOption,
    TokenOption,
    ask_passphrase,
    guarded,
    load_signers,
    sigstore_trust,
)
from rebuilder.cli.output import Output, Report

PolicyOption = Annotated[
    Path, typer.Option("--policy", metavar="POLICY", help="The gate's policy (TOML).")
]


def gate(
    ctx: typer.Context,
    artifacts: Annotated[
        list[Path], typer.Argument(metavar="ARTIFACT", help="The files to admit or deny.")
    ],
    policy: PolicyOption,
    attestations: Annotated[
        list[str] | None,
        typer.Option(
            "--attestations",
            metavar="DIR|URL",
            help="A directory, or a node URL; repeatable (default: the policy's nodes).",
        ),
    ] = None,
    policy_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--policy-key",
            metavar="KEY",
            help="A policy owner's public key; repeatable. The policy must carry their "
            "signatures (POLICY.intoto.json).",
        ),
    ] = None,
    policy_threshold: Annotated[
        int | None,
        typer.Option(
            "--policy-threshold",
            min=1,
            metavar="K",
            help="Owners who must have signed (default: all).",
        ),
    ] = None,
    policy_signature: Annotated[
        Path | None,
        typer.Option(
            "--policy-signature",
            metavar="FILE",
            help="The policy's signatures (default: beside it).",
        ),
    ] = None,
    policy_min_version: Annotated[
        int | None,
        typer.Option(
            "--policy-min-version",
            min=1,
            metavar="N",
            help="Refuse a signed policy whose version is lower (an older one put back).",
        ),
    ] = None,
    json_output: JsonOption = False,
    vsa_key: Annotated[
        str | None,
        typer.Option("--vsa-key", metavar="KEY", help="Sign a SLSA VSA per admitted artifact."),
    ] = None,
    vsa_dir: Annotated[
        Path, typer.Option("--vsa-dir", metavar="DIR", help="Where the VSAs go.")
    ] = Path("hermetic-vsa"),
    token: TokenOption = None,
) -> None:
    """Admit artifacts only on matching digests from enough trusted operators. Exit 0/1/2."""
    output = Output.chosen(json_output)
    with guarded(ctx, output) as cli:
        import json

        from rebuilder import render
        from rebuilder.attest.keys import load_public_key, load_signer
        from rebuilder.gate.gate import GateError, decisions_json, run_gate, write_vsa
        from rebuilder.gate.policy import PolicyError, load_policy
        from rebuilder.gate.policy_signature import load_signed_policy
        from rebuilder.node.client import Credentials

        settings = cli.settings()
        now = datetime.now(tz=UTC)
        if policy_key:
            owners = [load_public_key(path) for path in policy_key]
            loaded = load_signed_policy(
                policy,
                owners,
                threshold=policy_threshold,
                signature=policy_signature,
                now=now,
                min_version=policy_min_version,
            )
        elif any(o is not None for o in (policy_threshold, policy_signature, policy_min_version)):
            raise PolicyError(
                "--policy-threshold, --policy-signature and --policy-min-version need --policy-key"
            )
        else:
            loaded = load_policy(policy, now=now)
        signer = load_signer(vsa_key, ask_passphrase(vsa_key)) if vsa_key else None
        credentials = Credentials(token=token or settings.node.token)
        sources = attestations or [url for op in loaded.operators for url in op.nodes]
        if not sources:
            raise GateError(
                "no attestations to read: pass --attestations DIR|URL, or list the operators' "
                "nodes in the policy"
            )
        decisions, read = run_gate(
            artifacts,
            loaded,
            sources,
            credentials=credentials,
            now=now,
            trust=sigstore_trust(settings),
        )
        vsas: dict[str, Path] = {}
        if signer is not None:
            for decision in decisions:
                if decision.admitted:
                    vsas[decision.artifact] = write_vsa(
                        decision,
                        loaded,
                        read,
                        signer=signer,
                        verifier_id=settings.signing.local_builder_id(),
                        directory=vsa_dir,
                        now=now,
                    )
        document = json.loads(decisions_json(decisions, vsas))
        output.result(Report(document, lambda: render.gate_decisions(decisions, vsas)))
        admitted = all(decision.admitted for decision in decisions)
        raise typer.Exit(EXIT_OK if admitted else EXIT_NEGATIVE)


def sign_policy(
    ctx: typer.Context,
    policy: Annotated[Path, typer.Argument(metavar="POLICY", help="The gate's policy (TOML).")],
    key: Annotated[
        list[str],
        typer.Option("--key", metavar="KEY", help="A policy owner's signing key; repeatable."),
    ],
    json_output: JsonOption = False,
) -> None:
    """Sign a gate policy as one of its owners (signatures go to POLICY.intoto.json). 0 / 2."""
    output = Output.chosen(json_output)
    with guarded(ctx, output):
        from rebuilder.gate.policy_signature import sign_policy

        written = sign_policy(policy, load_signers(key), now=datetime.now(tz=UTC))
        output.result(Report({"signatures": str(written)}, lambda: f"signed  {written}"))


def layout(
    ctx: typer.Context,
    policy: PolicyOption,
    key: Annotated[
        str, typer.Option("--key", metavar="KEY", help="The release owner's signing key.")
    ],
    out: Annotated[
        Path, typer.Option("--out", metavar="FILE", help="The signed in-toto layout.")
    ] = Path("root.layout"),
    json_output: JsonOption = False,
) -> None:
    """Export the gate policy as a signed in-toto layout. Exit 0 / 2."""
    output = Output.chosen(json_output)
    with guarded(ctx, output):
        from rebuilder.attest.keys import load_signer
        from rebuilder.gate.layout import write_layout
        from rebuilder.gate.policy import load_policy

        written = write_layout(load_policy(policy), load_signer(key, ask_passphrase(key)), out)
        output.result(Report({"layout": str(written)}, lambda: f"layout  {written}"))
