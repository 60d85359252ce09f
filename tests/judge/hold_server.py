"""Run ``serve_judge`` for a test session in its own process, as a job would.

Prints ``<base url> <server pid>`` once the server is healthy, then waits; a SIGTERM (what
``scancel`` sends) must stop the server before this process exits.
"""

import sys
import time
from pathlib import Path

from calibadv.judge.server import LocalServer, serve_judge

model_dir, log_path = sys.argv[1], sys.argv[2]
with serve_judge(LocalServer("transformers", model_dir, threads=1), log_path) as url:
    me = Path(f"/proc/self/task/{Path('/proc/self').resolve().name}/children")
    children = me.read_text().split()
    print(url, children[0] if children else "", flush=True)
    while True:
        time.sleep(1)
