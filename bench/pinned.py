"""Helpers shared by the side-by-side benchmarks: free ports, waiting for a server, and
running a client pinned to its own CPU while counting the CPU time it used."""
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import time

SERVER_CPU, CLIENT_CPU = "0", "1" if os.cpu_count() > 1 else "0"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, limit=60):
    end = time.time() + limit
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"port {port} did not open")


def children_cpu():
    """User + system CPU seconds used by finished child processes so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_client(cmd, env=None):
    """Runs a client pinned to CLIENT_CPU; returns (stdout, CPU seconds it used)."""
    before = children_cpu()
    done = subprocess.run(["taskset", "-c", CLIENT_CPU] + cmd, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env)
    cpu = children_cpu() - before
    if done.returncode != 0:
        sys.exit(f"{cmd[0]} failed: {done.stderr.strip()[-800:]}")
    return done.stdout, cpu


def cpu_model():
    """The CPU's model name, for the line that says where a benchmark ran."""
    with open("/proc/cpuinfo") as f:
        m = re.search(r"model name\s*:\s*(.*)", f.read())
    return m.group(1) if m else "unknown CPU"


def stop(server, tmp):
    """Stops the benchmark's server and removes its temporary folder."""
    server.terminate()
    server.wait()
    shutil.rmtree(tmp, ignore_errors=True)
