"""Runs one command, prints its wall time and peak RSS (the child's ru_maxrss).

usage: measure.py NAME -- COMMAND...
"""
import resource
import subprocess
import sys
import time

name = sys.argv[1]
cmd = sys.argv[sys.argv.index("--") + 1:]
start = time.perf_counter()
done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
wall = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
if done.returncode not in (0, 1):
    sys.exit(f"{name} failed ({done.returncode}): {done.stderr.strip()[:500]}")
print(f"{name}\t{wall:.2f}\t{rss:.0f}")
print(done.stdout, file=sys.stderr)
