"""The container tier: the kit's images and the compose stack, run for real (`make test-containers`).

What runs: an engine (the one that answers, or Debian's dockerd started as root), Compose v2, the edge and
cloud images built from compose/*.Dockerfile, and the compose services. Where no image registry answers,
three base images are stand-ins built from Debian packages (tests/containers/engine.py says which and
why; each stand-in's Dockerfile under tests/containers/images/ says how it differs). The labs that start
services run here too, with RUNTIME=docker: their tests in tests/labs/ are parametrized by runtime.
"""

import os
import subprocess
import sys
import time

import yaml

from cloud.settings import KIT_ROOT
from cloud.stack.compose import compose_command

KIT = [sys.executable, "-m", "cloud.cli"]
USER_SERVICES = ("serverapp", "cloud", "stream-model", "processor", "drift", "cam-0", "supernode", "fl-run",
                 "fleet-setup", "cam-1-trainer", "heal")


def compose_config(*files: str, env: dict | None = None) -> dict:
    """`docker compose config` of the base file plus overlays, as a dict."""
    argv = compose_command("--profile", "*", "config", overlays=files)
    done = subprocess.run(argv, capture_output=True, text=True, cwd=KIT_ROOT,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_the_edge_image_holds_neither_torch_nor_tensorflow(container_stack):
    probe = "import importlib.util as u; print(sorted(m for m in ('torch', 'tensorflow') if u.find_spec(m)))"
    done = subprocess.run(["docker", "run", "--rm", "--entrypoint", "python3", "edge-cloud-kit/edge:dev", "-c", probe],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert container_stack["size_mb"]["edge"] < container_stack["size_mb"]["cloud"] / 2


def test_both_images_run_the_kit_commands(container_stack):
    for image, command in (("edge", ["--help"]), ("cloud", ["lab", "99"])):
        done = subprocess.run(["docker", "run", "--rm", f"edge-cloud-kit/{image}:dev", *command],
                              capture_output=True, text=True)
        text = done.stdout + done.stderr
        assert ("join" in text) if image == "edge" else ("available labs: lab-00" in text), text[-2000:]


def test_every_kit_container_runs_as_the_host_user(container_stack):
    env = {"KIT_UID": "4321", "KIT_GID": "4322"}
    services = {}
    for overlay in ((), ("lab-07",), ("lab-08",), ("lab-08", "tls"), ("lab-12",)):
        services.update(compose_config(*overlay, env=env)["services"])
    found = {name: services[name].get("user") for name in USER_SERVICES}
    assert found == dict.fromkeys(USER_SERVICES, "4321:4322")


def test_the_gpu_overlay_is_a_valid_compose_file(container_stack):
    devices = compose_config("gpu")["services"]["cloud"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]


def test_make_up_reaches_healthy_and_make_down_stops_it(container_stack, tmp_path):
    env = {**os.environ, "RUNTIME": "docker", "RUNS_DIR": str(tmp_path / "runs")}
    started = time.monotonic()
    up = subprocess.run(KIT + ["up", "--runtime", "docker"], capture_output=True, text=True, env=env, cwd=KIT_ROOT,
                        timeout=600)
    up_s = time.monotonic() - started
    try:
        assert up.returncode == 0, (up.stdout + up.stderr)[-3000:]
        print(f"make up RUNTIME=docker: healthy after {up_s:.1f} s (images present)")
        from cloud.stack.broker import broker_answers
        from cloud.stack.local import superlink_healthy

        assert broker_answers("127.0.0.1:9092")
        assert superlink_healthy("127.0.0.1", 8000)
        ps = subprocess.run(["docker", "compose", "-p", "edge-cloud-kit", "ps", "--format", "{{.Service}} {{.State}}"],
                            capture_output=True, text=True).stdout.split("\n")
        assert {"kafka running", "superlink running", "serverapp running"} <= {line.strip() for line in ps}
    finally:
        down = subprocess.run(KIT + ["down", "--runtime", "docker"], capture_output=True, text=True, env=env,
                              cwd=KIT_ROOT, timeout=300)
    assert down.returncode == 0, down.stderr[-2000:]
    left = subprocess.run(["docker", "ps", "-q", "--filter", "label=com.docker.compose.project=edge-cloud-kit"],
                          capture_output=True, text=True).stdout.split()
    assert left == []
