"""A real `weir server` on 127.0.0.1 for Argo's clients: started from the binary the suite
built (WEIR_BIN), on a database and data directory of its own, with a token that Hera sends as
Argo's clients do (`Authorization: Bearer …`)."""

import os
import subprocess
import tempfile

import pytest


def weir(*args, env):
    return subprocess.run(
        [os.environ["WEIR_BIN"], *args], env=env, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture(scope="session")
def server():
    tmp = tempfile.TemporaryDirectory(prefix="weir-clients-")
    env = dict(os.environ)
    env["WEIR_DB"] = os.path.join(tmp.name, "weir.db")
    env["WEIR_DATA_DIR"] = os.path.join(tmp.name, "data")
    env["WEIR_ALLOW_ROOT_TASKS"] = "true"
    token = weir("token", "create", "-n", "argo", "--role", "editor", env=env).strip()
    proc = subprocess.Popen(
        [os.environ["WEIR_BIN"], "server", "--listen", "127.0.0.1:0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline()
    url = line.split("http://", 1)[1].split()[0].rstrip(";")
    yield {"host": f"http://{url}", "token": token, "namespace": "argo"}
    proc.kill()
    proc.wait()
    tmp.cleanup()
