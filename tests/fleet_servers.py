"""The fleet's real servers for tests, each on 127.0.0.1 and a free port, each stopped by its fixture.

    ne = NodeExporter(textfile_dir); ne.start(); ne.metrics() -> str     (prometheus-node-exporter)
    prom = Prometheus(targets=[ne.address], rule_files=[...]); prom.start()
    prom.query("ostreewatch_generation") -> [{"metric": {...}, "value": [t, "3"]}]
    prom.alerts() -> [{"labels": {...}, "state": "firing", ...}]     (/api/v1/alerts)
    remote = JournalRemote(output_dir); remote.start(); remote.url    (systemd-journal-remote)
    upload = JournalUpload(remote.url, journal_dir); upload.start()   (systemd-journal-upload --follow)
    wait_until(fn, timeout, what) -> fn()'s first truthy value; AssertionError after timeout

Debian 12 packages: prometheus-node-exporter, prometheus (prometheus, promtool),
systemd-journal-remote (systemd-journal-remote, systemd-journal-upload). Their postinst
does not start them here (no systemd as PID 1, policy-rc.d): the tests run their own.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, List, Optional, Sequence

from tests.fixtures.procs import read_log, spawn_logged, stop_process, wait_ready

NODE_EXPORTER = "prometheus-node-exporter"
PROMETHEUS = "prometheus"
PROMTOOL = "promtool"
JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
JOURNAL_UPLOAD = "/lib/systemd/systemd-journal-upload"
START_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> Optional[bytes]:
    """The body of a 200 answer, None when the server is not (yet) answering."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read() if r.status == 200 else None
    except (urllib.error.URLError, ConnectionError, socket.timeout):
        return None


def wait_until(fn: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> Any:
    """Poll FN until it returns something truthy; AssertionError naming WHAT after TIMEOUT."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout}s (last: {last!r})")
        time.sleep(step)


class _Server:
    """One process with a log in a temp dir; stop() is idempotent."""

    name = "server"

    def __init__(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix=f"ow-{self.name}-")
        self.log_path = os.path.join(self.tmp, "log")
        self.port = free_port()
        self.proc: Optional[subprocess.Popen] = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return read_log(self.log_path)

    def _start(self, argv: Sequence[str], ready: Callable[[], bool]) -> None:
        self.proc = spawn_logged(argv, self.log_path)
        try:
            code = wait_ready(self.proc, ready, START_TIMEOUT)
        except TimeoutError:
            self.stop()
            raise AssertionError(f"{self.name} not ready after {START_TIMEOUT}s: {self.log()}") from None
        if code is not None:
            raise AssertionError(f"{self.name} exited {code}: {self.log()}")

    def stop(self) -> None:
        stop_process(self.proc)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


class NodeExporter(_Server):
    """prometheus-node-exporter with only the textfile collector, reading TEXTFILE_DIR."""

    name = "node-exporter"

    def __init__(self, textfile_dir: str) -> None:
        super().__init__()
        self.textfile_dir = textfile_dir

    def start(self) -> "NodeExporter":
        self._start([NODE_EXPORTER, f"--web.listen-address={self.address}", "--collector.disable-defaults",
                     "--collector.textfile", f"--collector.textfile.directory={self.textfile_dir}"],
                    lambda: http_get(f"http://{self.address}/metrics") is not None)
        return self

    def metrics(self) -> str:
        body = http_get(f"http://{self.address}/metrics")
        assert body is not None, f"node_exporter does not answer: {self.log()}"
        return body.decode()


_PROMETHEUS_YML = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: {rule_files}
scrape_configs:
  - job_name: node
    static_configs:
      - targets: {targets}
"""


class Prometheus(_Server):
    """A prometheus server scraping TARGETS every second and evaluating RULE_FILES every second."""

    name = "prometheus"

    def __init__(self, targets: Sequence[str], rule_files: Sequence[str]) -> None:
        super().__init__()
        self.config = os.path.join(self.tmp, "prometheus.yml")
        with open(self.config, "w") as f:
            f.write(_PROMETHEUS_YML.format(rule_files=json.dumps(list(rule_files)),
                                           targets=json.dumps(list(targets))))
        self.storage = os.path.join(self.tmp, "data")

    def start(self) -> "Prometheus":
        self._start([PROMETHEUS, f"--config.file={self.config}", f"--storage.tsdb.path={self.storage}",
                     f"--web.listen-address={self.address}"],
                    lambda: http_get(f"http://{self.address}/-/ready") is not None)
        return self

    def api(self, path: str, **params: str) -> Any:
        url = f"http://{self.address}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        body = http_get(url)
        assert body is not None, f"prometheus does not answer {url}: {self.log()}"
        answer = json.loads(body)
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> List[dict]:
        """An instant query's vector."""
        return list(self.api("query", query=expr)["result"])

    def value(self, expr: str) -> Optional[float]:
        """The single sample of EXPR now, None when there is none."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def alerts(self) -> List[dict]:
        return list(self.api("alerts")["alerts"])


class JournalRemote(_Server):
    """systemd-journal-remote on plain http (--listen-http), writing one file under OUTPUT."""

    name = "journal-remote"

    def __init__(self) -> None:
        super().__init__()
        self.directory = os.path.join(self.tmp, "remote")
        os.mkdir(self.directory)
        self.file = os.path.join(self.directory, "remote.journal")

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> "JournalRemote":
        def listening() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                return False

        self._start([JOURNAL_REMOTE, f"--listen-http={self.address}", f"--output={self.file}",
                     "--split-mode=none", "--seal=no"], listening)
        return self


class JournalUpload(_Server):
    """systemd-journal-upload following the journal files in DIRECTORY, sending them to URL."""

    name = "journal-upload"

    def __init__(self, url: str, directory: str) -> None:
        super().__init__()
        self.url = url
        self.directory = directory

    def start(self) -> "JournalUpload":
        # No --save-state: every run uploads the whole (private) journal from its start.
        self._start([JOURNAL_UPLOAD, f"--url={self.url}", f"--directory={self.directory}", "--follow=yes"],
                    lambda: True)
        return self
