"""The manifest of exec functions (exec-design.md): ``runtime``, ``command``, ``protocol``,
``ready_path``, ``[release] build``, and where ``check_commands`` finds each program. Every
refusal names the file, the field and the reason, as ``test_manifest.py`` checks for the rest."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tierfaas.errors import ManifestError
from tierfaas.manifest import (
    MAX_ARG_CHARS,
    MAX_ARGV,
    ExecCommand,
    check_commands,
    load_release,
    resolve_program,
)

HEAD = '[release]\nname = "r"\nversion = "1.0"\n'
PYTHON = '\n[functions.py]\nhandler = "mod:fn"\n'
STDIO = '\n[functions.f]\nruntime = "exec"\ncommand = ["./run.sh", "a b"]\nprotocol = "stdio"\n'
HTTP = '\n[functions.f]\nruntime = "exec"\ncommand = ["node", "index.js"]\nprotocol = "http"\n'


def write(tmp_path: Path, manifest: str, files: dict[str, str] | None = None) -> Path:
    (tmp_path / "tierfaas.toml").write_text(manifest)
    for name, text in (files or {"mod.py": "def fn(b):\n    return b\n"}).items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def refused(tmp_path: Path, manifest: str) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        load_release(write(tmp_path, manifest))
    assert str(tmp_path / "tierfaas.toml") in str(info.value)
    return info.value


def executable(path: Path, text: str = "#!/bin/sh\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


# -- what loads ---------------------------------------------------------------------------


def test_a_stdio_function_loads_with_its_argv_and_protocol(tmp_path: Path) -> None:
    release = load_release(write(tmp_path, HEAD + STDIO + PYTHON))
    spec = release.functions["f"]
    assert spec.runtime == "exec"
    assert spec.handler is None and spec.init is None
    assert spec.command == ExecCommand(argv=("./run.sh", "a b"), protocol="stdio")
    assert release.functions["py"].runtime == "python"
    assert release.functions["py"].command is None
    assert release.build == ()


def test_an_http_function_loads_with_its_ready_path(tmp_path: Path) -> None:
    manifest = HEAD + HTTP + 'ready_path = "/healthz?deep=1"\nconcurrency = 8\n'
    spec = load_release(write(tmp_path, manifest)).functions["f"]
    assert spec.command == ExecCommand(("node", "index.js"), "http", "/healthz?deep=1")
    assert spec.concurrency == 8 and spec.network == "host"


def test_an_http_function_without_ready_path_has_none(tmp_path: Path) -> None:
    spec = load_release(write(tmp_path, HEAD + HTTP)).functions["f"]
    assert spec.command is not None and spec.command.ready_path is None


def test_runtime_python_is_the_default_and_may_be_said(tmp_path: Path) -> None:
    manifest = HEAD + PYTHON + 'runtime = "python"\n'
    spec = load_release(write(tmp_path, manifest)).functions["py"]
    assert spec.runtime == "python" and spec.handler is not None


def test_a_stdio_function_may_have_no_network(tmp_path: Path) -> None:
    spec = load_release(write(tmp_path, HEAD + STDIO + 'network = "none"\n')).functions["f"]
    assert spec.network == "none"


def test_runtime_and_protocol_are_inherited_from_defaults(tmp_path: Path) -> None:
    manifest = (
        HEAD + '[defaults]\nruntime = "exec"\nprotocol = "stdio"\ntimeout_s = 7\n'
        '[functions.a]\ncommand = ["a"]\n'
        '[functions.b]\ncommand = ["b"]\nprotocol = "http"\n'
        '[functions.c]\nruntime = "python"\nhandler = "mod:fn"\n'
    )
    functions = load_release(write(tmp_path, manifest)).functions
    assert functions["a"].command == ExecCommand(("a",), "stdio")
    assert functions["b"].command == ExecCommand(("b",), "http")  # its own protocol wins
    assert functions["c"].runtime == "python" and functions["c"].command is None
    assert functions["a"].timeout_s == 7.0


def test_a_defaults_threads_is_for_python_functions_only(tmp_path: Path) -> None:
    manifest = HEAD + "[defaults]\nthreads = 4\n" + STDIO + PYTHON
    functions = load_release(write(tmp_path, manifest)).functions
    assert functions["f"].threads == 1
    assert functions["py"].threads == 4


def test_release_build_is_an_argv(tmp_path: Path) -> None:
    manifest = HEAD + 'build = ["make", "-j", "2"]\n' + STDIO
    assert load_release(write(tmp_path, manifest)).build == ("make", "-j", "2")


def test_the_longest_command_allowed_loads(tmp_path: Path) -> None:
    argv = ", ".join(['"x"'] * MAX_ARGV)
    manifest = HEAD + STDIO.replace('["./run.sh", "a b"]', f"[{argv}]")
    spec = load_release(write(tmp_path, manifest)).functions["f"]
    assert spec.command is not None and len(spec.command.argv) == MAX_ARGV


# -- what is refused ----------------------------------------------------------------------

LONG_ARG = "y" * (MAX_ARG_CHARS + 1)
TOO_MANY = "[" + ", ".join(['"x"'] * (MAX_ARGV + 1)) + "]"


@pytest.mark.parametrize(
    ("manifest", "field", "reason"),
    [
        (HEAD + STDIO.replace('"exec"', '"java"'), "functions.f.runtime", "is not 'python' or"),
        (HEAD + STDIO.replace('"exec"', "1"), "functions.f.runtime", "is not 'python' or"),
        (HEAD + STDIO.replace('command = ["./run.sh", "a b"]\n', ""), "functions.f.command",
         "missing"),
        (HEAD + STDIO.replace('["./run.sh", "a b"]', "[]"), "functions.f.command",
         "non-empty list of strings"),
        (HEAD + STDIO.replace('["./run.sh", "a b"]', '"./run.sh"'), "functions.f.command",
         "non-empty list of strings"),
        (HEAD + STDIO.replace('["./run.sh", "a b"]', '["a", 3]'), "functions.f.command",
         "argument 2, 3, is not a string"),
        (HEAD + STDIO.replace('["./run.sh", "a b"]', '["a", "b\\u0000c"]'),
         "functions.f.command", "without NUL"),
        (HEAD + STDIO.replace('["./run.sh", "a b"]', f'["a", "{LONG_ARG}"]'),
         "functions.f.command", f"at most {MAX_ARG_CHARS} characters"),
        (HEAD + STDIO.replace('["./run.sh", "a b"]', TOO_MANY), "functions.f.command",
         f"at most {MAX_ARGV} arguments"),
        (HEAD + STDIO.replace('["./run.sh", "a b"]', '["", "x"]'), "functions.f.command",
         "the program (argument 1) is empty"),
        (HEAD + STDIO.replace('protocol = "stdio"\n', ""), "functions.f.protocol", "missing"),
        (HEAD + STDIO.replace('"stdio"', '"grpc"'), "functions.f.protocol",
         "'grpc' is not 'http' or 'stdio'"),
        (HEAD + STDIO + 'ready_path = "/healthz"\n', "functions.f.ready_path",
         "only an http function"),
        (HEAD + HTTP + 'ready_path = "healthz"\n', "functions.f.ready_path", "not a URL path"),
        (HEAD + HTTP + 'ready_path = "/a b"\n', "functions.f.ready_path", "not a URL path"),
        (HEAD + HTTP + 'ready_path = "/a\\nb"\n', "functions.f.ready_path", "not a URL path"),
        (HEAD + HTTP + 'ready_path = "/' + "a" * 1024 + '"\n', "functions.f.ready_path",
         "not a URL path"),
        (HEAD + HTTP + "ready_path = 200\n", "functions.f.ready_path", "non-empty string"),
        (HEAD + STDIO + 'handler = "mod:fn"\n', "functions.f.handler", "no Python handler"),
        (HEAD + STDIO + 'init = "mod:fn"\n', "functions.f.init", "no Python handler"),
        (HEAD + STDIO + "threads = 2\n", "functions.f.threads", "no Python handler"),
        (HEAD + PYTHON + 'command = ["a"]\n', "functions.py.command", "only an exec function"),
        (HEAD + PYTHON + 'protocol = "http"\n', "functions.py.protocol",
         "only an exec function"),
        (HEAD + PYTHON + 'ready_path = "/"\n', "functions.py.ready_path",
         "only an exec function"),
        (HEAD + HTTP + 'network = "none"\n', "functions.f.network", 'needs network = "host"'),
        (HEAD + '[defaults]\nnetwork = "none"\n' + HTTP, "defaults.network",
         'needs network = "host"'),
        (HEAD + HTTP + 'listen = "tcp"\n', "functions.f.listen", "'tcp' is not 'port' or 'unix'"),
        (HEAD + STDIO + 'listen = "unix"\n', "functions.f.listen", "only an http function"),
        (HEAD + PYTHON + 'listen = "unix"\n', "functions.py.listen", "only an exec function"),
        (HEAD + '[defaults]\nlisten = "unix"\n' + HTTP, "defaults.listen", "unknown key"),
        (HEAD + '[defaults]\nruntime = "wasm"\n' + PYTHON, "defaults.runtime", "is not 'python'"),
        (HEAD + '[defaults]\nprotocol = "udp"\n' + HTTP.replace('protocol = "http"\n', ""),
         "defaults.protocol", "'udp' is not 'http' or 'stdio'"),
        (HEAD + '[defaults]\ncommand = ["a"]\n' + STDIO, "defaults.command", "unknown key"),
        (HEAD + '[defaults]\nready_path = "/"\n' + HTTP, "defaults.ready_path", "unknown key"),
        (HEAD + "build = []\n" + STDIO, "release.build", "non-empty list of strings"),
        (HEAD + 'build = "make"\n' + STDIO, "release.build", "non-empty list of strings"),
        (HEAD + "build = [true]\n" + STDIO, "release.build", "argument 1, True, is not a string"),
        (HEAD + 'build = ["make", "\\u0000"]\n' + STDIO, "release.build", "without NUL"),
        (HEAD + 'build = [""]\n' + STDIO, "release.build", "the program (argument 1) is empty"),
        (HEAD + "build = " + TOO_MANY + "\n" + STDIO, "release.build",
         f"at most {MAX_ARGV} arguments"),
    ],
)  # fmt: skip
def test_exec_errors_name_file_field_and_reason(
    tmp_path: Path, manifest: str, field: str, reason: str
) -> None:
    error = refused(tmp_path, manifest)
    assert error.field == field
    assert reason in error.reason


def test_an_http_function_on_a_unix_socket_may_have_no_network(tmp_path: Path) -> None:
    manifest = HEAD + HTTP + 'listen = "unix"\nnetwork = "none"\n'
    spec = load_release(write(tmp_path, manifest)).functions["f"]
    assert spec.command is not None and spec.command.listen == "unix"
    assert spec.network == "none"
    shown = spec.describe()
    assert (shown["protocol"], shown["listen"]) == ("http", "unix")


def test_an_http_function_listens_on_a_port_unless_told(tmp_path: Path) -> None:
    spec = load_release(
        write(tmp_path, HEAD + HTTP + STDIO.replace("[functions.f]", "[functions.g]"))
    ).functions
    assert spec["f"].command is not None and spec["f"].command.listen == "port"
    assert spec["f"].describe()["listen"] == "port"
    assert spec["g"].describe()["listen"] is None  # stdio: no listen at all


def test_a_defaults_protocol_does_not_reach_a_python_function(tmp_path: Path) -> None:
    # [defaults] protocol is for the exec functions; a Python function beside them loads.
    manifest = HEAD + '[defaults]\nprotocol = "stdio"\n' + STDIO + PYTHON
    functions = load_release(write(tmp_path, manifest)).functions
    assert functions["py"].command is None
    assert functions["f"].command is not None and functions["f"].command.protocol == "stdio"


def test_a_long_refused_argument_is_shown_cut(tmp_path: Path) -> None:
    manifest = HEAD + STDIO.replace('["./run.sh", "a b"]', f'["a", "{LONG_ARG}"]')
    error = refused(tmp_path, manifest)
    assert len(error.reason) < 300  # the argument is quoted briefly, not whole


# -- where the program is: resolve_program and check_commands ------------------------------


def test_a_relative_path_with_a_slash_is_in_the_release_directory(tmp_path: Path) -> None:
    program = executable(tmp_path / "bin" / "hello")
    assert resolve_program(tmp_path, "bin/hello", path="") == program
    assert resolve_program(tmp_path, "./bin/hello", path="") == tmp_path / "./bin/hello"
    assert resolve_program(tmp_path, "bin/missing", path="") is None


def test_a_relative_path_is_not_looked_up_on_path(tmp_path: Path) -> None:
    release_dir = tmp_path / "release"
    release_dir.mkdir()
    executable(tmp_path / "elsewhere" / "bin" / "hello")
    assert resolve_program(release_dir, "bin/hello", path=str(tmp_path / "elsewhere")) is None


def test_an_absolute_path_is_used_as_it_is(tmp_path: Path) -> None:
    program = executable(tmp_path / "abs" / "prog")
    elsewhere = tmp_path / "release"
    elsewhere.mkdir()
    assert resolve_program(elsewhere, str(program), path="") == program


def test_a_bare_name_is_looked_up_on_path_in_order(tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    second_program = executable(second / "tool")
    path = f"{first}::{second}"  # an empty entry is skipped
    assert resolve_program(tmp_path, "tool", path=path) == second_program
    first_program = executable(first / "tool")
    assert resolve_program(tmp_path, "tool", path=path) == first_program
    # A bare name is never taken from the release directory itself.
    executable(tmp_path / "local")
    assert resolve_program(tmp_path, "local", path=path) is None


def test_the_default_path_finds_sh() -> None:
    found = resolve_program(Path("/nonexistent"), "sh")
    assert found is not None and found.name == "sh"


def test_a_file_that_is_not_executable_or_a_directory_is_not_a_program(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("#!/bin/sh\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir").chmod(0o755)
    assert resolve_program(tmp_path, "./plain", path="") is None
    assert resolve_program(tmp_path, "./dir", path="") is None
    assert resolve_program(tmp_path, "plain", path=str(tmp_path)) is None
    assert resolve_program(tmp_path, "dir", path=str(tmp_path)) is None


def test_check_commands_passes_when_every_program_is_there(tmp_path: Path) -> None:
    executable(tmp_path / "run.sh")
    manifest = HEAD + STDIO + PYTHON + HTTP.replace("functions.f", "functions.g")
    release = load_release(write(tmp_path, manifest))
    node_dir = executable(tmp_path / "path" / "node").parent
    check_commands(release, path=str(node_dir))


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        ('["./run.sh"]', "program './run.sh' is not an executable file in"),
        ('["bin/gone"]', "program 'bin/gone' is not an executable file in"),
        ('["/nonexistent/prog"]', "program '/nonexistent/prog' is not an executable file"),
        ('["no-such-program-here"]', "program 'no-such-program-here' is not found on PATH"),
    ],
)
def test_check_commands_names_the_function_whose_program_is_missing(
    tmp_path: Path, command: str, reason: str
) -> None:
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")  # there, but not executable
    manifest = HEAD + PYTHON + STDIO.replace('["./run.sh", "a b"]', command)
    release = load_release(write(tmp_path, manifest))
    with pytest.raises(ManifestError) as info:
        check_commands(release, path=str(tmp_path / "empty"))
    assert info.value.field == "functions.f.command"
    assert reason in info.value.reason
    assert "build step" not in info.value.reason
    assert str(tmp_path / "tierfaas.toml") in str(info.value)


def test_check_commands_says_the_build_ran_when_there_is_one(tmp_path: Path) -> None:
    manifest = HEAD + 'build = ["make"]\n' + STDIO
    release = load_release(write(tmp_path, manifest))
    with pytest.raises(ManifestError) as info:
        check_commands(release, path="")
    assert info.value.field == "functions.f.command"
    assert "after the release's build step" in info.value.reason


def test_check_commands_uses_the_default_path(tmp_path: Path) -> None:
    manifest = HEAD + STDIO.replace('["./run.sh", "a b"]', '["sh", "-c", "true"]')
    check_commands(load_release(write(tmp_path, manifest)))  # /bin/sh or /usr/bin/sh


# -- how a function is shown --------------------------------------------------------------


def test_describe_shows_runtime_command_and_protocol(tmp_path: Path) -> None:
    release = load_release(write(tmp_path, HEAD + HTTP + PYTHON))
    shown = release.functions["f"].describe()
    assert shown["runtime"] == "exec"
    assert shown["command"] == ["node", "index.js"]
    assert shown["protocol"] == "http"
    assert shown["handler"] is None and shown["init"] is None
    python = release.functions["py"].describe()
    assert (python["runtime"], python["command"], python["protocol"]) == ("python", None, None)
    assert python["handler"] == "mod:fn"


# -- pipeline -------------------------------------------------------------------------------


def test_an_http_function_pipelines_when_told_and_one_call_per_connection_else(
    tmp_path: Path,
) -> None:
    manifest = HEAD + HTTP + "concurrency = 16\npipeline = 8\n"
    manifest += STDIO.replace("[functions.f]", "[functions.g]")
    manifest += HTTP.replace("[functions.f]", "[functions.h]")
    functions = load_release(write(tmp_path, manifest)).functions
    assert functions["f"].command is not None and functions["f"].command.pipeline == 8
    assert functions["f"].describe()["pipeline"] == 8
    assert functions["h"].command is not None and functions["h"].command.pipeline == 1
    assert functions["h"].describe()["pipeline"] == 1
    assert functions["g"].describe()["pipeline"] is None  # stdio: its own framing


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0", "0 is outside 1..64"),
        ("65", "65 is outside 1..64"),
        ("2.5", "expected a whole number, got 2.5"),
        ('"4"', "expected a number"),
        ("true", "expected a number"),
    ],
)
def test_a_pipeline_out_of_range_is_refused(tmp_path: Path, value: str, reason: str) -> None:
    error = refused(tmp_path, HEAD + HTTP + f"concurrency = 64\npipeline = {value}\n")
    assert "functions.f.pipeline" in str(error) and reason in str(error)


def test_a_pipeline_over_the_concurrency_is_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, HEAD + HTTP + "concurrency = 4\npipeline = 8\n")
    assert "functions.f.pipeline" in str(error)
    assert "8 is more than concurrency (4)" in str(error)


def test_only_an_http_function_has_a_pipeline(tmp_path: Path) -> None:
    error = refused(tmp_path, HEAD + STDIO + "pipeline = 2\n")
    assert "functions.f.pipeline" in str(error) and "only an http function" in str(error)
    error = refused(tmp_path, HEAD + PYTHON + "pipeline = 2\n")
    assert "functions.py.pipeline" in str(error) and 'runtime = "exec"' in str(error)
    error = refused(tmp_path, HEAD + "[defaults]\npipeline = 2\n" + HTTP)
    assert "defaults" in str(error) and "pipeline" in str(error)
