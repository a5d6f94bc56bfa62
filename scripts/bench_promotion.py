"""Benchmark: promotion by registry tag (RegistryClient.tag) vs. docker pull / tag / push.

Builds two images FROM the bed's python image, a small one (10 MiB of random data added) and a
large one (3 x 100 MiB of random data in three layers), pushes each once to the bed's registry
(setup, not timed), then times:

* promotion: ``RegistryClient.tag(<repo>@<digest>, <new env tag>)``, median of 5 runs;
* baseline: ``docker pull <ref>; docker tag <ref> <other repo>:env; docker push <other repo>:env``,
  median of 3 runs. Before each run the local image is removed (``docker rmi -f``) so the pull
  transfers its layers, and each run pushes to a repository of its own. Docker mounts the layers
  into the other repository of the same registry (cross-repository mount), so only the pull moves
  layer data here;
* baseline with upload: the same, but each run pushes into an empty registry the script starts on
  127.0.0.1:5012 (not timed), so the push uploads every layer as well. Median of 3 runs.

The registries' access logs tell what crossed the wire in each case; the table shows it.

Then promotion on Amazon ECR, against moto's server (started on loopback, not timed): the ECR
client's ``tag`` (DescribeRepositories for the tag's mutability, DescribeImages, BatchGetImage,
PutImage of the same manifest bytes), median of 5 runs, for a small manifest (3 layers, under
1 KB), a large one (1,500 layers, about 360 KB) and a multi-platform index (40 platforms of 120
layers each: the index moves, its manifests stay; about 1 MB in all).
moto answers in-process on loopback: the figures are the client's own cost and the API calls'
round trips here, not AWS's latency.

Prints figures, asserts nothing. Needs the test bed (tests/bed/up) and ``docker-registry``
(``--ecr``: only the ECR part, which needs neither). Usage:

    .venv/bin/python scripts/bench_promotion.py [--ecr]
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from docker_delivery.images.ref import ImageRef
from docker_delivery.images.registry import RegistryClient

PROMOTION_RUNS = 5
BASELINE_RUNS = 3
EMPTY_REGISTRY = "127.0.0.1:5012"
MIB = 1024 * 1024
_ACCESS_LINE = re.compile(
    r'"(?P<method>[A-Z]+) (?P<path>/v2/[^ "]*) HTTP/[0-9.]+" (?P<status>\d{3}) (?P<bytes>\d+)'
)


@dataclass(frozen=True)
class Bed:
    registry: str
    registry_log: Path
    python_image: str

    @classmethod
    def load(cls) -> Bed:
        if "DOCKER_DELIVERY_BED_DIR" in os.environ:
            directory = Path(os.environ["DOCKER_DELIVERY_BED_DIR"])
        elif os.geteuid() == 0:
            directory = Path("/var/lib/docker-delivery-bed")
        else:
            state = os.environ.get("XDG_STATE_HOME", str(Path.home() / ".local/state"))
            directory = Path(state) / "docker-delivery-bed"
        env_file = directory / "bed.env"
        if not env_file.exists():
            sys.exit(f"the test bed is not up ({env_file} is missing): run tests/bed/up")
        values = dict(
            line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line
        )
        return cls(
            registry=values["DOCKER_DELIVERY_BED_REGISTRY"],
            registry_log=Path(values["DOCKER_DELIVERY_BED_REGISTRY_LOG"]),
            python_image=values["DOCKER_DELIVERY_BED_PYTHON_IMAGE"],
        )

    def log_size(self) -> int:
        return self.registry_log.stat().st_size if self.registry_log.exists() else 0

    def log_since(self, offset: int) -> str:
        with self.registry_log.open("rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")


@dataclass(frozen=True)
class Traffic:
    """What the registry log shows for one repository during one run."""

    blob_bytes_served: int  # bytes of blob GETs (what a pull downloaded)
    blobs_mounted: int
    blobs_uploaded: int  # uploads that carried data (closing PUT of an upload)


def traffic(log_text: str, repository: str) -> Traffic:
    prefix = f"/v2/{repository}/"
    served = mounted = uploaded = 0
    for match in _ACCESS_LINE.finditer(log_text):
        path, method = match["path"], match["method"]
        if not path.startswith(prefix):
            continue
        if method == "GET" and "/blobs/sha" in path:
            served += int(match["bytes"])
        elif method == "POST" and "mount=" in path and match["status"] == "201":
            mounted += 1
        elif method == "PUT" and "/blobs/uploads/" in path:
            uploaded += 1
    return Traffic(served, mounted, uploaded)


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def docker(*args: str) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"docker {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def build(bed: Bed, name: str, nonce: str, layers_mib: list[int]) -> None:
    lines = [f"FROM {bed.python_image}"]
    for index, mib in enumerate(layers_mib):
        # The nonce makes every layer new: no build cache, nothing already in the registry.
        lines.append(
            f"RUN echo {nonce}-{index} > /bench-{index}.id && "
            f"head -c {mib * MIB} /dev/urandom > /bench-{index}.bin"
        )
    dockerfile = "\n".join(lines) + "\n"
    subprocess.run(
        ["docker", "build", "-q", "-t", name, "-"],
        input=dockerfile,
        text=True,
        check=True,
        capture_output=True,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )


def wait_for_log(bed: Bed, offset: int, repository: str, fragment: str) -> str:
    """The log since ``offset`` once it shows a request for ``repository`` with ``fragment``."""
    deadline = time.monotonic() + 10
    while True:
        text = bed.log_since(offset)
        if any(
            m["path"].startswith(f"/v2/{repository}/") and fragment in m["path"]
            for m in _ACCESS_LINE.finditer(text)
        ):
            return text
        if time.monotonic() > deadline:
            return text
        time.sleep(0.1)


@dataclass(frozen=True)
class Served:
    address: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def empty_registry(address: str) -> Iterator[Served]:
    """A `docker-registry serve` with empty storage on ``address``, removed afterwards."""
    binary = shutil.which("docker-registry")
    if binary is None:
        sys.exit("docker-registry is not installed: run tests/bed/up (it installs it)")
    directory = Path(tempfile.mkdtemp(prefix="dd-bench-registry-"))
    config = directory / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: false\n"
        f"storage:\n  filesystem:\n    rootdirectory: {directory / 'data'}\n"
        f"http:\n  addr: {address}\n"
    )
    log = directory / "registry.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [binary, "serve", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                sys.exit(f"the registry on {address} exited: {log.read_text()[-1000:]}")
            try:
                if httpx.get(f"http://{address}/v2/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"the registry on {address} did not answer")
            time.sleep(0.2)
        yield Served(address, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)


@dataclass(frozen=True)
class Row:
    image: str
    size_mb: float
    promotion_ms: float
    promotion_uploads: int
    baseline_s: float
    pulled_mb: float
    push_mounted: int
    push_uploaded: int
    upload_baseline_s: float
    upload_push_uploaded: int


def bench_image(bed: Bed, client: RegistryClient, label: str, layers_mib: list[int]) -> Row:
    nonce = uuid.uuid4().hex[:8]
    repository = f"dd-bench/{nonce}-{label}"
    name = f"{bed.registry}/{repository}:v1"
    say(f"{label}: building {name} ({' + '.join(f'{m} MiB' for m in layers_mib)} random data)")
    build(bed, name, nonce, layers_mib)
    say(f"{label}: docker push {name} (setup, not timed)")
    docker("push", "-q", name)
    ref = ImageRef.parse(name)
    digest = client.resolve(ref)
    pinned = ref.with_digest(digest)
    manifest = client.get_manifest(pinned)
    document = manifest.document
    size = sum(int(layer["size"]) for layer in document["layers"]) + int(document["config"]["size"])

    # (a) promotion by tag
    promotion_times: list[float] = []
    offset = bed.log_size()
    for run in range(PROMOTION_RUNS):
        with RegistryClient(bed.registry) as registry:
            started = time.perf_counter()
            registry.tag(pinned, f"env-{run}")
            promotion_times.append(time.perf_counter() - started)
    promoted = traffic(
        wait_for_log(bed, offset, repository, f"/manifests/env-{PROMOTION_RUNS - 1}"),
        repository,
    )
    say(f"{label}: promotion runs (s): {', '.join(f'{t:.4f}' for t in promotion_times)}")

    # (b) baseline: docker pull, tag, push into another repository
    baseline_times: list[float] = []
    pulled: list[int] = []
    mounted: list[int] = []
    uploaded: list[int] = []
    for run in range(BASELINE_RUNS):
        image_id = docker("image", "inspect", "-f", "{{.Id}}", name)
        docker("rmi", "-f", image_id)
        target_repository = f"{repository}-env{run}"
        target = f"{bed.registry}/{target_repository}:env"
        offset = bed.log_size()
        started = time.perf_counter()
        docker("pull", "-q", name)
        docker("tag", name, target)
        docker("push", "-q", target)
        baseline_times.append(time.perf_counter() - started)
        text = wait_for_log(bed, offset, target_repository, "/manifests/env")
        pull = traffic(text, repository)
        push = traffic(text, target_repository)
        pulled.append(pull.blob_bytes_served)
        mounted.append(push.blobs_mounted)
        uploaded.append(push.blobs_uploaded)
        say(
            f"{label}: baseline run {run + 1}: {baseline_times[-1]:.2f} s, pulled "
            f"{pull.blob_bytes_served / 1e6:.1f} MB, push mounted {push.blobs_mounted} and "
            f"uploaded {push.blobs_uploaded} blob(s)"
        )

    # (c) baseline with upload: docker pull, tag, push into an empty registry
    upload_times: list[float] = []
    upload_counts: list[int] = []
    for run in range(BASELINE_RUNS):
        docker("rmi", "-f", docker("image", "inspect", "-f", "{{.Id}}", name))
        with empty_registry(EMPTY_REGISTRY) as empty:
            target_repository = f"{repository}-env{run}"
            target = f"{empty.address}/{target_repository}:env"
            started = time.perf_counter()
            docker("pull", "-q", name)
            docker("tag", name, target)
            docker("push", "-q", target)
            upload_times.append(time.perf_counter() - started)
            time.sleep(0.3)  # let the access log catch up
            push = traffic(empty.log_text(), target_repository)
            upload_counts.append(push.blobs_uploaded)
            docker("rmi", target)
        say(
            f"{label}: baseline with upload, run {run + 1}: {upload_times[-1]:.2f} s, push "
            f"uploaded {push.blobs_uploaded} blob(s)"
        )
    docker("rmi", "-f", docker("image", "inspect", "-f", "{{.Id}}", name))

    return Row(
        image=label,
        size_mb=size / 1e6,
        promotion_ms=statistics.median(promotion_times) * 1000,
        promotion_uploads=promoted.blobs_mounted + promoted.blobs_uploaded,
        baseline_s=statistics.median(baseline_times),
        pulled_mb=statistics.median(pulled) / 1e6,
        push_mounted=int(statistics.median(mounted)),
        push_uploaded=int(statistics.median(uploaded)),
        upload_baseline_s=statistics.median(upload_times),
        upload_push_uploaded=int(statistics.median(upload_counts)),
    )


ECR_ACCOUNT, ECR_REGION = "123456789012", "us-east-1"


def ecr_manifests(platforms: int, layers: int) -> list[tuple[str, str]]:
    """(media type, bytes) of the manifests of one image: ``platforms`` manifests of ``layers``
    layers each, then their index (or the one manifest when ``platforms`` is 1)."""
    import hashlib
    import json

    def digest(text: str) -> str:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    nonce = uuid.uuid4().hex
    oci = "application/vnd.oci.image.manifest.v1+json"
    children = []
    for p in range(platforms):
        manifest = {
            "schemaVersion": 2,
            "mediaType": oci,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": digest(f"c{p}{nonce}"), "size": 1500},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": digest(f"l{p}.{i}{nonce}"), "size": 10_000 + i}
                       for i in range(layers)],
        }  # fmt: skip
        children.append((oci, json.dumps(manifest, indent=2)))
    if platforms == 1:
        return children
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": oci, "digest": digest(raw), "size": len(raw),
                       "platform": {"os": "linux", "architecture": f"arch{n}"}}
                      for n, (_, raw) in enumerate(children)],
    }  # fmt: skip
    return [*children, ("application/vnd.oci.image.index.v1+json", json.dumps(index, indent=2))]


def bench_ecr() -> list[tuple[str, int, float, float]]:
    """(label, manifest bytes, median ms, max ms) of ECR promotions against moto."""
    import hashlib

    import boto3

    from docker_delivery.images.registry.ecr import EcrRegistryClient

    port = 47100 + os.getpid() % 500
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(f"{url}/moto-api/data.json", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        ecr = boto3.client("ecr", endpoint_url=url, region_name=ECR_REGION,
                           aws_access_key_id="bench", aws_secret_access_key="bench")  # fmt: skip
        registry = f"{ECR_ACCOUNT}.dkr.ecr.{ECR_REGION}.amazonaws.com"
        rows = []
        with EcrRegistryClient(registry, ecr) as client:
            shapes = (("small", 1, 3), ("large", 1, 1500), ("index", 40, 120))
            for label, platforms, layers in shapes:
                repo = f"bench/{label}-{uuid.uuid4().hex[:6]}"
                ecr.create_repository(repositoryName=repo)
                manifests = ecr_manifests(platforms, layers)
                for media_type, raw in manifests:
                    ecr.put_image(repositoryName=repo, imageManifest=raw,
                                  imageManifestMediaType=media_type,
                                  imageDigest="sha256:" + hashlib.sha256(raw.encode()).hexdigest(),
                                  imageTag=f"build-{uuid.uuid4().hex[:8]}")  # fmt: skip
                raw = manifests[-1][1]
                image = ImageRef(
                    registry, repo, None, "sha256:" + hashlib.sha256(raw.encode()).hexdigest()
                )
                times = []
                for run in range(PROMOTION_RUNS):
                    t0 = time.perf_counter()
                    client.tag(image, f"env{run}")
                    times.append((time.perf_counter() - t0) * 1000)
                size = sum(len(r) for _, r in manifests)
                rows.append((label, size, statistics.median(times), max(times)))
        return rows
    finally:
        server.terminate()
        server.wait(timeout=30)


def print_ecr(rows: list[tuple[str, int, float, float]]) -> None:
    print()
    print("Promotion on ECR (moto server on loopback): EcrRegistryClient.tag, 4 API calls")
    print(f"{'image':<7} {'manifests KB':>13} {'median ms':>10} {'max ms':>8}")
    for label, size, median, top in rows:
        print(f"{label:<7} {size / 1024:>13.1f} {median:>10.1f} {top:>8.1f}")
    print(f"median and max of {PROMOTION_RUNS} tags each; no layer is read or written.")


def main() -> None:
    if "--ecr" in sys.argv[1:]:
        print_ecr(bench_ecr())
        return
    bed = Bed.load()
    rows = []
    with RegistryClient(bed.registry) as client:
        rows.append(bench_image(bed, client, "small", [10]))
        rows.append(bench_image(bed, client, "large", [100, 100, 100]))

    print()
    header = (
        f"{'image':<7} {'size MB':>8} {'promotion ms':>13} {'baseline s':>11} {'speedup':>8} "
        f"{'baseline+upload s':>18} {'speedup':>8}"
    )
    print(header)
    for row in rows:
        print(
            f"{row.image:<7} {row.size_mb:>8.1f} {row.promotion_ms:>13.1f} "
            f"{row.baseline_s:>11.2f} {row.baseline_s * 1000 / row.promotion_ms:>7.0f}x "
            f"{row.upload_baseline_s:>18.2f} "
            f"{row.upload_baseline_s * 1000 / row.promotion_ms:>7.0f}x"
        )
    print()
    print("What crossed the wire (registry access logs, medians):")
    for row in rows:
        print(
            f"  {row.image}: promotion uploaded {row.promotion_uploads} blobs; baseline pulled "
            f"{row.pulled_mb:.1f} MB, its push mounted {row.push_mounted} blobs and uploaded "
            f"{row.push_uploaded} (the config); baseline+upload pushed "
            f"{row.upload_push_uploaded} blobs into the empty registry"
        )
    print()
    print(
        "size MB: compressed size in the registry (config + layers, base image included).\n"
        f"promotion: median of {PROMOTION_RUNS} RegistryClient.tag() calls, each to a new tag.\n"
        f"baseline: median of {BASELINE_RUNS} runs of docker pull + tag + push to a new "
        "repository of the same registry, the local image removed before each.\n"
        f"baseline+upload: the same, pushing into an empty registry ({EMPTY_REGISTRY}).\n"
        f"The base image's layers stay in the engine (shared with {bed.python_image}), so a "
        "pull downloads the added layers only."
    )
    print_ecr(bench_ecr())


if __name__ == "__main__":
    main()
