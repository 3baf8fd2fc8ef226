"""`python -m harness ...` (and its tools) for the tests: each command is a process of its own, forked from a
server that has already imported what every command imports (Hydra, pandas, matplotlib, SciPy, the harness
with NumPy's paths) instead of a new interpreter importing it again, about a second a command.

The child takes the command's folder, environment, sys.path (its folder, then PYTHONPATH), arguments, stdout
and stderr, and runs the module as `python -m` does (runpy's `_run_module_as_main`, in a new `__main__`);
its exit status is the command's. A new interpreter runs it instead (`subprocess.run`) where the server's
imports could differ from the command's: a module not in SERVED, a variable read at import (AT_IMPORT)
set otherwise than in the server, a folder on its path that holds another copy of a package the server
imported, or a platform without fork. No framework other than NumPy is imported before the fork: a run sets
threads and flags before it imports one. The tests that need a new interpreter (the console commands, the
installed wheel, a killed run, the main end-to-end run, the one-line refusals) start one themselves.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
import types
from pathlib import Path

SERVED = ("harness", "harness.tools.compare", "harness.tools.merge", "harness.outputs.report")
# Environment variables read while the server imports (by Python, the BLAS under NumPy and SciPy, matplotlib's
# configuration and caches, Arrow's memory pool, mpmath, the locale). Every other variable is the command's
# own in the child, read when the command reads it (or imports a framework); PYTHONPATH is checked folder by
# folder (Server.shadowed_by).
AT_IMPORT = ("PYTHON", "OPENBLAS", "GOTO", "OMP_", "MKL", "BLIS", "NPY_", "NUMPY", "SCIPY", "MPL", "MATPLOTLIB")
AT_IMPORT += ("XDG_", "HOME", "ARROW", "JE_", "MPMATH", "LANG", "LC_", "LD_")
IMPORTED = (
    "hydra",
    "hydra.core.plugins",
    "harness.api",
    "harness.cli",
    "harness.pipeline",
    "harness.sweep.environment",
    "harness.backends.numpy",
    "harness.paths.numpy_paths",
    "harness.losses.binary_cross_entropy",
    "harness.losses.kl_divergence",
    "mpmath",
    "PIL.Image",
)
REPO = Path(__file__).resolve().parents[1]


def run(argv: list[str], cwd, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout) for
    argv = [sys.executable, "-m", module, *args]: by the server where its imports are the command's."""
    server = _server_for(argv, Path(cwd), env)
    if server is None:
        return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return server.run(argv, Path(cwd), env, timeout)


_server: list[Server] = []  # this process's server, once started


def _server_for(argv: list[str], cwd: Path, env: dict[str, str]) -> Server | None:
    if not hasattr(os, "fork") or sys.platform != "linux":
        return None
    if argv[:2] != [sys.executable, "-m"] or argv[2] not in SERVED:
        return None
    if not _server or not _server[0].alive():
        _server[:] = [Server()]
    server = _server[0]
    path = [cwd, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    if read_at_import(env) != server.environment or any(server.shadowed_by(folder) for folder in path):
        return None
    return server


def read_at_import(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(AT_IMPORT) and k != "PYTHONPATH"}


class Server:
    """The forking process: started on first use, stopped when this process exits."""

    def __init__(self):
        self.environment = read_at_import(dict(os.environ))
        self.process = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            bufsize=0,
        )
        self.pending = b""
        atexit.register(self.stop)
        self.imported = set(self._reply(120)["imported"])  # top-level names

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.process.stdin.close()
            self.process.wait(timeout=30)

    def shadowed_by(self, folder: Path) -> bool:
        """Whether `folder`, ahead of the site packages on the command's path, holds a package or module the
        server imported from elsewhere (the checkout's harness is the server's own)."""
        folder = Path(folder).resolve()
        if folder == REPO or not folder.is_dir():
            return False
        return any(name.removesuffix(".py") in self.imported for name in os.listdir(folder))

    def _reply(self, timeout: float | None) -> dict | None:
        """The server's next line, or None once `timeout` seconds pass without one."""
        fd = self.process.stdout.fileno()
        while b"\n" not in self.pending:
            if timeout is not None and not select.select([fd], [], [], timeout)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"the command server stopped (exit {self.process.wait()})")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def run(self, argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory(prefix="command_") as folder:
            out, err = Path(folder, "stdout"), Path(folder, "stderr")
            request = dict(module=argv[2], args=argv[3:], cwd=os.path.abspath(cwd), env=env, out=str(out), err=str(err))
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            pid = self._reply(30)["pid"]
            done = self._reply(timeout)
            if done is None:
                os.kill(pid, signal.SIGKILL)
                self._reply(None)
                raise subprocess.TimeoutExpired(argv, timeout, out.read_text(), err.read_text())
            return subprocess.CompletedProcess(argv, done["returncode"], out.read_text(), err.read_text())


# --- the server -------------------------------------------------------------------------------------------


def serve() -> None:
    """Import, say what; then fork one child per request line on stdin, replying {"pid"} at once and
    {"returncode"} when it ends. Ends with stdin."""
    import importlib

    for name in IMPORTED:
        importlib.import_module(name)
    from hydra.core.plugins import Plugins

    Plugins.instance()  # Hydra's plugins found (and its launchers and sweepers imported) once
    imported = sorted({name.split(".")[0] for name in sys.modules})
    print(json.dumps({"imported": imported}), flush=True)
    base = [p for p in sys.path[1:] if p != str(REPO)]  # without this process's folder and PYTHONPATH
    for line in sys.stdin:
        request = json.loads(line)
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _become(request, base)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)


def _become(request: dict, base: list[str]) -> None:
    """Be the command: its streams, folder, environment and sys.path, then `python -m module args`; exit as
    an interpreter does (non-daemon threads joined, atexit functions run, streams flushed)."""
    code = 1
    try:
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(os.open(request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 1)
        os.dup2(os.open(request["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        pythonpath = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[:] = [request["cwd"], *pythonpath, *base]
        sys.argv = ["-m", *request["args"]]
        sys.modules["__main__"] = types.ModuleType("__main__")
        sys.modules.pop(request["module"], None)  # run afresh as __main__, as where nothing imported it
        import runpy

        code = 0
        runpy._run_module_as_main(request["module"], alter_argv=True)
    except SystemExit as stop:
        code = _exit_status(stop.code)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            threading._shutdown()
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _exit_status(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    serve()
