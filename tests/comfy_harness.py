"""Drive a real, headless ComfyUI over its HTTP API (standard library only): start it, run API-format workflows,
read their outputs, free its memory, measure its RSS, and build the zip that `comfy node publish` uploads.

Written for this project's integration tests from what ComfyUI 0.3.64's ``main.py``/``server.py`` do (see
../shared/reference/COMFYUI.md): ``POST /prompt`` answers 400 with ``node_errors`` for a workflow that fails
validation; a runtime exception gives ``status_str == "error"`` in ``/history/<id>``; ``POST /free`` sets flags
that the prompt worker acts on between prompts; a pack that fails to import is only logged.
"""

from __future__ import annotations

import fnmatch
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path


def _import_failure(line: str) -> bool:
    """How ComfyUI logs a pack in custom_nodes/ that it could not load (it starts all the same). Its own
    comfy_extras nodes (e.g. the audio ones, without torchaudio) are logged the same way but are not packs."""
    return ("IMPORT FAILED" in line or "module for custom nodes" in line) and "/custom_nodes/" in line


class ComfyError(RuntimeError):
    """The server did not start, or a workflow did not end the way the caller expected."""


@dataclass
class Outcome:
    """How a submitted workflow ended: ``status`` is success, validation_error or execution_error."""

    status: str
    response: dict
    history: dict = field(default_factory=dict)

    @property
    def errors(self) -> str:
        """The validation or execution errors as readable text."""
        lines = [json.dumps(self.response.get("error", ""))]
        for nid, ne in (self.response.get("node_errors") or {}).items():
            lines += [f"node {nid} ({ne.get('class_type')}): {e.get('message')}: {e.get('details')}"
                      for e in ne.get("errors", [])]
        for event, data in (self.history.get("status") or {}).get("messages", []):
            if event == "execution_error":
                lines.append(f"node {data.get('node_id')} ({data.get('node_type')}): {data.get('exception_type')}: "
                             f"{data.get('exception_message')}\n{''.join(data.get('traceback') or [])}")
        return "\n".join(lines)


