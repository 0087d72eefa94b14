"""``hermetic keygen`` and ``hermetic verify``: signing keys, and checking attestations."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from rebuilder.cli.common import EXIT_NEGATIVE, EXIT_OK, JsonOption, guarded, sigstore_trust
from rebuilder.cli.output import Output, Report


def keygen(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="PATH",
            help="Private key path; the public key goes to PATH.pub "
            "(default: $XDG_CONFIG_HOME/hermetic/signing-key).",
        ),
    ] = None,
    passphrase: Annotated[
        bool, typer.Option("--passphrase", help="Encrypt the private key (asked twice).")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Make an ed25519 signing key pair (private key mode 0600). Exit 0 / 2."""
    output = Output.chosen(json_output)
    with guarded(ctx, output) as cli:
        from rebuilder.attest.keys import KeyProblem, generate_keypair

        path = (out or cli.settings().signing.default_key).resolve()
        secret = None
        if passphrase:
            if not sys.stdin.isatty():
                raise KeyProblem("--passphrase needs a terminal to ask on")
            secret = typer.prompt("passphrase", hide_input=True, confirmation_prompt=True).encode()
        keyid = generate_keypair(path, secret)
        document = {
            "private_key": str(path),
            "public_key": f"{path}.pub",
            "keyid": keyid,
            "encrypted": secret is not None,
        }
        output.result(
            Report(
                document,
                lambda: "\n".join(
                    [
                        f"private key  {path} (0600{', encrypted' if secret else ''})",
                        f"public key   {path}.pub",
                        f"key id       {keyid}",
                    ]
                ),
            )
        )


def verify(
    ctx: typer.Context,
    attestation: Annotated[
        Path,
        typer.Argument(
            metavar="ATTESTATION", help="A DSSE envelope (*.intoto.json) or a Sigstore bundle."
        ),
    ],
    key: Annotated[
        list[Path],
        typer.Option(
            "--key",
            metavar="KEY",
            help="Public key (PEM or securesystemslib JSON) or Sigstore identity; repeatable.",
        ),
    ],
    artifact: Annotated[
        list[Path] | None,
        typer.Option(
            "--artifact", metavar="FILE", help="A file whose sha256 must be a subject; repeatable."
        ),
    ] = None,
    threshold: Annotated[
        int | None,
        typer.Option(
            "--threshold", min=1, metavar="K", help="Distinct keys that must sign (default: all)."
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Check an attestation's signatures, types and subjects. Exit 0 / 1 / 2."""
    output = Output.chosen(json_output)
    with guarded(ctx, output) as cli:
        from rebuilder import render
        from rebuilder.attest.keys import KeyProblem, KeyRing, load_public_key
        from rebuilder.attest.verify import verify_attestation

        keys = [load_public_key(path) for path in key]
        distinct = len(KeyRing.of(keys))  # by key material: two spellings are one key
        if threshold is not None and threshold > distinct:
            raise KeyProblem(
                f"--threshold {threshold} is more than the {distinct} distinct key(s) given "
                f"(expected 1 to {distinct})"
            )
        for path in artifact or []:
            if not path.is_file():
                raise KeyProblem(f"{path}: no such artifact file")
        outcome = verify_attestation(
            attestation,
            keys,
            threshold=threshold,
            artifacts=artifact or [],
            trust=sigstore_trust(cli.settings()),
        )
        output.result(Report(outcome.to_json(), lambda: render.verification(outcome)))
        raise typer.Exit(EXIT_OK if outcome.ok else EXIT_NEGATIVE)
