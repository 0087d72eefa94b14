"""``hermetic node serve|worker|token``: run a rebuilder node, its workers, its tokens."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rebuilder.cli.build import sandbox_config
from rebuilder.cli.common import (
    AllowRootOption,
    JsonOption,
    ask_passphrase,
    guarded,
    size_option,
)
from rebuilder.cli.output import Output, Report

if TYPE_CHECKING:
    from rebuilder.node.requests import RequestLimits
    from sandbox.input_policy import InputPolicy

# What a node accepts of a stranger's request: options of both `node serve` and
# `node worker` (a worker takes its rules from its own options, never from a task).
AllowInputOption = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-input",
        metavar="PREFIX",
        help="URL prefix inputs may be fetched from; repeatable (default: https://).",
    ),
]
AllowInputNetworkOption = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-input-network",
        metavar="CIDR",
        help="A non-public network inputs may come from (e.g. a mirror); repeatable.",
    ),
]
MaxInputOption = Annotated[
    str, typer.Option("--max-input", metavar="SIZE", help="Largest input; a fetch stops there.")
]
InputDeadlineOption = Annotated[
    float,
    typer.Option(
        "--input-deadline", min=1, metavar="S", help="Seconds for all of one job's input fetches."
    ),
]
MaxUnpackedOption = Annotated[
    str, typer.Option("--max-unpacked", metavar="SIZE", help="Largest request once unpacked.")
]
MaxMembersOption = Annotated[
    int, typer.Option("--max-members", min=1, metavar="N", help="Most files in one request.")
]
MaxTimeoutOption = Annotated[
    str,
    typer.Option("--max-timeout", metavar="DURATION", help="Largest limits.timeout of a spec."),
]
MaxMemoryOption = Annotated[
    str, typer.Option("--max-memory", metavar="SIZE", help="Largest limits.memory of a spec.")
]
MaxPidsOption = Annotated[
    int, typer.Option("--max-pids", min=1, metavar="N", help="Largest limits.pids of a spec.")
]
MaxDiskOption = Annotated[
    str, typer.Option("--max-disk", metavar="SIZE", help="Largest limits.disk of a spec.")
]
MaxLogOption = Annotated[
    str, typer.Option("--max-log", metavar="SIZE", help="Largest limits.log of a spec.")
]
MaxInputsOption = Annotated[
    int, typer.Option("--max-inputs", min=0, metavar="N", help="Most [[inputs]] in one spec.")
]
MaxOutputOption = Annotated[
    str,
    typer.Option("--max-output", metavar="SIZE", help="Largest outputs of one build, together."),
]


def _request_rules(
    *,
    allow_input: list[str] | None,
    allow_input_network: list[str] | None,
    max_input: str,
    input_deadline: float,
    max_unpacked: str,
    max_members: int,
    max_timeout: str,
    max_memory: str,
    max_pids: int,
    max_disk: str,
    max_log: str,
    max_inputs: int,
    max_output: str,
) -> tuple[InputPolicy, RequestLimits]:
    """A node's (or worker's) input policy and request limits from its options."""
    from rebuilder.node.requests import RequestLimits
    from sandbox.input_policy import InputPolicy, host_addresses
    from sandbox.spec import Limits
    from sandbox.units import parse_duration

    try:
        input_policy = InputPolicy.of(
            allow=allow_input or [],
            networks=allow_input_network or [],
            max_bytes=size_option(max_input, "--max-input"),
            deadline_s=input_deadline,
            own=host_addresses(),  # the node's own addresses are as internal as loopback
        )
    except ValueError as e:
        raise typer.BadParameter(f"--allow-input / --allow-input-network: {e}") from None
    try:
        timeout_s = parse_duration(max_timeout)
    except ValueError as e:
        raise typer.BadParameter(f"--max-timeout: {e}") from None
    limits = RequestLimits(
        max_members=max_members,
        max_unpacked_bytes=size_option(max_unpacked, "--max-unpacked"),
        ceilings=Limits(
            timeout_s=timeout_s,
            memory_bytes=size_option(max_memory, "--max-memory"),
            pids=max_pids,
            disk_bytes=size_option(max_disk, "--max-disk"),
            log_bytes=size_option(max_log, "--max-log"),
        ),
        max_inputs=max_inputs,
        max_output_bytes=size_option(max_output, "--max-output"),
    )
    return input_policy, limits


BrokerOption = Annotated[
    str | None,
    typer.Option(
        "--broker",
        metavar="URL",
        help="redis://:PASSWORD@… or rediss://…: the Celery broker (default: HERMETIC_BROKER).",
    ),
]


def node_serve(
    ctx: typer.Context,
    directory: Annotated[
        Path,
        typer.Option(
            "--dir", metavar="DIR", help="The node's own directory: queue, store, results."
        ),
    ],
    key: Annotated[
        str, typer.Option("--key", metavar="KEY", help="The node's signing key (as --sign).")
    ],
    listen: Annotated[
        str, typer.Option("--listen", metavar="HOST:PORT", help="Where the API listens.")
    ] = "127.0.0.1:8470",
    tokens: Annotated[
        Path | None,
        typer.Option("--tokens", metavar="FILE", help="Tokens file ('hermetic node token')."),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", metavar="FILE", help="Server certificate.")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", metavar="FILE", help="Server key.")
    ] = None,
    client_ca: Annotated[
        Path | None,
        typer.Option("--client-ca", metavar="FILE", help="Mutual TLS: CA of client certificates."),
    ] = None,
    builder_id: Annotated[
        str | None,
        typer.Option(
            "--builder-id",
            metavar="ID",
            help="Identity in provenance (default: HERMETIC_BUILDER_ID, else the URL).",
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, metavar="N", help="Builds at once.")
    ] = 1,
    broker: BrokerOption = None,
    lease: Annotated[
        float,
        typer.Option(
            "--lease", min=1, metavar="S", help="Seconds before a silent worker's job is reclaimed."
        ),
    ] = 60.0,
    deadline: Annotated[
        float, typer.Option("--deadline", min=1, metavar="S", help="Seconds per job.")
    ] = 3600.0,
    max_attempts: Annotated[
        int, typer.Option("--max-attempts", min=1, metavar="N", help="Attempts per job.")
    ] = 3,
    max_jobs: Annotated[
        int, typer.Option("--max-jobs", min=1, metavar="N", help="Queued + running.")
    ] = 16,
    max_request: Annotated[
        str, typer.Option("--max-request", metavar="SIZE", help="Largest request.")
    ] = "64MiB",
    max_unpacked: MaxUnpackedOption = "1GiB",
    max_members: MaxMembersOption = 100_000,
    allow_input: AllowInputOption = None,
    allow_input_network: AllowInputNetworkOption = None,
    max_input: MaxInputOption = "2GiB",
    input_deadline: InputDeadlineOption = 900.0,
    max_timeout: MaxTimeoutOption = "1h",
    max_memory: MaxMemoryOption = "8GiB",
    max_pids: MaxPidsOption = 16384,
    max_disk: MaxDiskOption = "20GiB",
    max_log: MaxLogOption = "256MiB",
    max_inputs: MaxInputsOption = 64,
    max_output: MaxOutputOption = "4GiB",
    min_free_disk: Annotated[
        str,
        typer.Option(
            "--min-free-disk", metavar="SIZE", help="No request or build below this free space."
        ),
    ] = "2GiB",
    max_client_jobs: Annotated[
        int,
        typer.Option(
            "--max-client-jobs", min=1, metavar="N", help="Queued + running of one client."
        ),
    ] = 4,
    client_quota: Annotated[
        str,
        typer.Option(
            "--client-quota", metavar="SIZE", help="What one client's jobs may keep on disk."
        ),
    ] = "20GiB",
    retention_days: Annotated[
        float,
        typer.Option(
            "--retention-days",
            min=0.001,
            metavar="DAYS",
            help="Days a finished job's results stay.",
        ),
    ] = 7.0,
    max_connections: Annotated[
        int,
        typer.Option(
            "--max-connections", min=1, metavar="N", help="Open HTTP connections at most."
        ),
    ] = 256,
    client_scopes: Annotated[
        Path | None,
        typer.Option(
            "--client-scopes", metavar="FILE", help="Mutual TLS: certificate subjects -> scopes."
        ),
    ] = None,
    rate: Annotated[
        int,
        typer.Option("--rate", min=1, metavar="N", help="Requests per minute per client."),
    ] = 600,
    allow_root: AllowRootOption = False,
) -> None:
    """Serve rebuilds over HTTP with this node's key. Runs until interrupted."""
    output = Output.chosen(False)
    with guarded(ctx, output) as cli:
        from rebuilder.attest.keys import KeyProblem, load_signer
        from rebuilder.node.api import ApiSettings
        from rebuilder.node.auth import ClientScopes, TokenRegistry
        from rebuilder.node.node import Node, NodeSettings
        from rebuilder.node.serve import Listen, serve
        from sandbox.uris import NODE_BUILDER

        settings = cli.settings()
        config = sandbox_config(settings, allow_root)
        tls = [tls_cert, tls_key, client_ca]
        if any(tls) and not (tls_cert and tls_key):
            raise KeyProblem("TLS needs both --tls-cert and --tls-key (and --client-ca for mTLS)")
        if tokens is None and not (all(tls) and client_scopes):
            raise KeyProblem(
                "a node needs authentication: --tokens FILE, or mutual TLS "
                "(--tls-cert, --tls-key, --client-ca and --client-scopes FILE)"
            )
        if client_scopes and not client_ca:
            raise KeyProblem("--client-scopes needs mutual TLS: --client-ca CA.pem")
        input_policy, request_limits = _request_rules(
            allow_input=allow_input,
            allow_input_network=allow_input_network,
            max_input=max_input,
            input_deadline=input_deadline,
            max_unpacked=max_unpacked,
            max_members=max_members,
            max_timeout=max_timeout,
            max_memory=max_memory,
            max_pids=max_pids,
            max_disk=max_disk,
            max_log=max_log,
            max_inputs=max_inputs,
            max_output=max_output,
        )
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit():
            raise KeyProblem(f"--listen {listen!r}: expected HOST:PORT, such as 127.0.0.1:8470")
        node_settings = NodeSettings(
            directory=directory.resolve(),
            builder_id=builder_id or settings.signing.builder_id or f"{NODE_BUILDER}#{host}:{port}",
            workers=workers,
            lease_s=lease,
            deadline_s=deadline,
            max_attempts=max_attempts,
            max_active_jobs=max_jobs,
            trace=config.trace,
            input_policy=input_policy,
            request_limits=request_limits,
            min_free_bytes=size_option(min_free_disk, "--min-free-disk"),
            max_client_jobs=max_client_jobs,
            client_quota_bytes=size_option(client_quota, "--client-quota"),
            retention_s=retention_days * 86400,
        )
        node = Node(node_settings, load_signer(key, ask_passphrase(key)), config=config)
        broker = broker or settings.node.broker
        if broker:
            from rebuilder.node.remote import CeleryDispatch, celery_app

            # redelivery of an unacknowledged build only after its deadline (and a margin)
            app_ = celery_app(broker, visibility_timeout_s=deadline + 600)
            node.dispatch = CeleryDispatch(
                app_,
                builder_id=node_settings.builder_id,
                trace=node_settings.trace,
                config=node.config,
                limits=node_settings.request_limits,
            )
        api = ApiSettings(
            tokens=TokenRegistry.load(tokens) if tokens else None,
            client_scopes=ClientScopes.load(client_scopes) if client_scopes else None,
            max_request_bytes=size_option(max_request, "--max-request"),
            requests_per_minute=rate,
            max_connections=max_connections,
        )
        keyid = node.signer.public_key.keyid
        output.note(f"hermetic node {node_settings.builder_id} on {listen} (key {keyid[:16]}…)")
        serve(
            node,
            api,
            Listen(
                host=host, port=int(port), tls_cert=tls_cert, tls_key=tls_key, client_ca=client_ca
            ),
        )