def _http(method: str, url: str, body: dict | None = None, timeout: float = 30) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:  # 400 with node_errors still carries JSON
        return e.code, e.read()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ComfyServer:
    """A ComfyUI process started by :func:`start`, listening on 127.0.0.1."""

    url: str
    process: subprocess.Popen
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def submit(self, prompt: dict, *, timeout: float = 600) -> Outcome:
        """Queue an API-format workflow and wait until it has finished (or failed validation)."""
        status, raw = _http("POST", self.url + "/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
        response = json.loads(raw or b"{}")
        if status != 200 or response.get("node_errors"):
            return Outcome("validation_error", response)
        prompt_id, deadline = response["prompt_id"], time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, raw = _http("GET", f"{self.url}/history/{urllib.parse.quote(prompt_id)}")
            entry = json.loads(raw or b"{}").get(prompt_id)
            if entry and (entry.get("status") or {}).get("status_str") in ("success", "error"):
                ok = entry["status"]["status_str"] == "success"
                return Outcome("success" if ok else "execution_error", response, entry)
            if self.process.poll() is not None:
                raise ComfyError(f"ComfyUI exited (code {self.process.returncode}) while running a workflow:\n"
                                 + self.log_text()[-3000:])
            time.sleep(0.2)
        _http("POST", self.url + "/interrupt", {})
        raise ComfyError(f"workflow {prompt_id} did not finish in {timeout:.0f} s\n" + self.log_text()[-3000:])

    def run(self, prompt: dict, *, timeout: float = 600) -> Outcome:
        """:meth:`submit`, raising ComfyError with the server's error text unless the workflow succeeded."""
        outcome = self.submit(prompt, timeout=timeout)
        if outcome.status != "success":
            raise ComfyError(f"workflow ended with {outcome.status}:\n{outcome.errors}\n" + self.log_text()[-3000:])
        return outcome

    def view(self, image: dict) -> bytes:
        """The bytes of an output image listed in a history entry ({filename, subfolder, type})."""
        query = urllib.parse.urlencode({k: image.get(k, "") for k in ("filename", "subfolder", "type")})
        status, data = _http("GET", f"{self.url}/view?{query}")
        if status != 200:
            raise ComfyError(f"GET /view?{query} answered {status}")
        return data

    def view_path(self, path: str) -> bytes:
        """The body of ``GET path`` (a static file the frontend fetches); ComfyError unless it answers 200."""
        status, raw = _http("GET", self.url + path)
        if status != 200:
            raise ComfyError(f"GET {path} answered {status}")
        return raw

    def get_json(self, path: str):
        return json.loads(self.view_path(path))

    def free(self, *, unload_models: bool, free_memory: bool) -> None:
        """POST /free: what ComfyUI's "Unload models" / "Free model and node cache" buttons send."""
        status, raw = _http("POST", self.url + "/free", {"unload_models": unload_models, "free_memory": free_memory})
        if status != 200:
            raise ComfyError(f"POST /free answered {status}: {raw[:200]!r}")

    def rss(self) -> int:
        """Resident memory of the server process, in bytes (VmRSS from /proc)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise ComfyError(f"no VmRSS in /proc/{self.process.pid}/status")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)


def start(comfy_dir: Path, python: str, base: Path, *, timeout: float = 300) -> ComfyServer:
    """Start ``comfy_dir/main.py`` on the CPU with ``base`` as its --base-directory (models/, custom_nodes/,
    input/, output/, temp/, user/ all inside it) and wait until its HTTP API answers. Raises ComfyError when the
    process dies, does not answer in ``timeout`` seconds, or logs a custom-node import failure."""
    port = free_port()
    for sub in ("custom_nodes", "models", "input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    log = base / f"comfyui_{port}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "DO_NOT_TRACK": "1"}
    cmd = [python, str(comfy_dir / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--disable-auto-launch", "--disable-api-nodes", "--base-directory", str(base)]
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, cwd=comfy_dir, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = ComfyServer(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise ComfyError(f"ComfyUI exited during start-up (code {process.returncode}); "
                             f"command: {' '.join(cmd)}\n" + server.log_text()[-4000:])
        try:
            if _http("GET", server.url + "/system_stats", timeout=2)[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise ComfyError(f"ComfyUI did not answer within {timeout:.0f} s\n" + server.log_text()[-4000:])
        time.sleep(0.5)
    failures = [line for line in server.log_text().splitlines() if _import_failure(line)]
    if failures:
        server.stop()
        raise ComfyError("a custom node pack failed to import:\n" + "\n".join(failures)
                         + "\n" + server.log_text()[-4000:])
    return server


# ---------------------------------------------------------------------------------------------------------------
# The published zip: git-tracked files minus .comfyignore, as `comfy node publish` builds it.


def _ignore_patterns(root: Path) -> list[str]:
    path = root / ".comfyignore"
    if not path.exists():
        return []
    patterns = [line.strip() for line in path.read_text().splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    for p in patterns:
        if p.startswith("!") or "**" in p:
            raise ValueError(f".comfyignore pattern {p!r}: negation and '**' are not supported by this check; "
                             "use folder/ or glob patterns")
    return patterns


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether a repo-relative POSIX path matches a .comfyignore pattern (gitignore rules for ``dir/`` (any
    folder of that name), ``/dir/`` and ``a/b`` (anchored to the root) and ``*.ext`` globs: all it uses)."""
    parts = path.split("/")
    for pattern in patterns:
        folder = pattern.endswith("/")
        p = pattern.strip("/")
        anchored = "/" in pattern.rstrip("/")  # a leading or inner slash anchors it to the root
        if anchored:  # matched from the root, against the path or one of its parent folders
            candidates = ["/".join(parts[: i + 1]) for i in range(len(parts) - (1 if folder else 0))]
        else:  # matched against any one component (a folder pattern only against folders)
            candidates = parts[:-1] if folder else parts
        if any(fnmatch.fnmatchcase(c, p) for c in candidates):
            return True
    return False


def published_files(root: Path) -> list[str]:
    """The files `comfy node publish` would zip: ``git ls-files`` minus the .comfyignore patterns."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=False)
    if listed.returncode != 0:
        raise ComfyError(f"`git ls-files` failed in {root} (the published zip is built from git-tracked files): "
                         + listed.stderr.decode(errors="replace"))
    patterns = _ignore_patterns(root)
    files = [f for f in listed.stdout.decode().split("\0") if f and not ignored(f, patterns)]
    return sorted(f for f in files if (root / f).is_file())


def build_zip(root: Path, out: Path) -> list[str]:
    """Write the publish zip of ``root`` to ``out``; return the files it holds."""
    files = published_files(root)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for f in files:
            z.write(root / f, f)
    return files
