"""Start `pjudge llm-sim` as a separate process (tests, benchmarks) and find its URL."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from typing import Any


class SimProcess:
    def __init__(self, *args: str):
        self.args = list(args)
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self, timeout: float = 20.0) -> SimProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pjudge", "llm-sim", "--port", "0", *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if "listening on" in line:
                self.url = line.strip().split()[-1]
                return self
        self.stop()
        raise RuntimeError("llm-sim did not start")

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/stats", timeout=10) as response:
            stats: dict[str, Any] = json.loads(response.read())
            return stats

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/stats/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def __enter__(self) -> SimProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