def node_worker(
    ctx: typer.Context,
    directory: Annotated[
        Path,
        typer.Option("--dir", metavar="DIR", help="This worker's own directory (store, scratch)."),
    ],
    broker: BrokerOption = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, metavar="N", help="Builds at once.")
    ] = 1,
    max_unpacked: MaxUnpackedOption = "1GiB",
    max_members: MaxMembersOption = 100_000,
    allow_input: AllowInputOption = None,
    allow_input_network: AllowInputNetworkOption = None,
    max_input: MaxInputOption = "2GiB",
    input_deadline: InputDeadlineOption = 900.0,
    max_timeout: MaxTimeoutOption = "1h",
    max_memory: MaxMemoryOption = "8GiB",
    max_pids: MaxPidsOption = 16384,
    max_disk: MaxDiskOption = "20GiB",
    max_log: MaxLogOption = "256MiB",
    max_inputs: MaxInputsOption = 64,
    max_output: MaxOutputOption = "4GiB",
    deadline: Annotated[
        float,
        typer.Option("--deadline", min=1, metavar="S", help="Seconds a task may take at most."),
    ] = 3600.0,
    allow_root: AllowRootOption = False,
) -> None:
    """Build for a node over its Celery broker (scale-out). Runs until interrupted.

    The rules are this worker's own (give it the node's): a task cannot change them."""
    output = Output.chosen(False)
    with guarded(ctx, output) as cli:
        from rebuilder.errors import UserError
        from rebuilder.node.remote import WorkerSettings, run_worker

        settings = cli.settings()
        config = sandbox_config(settings, allow_root)
        url = broker or settings.node.broker
        if not url:
            raise UserError("a worker needs its node's broker: --broker URL, or HERMETIC_BROKER")
        input_policy, request_limits = _request_rules(
            allow_input=allow_input,
            allow_input_network=allow_input_network,
            max_input=max_input,
            input_deadline=input_deadline,
            max_unpacked=max_unpacked,
            max_members=max_members,
            max_timeout=max_timeout,
            max_memory=max_memory,
            max_pids=max_pids,
            max_disk=max_disk,
            max_log=max_log,
            max_inputs=max_inputs,
            max_output=max_output,
        )
        worker = WorkerSettings(
            directory=directory,
            input_policy=input_policy,
            limits=request_limits,
            max_deadline_s=deadline,
            config=config,
        )
        run_worker(url, worker, concurrency=concurrency)


def node_token(
    ctx: typer.Context,
    tokens: Annotated[
        Path, typer.Option("--tokens", metavar="FILE", help="The node's tokens file.")
    ],
    name: Annotated[str, typer.Option("--name", metavar="NAME", help="Who the token is for.")],
    scope: Annotated[
        list[str],
        typer.Option(
            "--scope",
            metavar="SCOPE",
            help="submit, read (own jobs), read-all or cosign; repeatable.",
        ),
    ],
    json_output: JsonOption = False,
) -> None:
    """Add a scoped API token to a tokens file; prints the token once."""
    output = Output.chosen(json_output)
    with guarded(ctx, output):
        from rebuilder.node.auth import add_token

        token = add_token(tokens, name, scope)
        document = {"name": name, "scopes": list(scope), "token": token, "tokens_file": str(tokens)}
        output.result(Report(document, lambda: token))
