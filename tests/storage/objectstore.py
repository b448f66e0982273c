"""An S3-compatible object store on loopback for the tests: the moto server (``moto[server]``),
started on 127.0.0.1 in its own session and stopped by its PID (never by name).

Everything that talks to it (the test process, `overnight` subprocesses, Ray workers, the nodes
of a loopback cluster) finds it through the standard AWS environment variables of ``env``:
``AWS_ENDPOINT_URL`` (pyarrow's S3 filesystem reads it) and dummy credentials. That is also how real
credentials reach a real cluster's workers: through each node's environment or instance profile,
never through the URI.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

MOTO = str(Path(sys.executable).with_name("moto_server"))


@dataclass
class ObjectStore:
    endpoint: str
    bucket: str
    proc: subprocess.Popen
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def uri(self, prefix: str | None = None) -> str:
        """A fresh location in the bucket (``s3://bucket/<prefix>``)."""
        return f"s3://{self.bucket}/{prefix or uuid.uuid4().hex[:10]}"

    def keys(self, uri: str) -> list[str]:
        """Every object under ``uri``, as paths relative to it."""
        import pyarrow.fs as pafs

        fs, base = pafs.FileSystem.from_uri(uri)
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        return sorted(i.path[len(base) + 1:] for i in infos if i.type == pafs.FileType.File)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_object_store(port: int, bucket: str = "overnight-test") -> ObjectStore:
    if not Path(MOTO).exists():
        raise RuntimeError(f"{MOTO} is missing: the test extra needs moto[server] (make install)")
    log = Path(tempfile.mkdtemp(prefix="moto")) / "moto.log"
    proc = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(port)], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    store = ObjectStore(endpoint, bucket, proc, log, env)
    deadline = time.monotonic() + 60
    while True:  # until it answers (or died)
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                break
        except OSError as e:
            if time.monotonic() > deadline:
                store.stop()
                raise TimeoutError(f"moto_server did not answer on {endpoint}:\n{log.read_text()[-2000:]}") from e
            time.sleep(0.1)
    # the bucket, through the S3 API as any client would create it
    req = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")
    # the first S3 call loads moto's S3 backend, which takes well over 10 s on a loaded machine
    with urllib.request.urlopen(req, timeout=120) as r:
        assert r.status == 200, r.status
    return store
