"""The tests' command server (tests/commands.py): a command forked from it sees what a new interpreter sees,
and the commands whose imports could differ go to a new interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import commands
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="the server forks on Linux only")]

PROBE = textwrap.dedent(
    """
    import atexit, json, os, sys, threading, time

    def late():
        time.sleep(0.2)
        print("thread done", flush=True)

    threading.Thread(target=late).start()  # not a daemon: the interpreter waits for it at exit
    atexit.register(lambda: print("atexit ran", flush=True))
    print(json.dumps({
        "name": __name__, "argv": sys.argv, "cwd": os.getcwd(), "probe": os.environ.get("PROBE_VALUE"),
        "path": sys.path[:2], "stdin": sys.stdin.read(),
    }))
    print("to stderr", file=sys.stderr)
    sys.exit(int(sys.argv[1]))
    """
)


@pytest.fixture(scope="module")
def server():
    started = commands.Server()
    yield started
    started.stop()


@pytest.fixture
def probe(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "probe_module.py").write_text(PROBE)
    (tmp_path / "work").mkdir()
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "lib"), PROBE_VALUE="seen")
    return [sys.executable, "-m", "probe_module", "3", "a b"], tmp_path / "work", env


def test_a_served_command_sees_what_a_new_interpreter_sees(server, probe):
    argv, cwd, env = probe
    served = server.run(argv, cwd, env, timeout=60)
    fresh = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert (served.returncode, served.stdout, served.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert served.returncode == 3 and served.stderr == "to stderr\n"
    lines = served.stdout.splitlines()
    assert lines[1:] == ["thread done", "atexit ran"]
    assert '"name": "__main__"' in lines[0] and f'"cwd": "{cwd}"' in lines[0] and '"probe": "seen"' in lines[0]


def test_a_command_past_its_timeout_is_killed(server, tmp_path):
    (tmp_path / "sleeper.py").write_text("import time\ntime.sleep(60)\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    with pytest.raises(subprocess.TimeoutExpired):
        server.run([sys.executable, "-m", "sleeper"], tmp_path, env, timeout=1)
    done = server.run([sys.executable, "-m", "harness.outputs.report"], tmp_path, env, timeout=60)
    assert done.returncode == 2 and "RUN_DIR" in done.stderr  # the server goes on serving


def test_commands_whose_imports_could_differ_start_a_new_interpreter(tmp_path):
    argv = [sys.executable, "-m", "harness", "experiment=seed_article"]
    env = dict(os.environ)
    assert commands._server_for(argv, tmp_path, env) is not None
    assert commands._server_for(argv, tmp_path, env | {"PYTEST_CURRENT_TEST": "other", "XLA_FLAGS": "x"}) is not None
    assert commands._server_for(argv, tmp_path, env | {"OPENBLAS_NUM_THREADS": "7"}) is None  # read by NumPy
    assert commands._server_for([sys.executable, "-m", "pip", "list"], tmp_path, env) is None  # not served
    (tmp_path / "numpy").mkdir()  # another NumPy ahead of the site packages
    assert commands._server_for(argv, tmp_path, env) is None
