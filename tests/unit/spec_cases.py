"""Bad specs, each with the key and the reason it is refused with: shared by the spec
parser's tests and the CLI's (which must report the same key, exit 2)."""

from __future__ import annotations

HEX = "a" * 64
MINIMAL = """
[build]
command = ["make"]
outputs = ["out"]
"""


def with_build(extra: str) -> str:
    return f'[build]\ncommand = ["make"]\noutputs = ["out"]\n{extra}'


def with_input(**fields: str) -> str:
    base = {"url": '"https://example.org/a"', "sha256": f'"{HEX}"', "dest": '"a"'}
    base.update(fields)
    body = "\n".join(f"{k} = {v}" for k, v in base.items() if v != "OMIT")
    return f"{MINIMAL}\n[[inputs]]\n{body}\n"


BAD_SPECS = [
    ("unknown top-level key", MINIMAL + "\n[network]\nallow = true\n", "network", "unknown key"),
    ("unknown build key", with_build('shell = "bash"'), "build.shell", "unknown key"),
    ("unknown limits key", MINIMAL + "\n[limits]\ncpu = 2\n", "limits.cpu", "unknown key"),
    ("missing build", "[limits]\npids = 3\n", "build", "missing"),
    (
        "image tag without digest",
        '[build]\nimage = "debian:bookworm"\ncommand = ["make"]\noutputs = ["o"]\n',
        "build.image",
        "tag without a digest",
    ),
    (
        "registry path without digest",
        '[build]\nimage = "docker.io/library/debian"\ncommand = ["make"]\noutputs = ["o"]\n',
        "build.image",
        "tag without a digest",
    ),
    (
        "short digest",
        '[build]\nimage = "debian@sha256:abc"\ncommand = ["make"]\noutputs = ["o"]\n',
        "build.image",
        "64 hex",
    ),
    ("missing command", '[build]\noutputs = ["o"]\n', "build.command", "missing"),
    ("empty command", '[build]\ncommand = []\noutputs = ["o"]\n', "build.command", "non-empty"),
    ("string command", '[build]\ncommand = "make"\noutputs = ["o"]\n', "build.command", "argv"),
    ("empty program", '[build]\ncommand = [""]\noutputs = ["o"]\n', "build.command", "program"),
    ("program with =", '[build]\ncommand = ["A=b"]\noutputs = ["o"]\n', "build.command", "'='"),
    ("missing outputs", '[build]\ncommand = ["make"]\n', "build.outputs", "missing"),
    ("empty outputs", '[build]\ncommand = ["make"]\noutputs = []\n', "build.outputs", "non-empty"),
    (
        "blank output",
        '[build]\ncommand = ["make"]\noutputs = [" "]\n',
        "build.outputs[0]",
        "non-empty",
    ),
    (
        "output escaping",
        '[build]\ncommand = ["make"]\noutputs = ["ok", "../x"]\n',
        "build.outputs[1]",
        "'..'",
    ),
    (
        "absolute output",
        '[build]\ncommand = ["make"]\noutputs = ["/etc/passwd"]\n',
        "build.outputs[0]",
        "absolute",
    ),
    (
        "reserved env",
        with_build('env = { SOURCE_DATE_EPOCH = "1" }'),
        "build.env.SOURCE_DATE_EPOCH",
        "reserved",
    ),
    ("bad env name", with_build('env = { "A-B" = "1" }'), "build.env.A-B", "not a valid"),
    ("non-string env", with_build("env = { A = 1 }"), "build.env.A", "string"),
    (
        "negative epoch",
        with_build("source_date_epoch = -1"),
        "build.source_date_epoch",
        "integer from 0",
    ),
    ("absolute dest", with_input(dest='"/etc/x"'), "inputs[0].dest", "absolute"),
    ("dest with ..", with_input(dest='"a/../../x"'), "inputs[0].dest", "'..'"),
    ("dest is dot", with_input(dest='"."'), "inputs[0].dest", "inside"),
    ("bad input digest", with_input(sha256='"1234"'), "inputs[0].sha256", "64 hex"),
    ("missing input digest", with_input(sha256="OMIT"), "inputs[0].sha256", "missing"),
    ("ftp url", with_input(url='"ftp://example.org/a"'), "inputs[0].url", "URL"),
    ("unknown input key", with_input(mode='"0755"'), "inputs[0].mode", "unknown key"),
    ("bad size", MINIMAL + '\n[limits]\nmemory = "lots"\n', "limits.memory", "size"),
    ("bad unit", MINIMAL + '\n[limits]\ndisk = "10XB"\n', "limits.disk", "unit"),
    ("bad duration", MINIMAL + '\n[limits]\ntimeout = "1 day"\n', "limits.timeout", "duration"),
    ("zero timeout", MINIMAL + "\n[limits]\ntimeout = 0\n", "limits.timeout", "at least"),
    ("zero pids", MINIMAL + "\n[limits]\npids = 0\n", "limits.pids", "integer from 1"),
    ("bad log size", MINIMAL + '\n[limits]\nlog = "-1MiB"\n', "limits.log", "size"),
    ("syntax error", "[build\ncommand=", "(syntax)", ""),
]
