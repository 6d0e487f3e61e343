"""Test tiers: a test's folder (unit/, integration/, labs/, containers/) gives its marker; --cpu-hog N runs the suite
under load; --containers runs the container tier (tests marked ``containers``: the labs with RUNTIME=docker too)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# The suite runs TensorFlow and TenSEAL in one process: TenSEAL must be imported first, or its
# serialize() segfaults (see edge.private.he.import_tenseal). Labs run in their own processes.
try:
    import tenseal  # noqa: F401
except ImportError:  # the edge-only install has no tenseal
    pass

ROOT = Path(__file__).resolve().parent.parent
TIERS = ("unit", "integration", "labs", "containers")
HOGS = pytest.StashKey[list]()
# A busy loop that also ends by itself once the pytest that started it is gone (killed with SIGKILL, say):
# argv is ["-c", "cpu-hog", PARENT_PID], so `ps` shows what it is.
HOG = "import os, sys\nparent = int(sys.argv[2])\nwhile os.getppid() == parent:\n    sum(range(20_000))\n"


def pytest_addoption(parser):
    """--cpu-hog N: N busy processes beside the suite (a busy laptop in miniature); --containers: the container tier."""
    parser.addoption("--containers", action="store_true",
                     help="run the container tier (`make test-containers`): real images, compose, RUNTIME=docker")
    parser.addoption("--cpu-hog", type=int, default=0, metavar="N",
                     help="start N busy-loop processes for the whole session and stop them at its end "
                          "(make test-under-load)")


def start_hogs(count: int) -> list[subprocess.Popen]:
    """Start count busy-loop processes, each in its own session so a Ctrl-C reaches pytest, which stops them."""
    return [subprocess.Popen([sys.executable, "-c", HOG, "cpu-hog", str(os.getpid())], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            for _ in range(count)]


def stop_hogs(hogs: list[subprocess.Popen]) -> None:
    """Terminate the busy processes and reap them (kill any that ignore SIGTERM)."""
    for hog in hogs:
        hog.terminate()
    for hog in hogs:
        try:
            hog.wait(5)
        except subprocess.TimeoutExpired:
            hog.kill()
            hog.wait()


def pytest_configure(config):
    """Start the --cpu-hog processes before the first test is collected."""
    count = config.getoption("cpu_hog")
    if count < 0:
        raise pytest.UsageError(f"--cpu-hog {count}: expected 0 or more busy processes")
    config.stash[HOGS] = start_hogs(count) if count else []


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session):
    """Say in one line how many busy processes run beside the suite (shown with -q too)."""
    hogs = session.config.stash.get(HOGS, [])
    if not hogs:
        return
    line = (f"cpu-hog: {len(hogs)} busy process{'es' if len(hogs) > 1 else ''} beside the suite on "
            f"{os.cpu_count()} cores (pids {', '.join(str(h.pid) for h in hogs)})")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)
    else:
        print(line, file=sys.stderr, flush=True)


def pytest_unconfigure(config):
    """Stop the --cpu-hog processes: after the last test, after a Ctrl-C, after a usage error."""
    stop_hogs(config.stash.get(HOGS, []))
    config.stash[HOGS] = []


def pytest_collection_modifyitems(config, items):
    """Mark each test with the tier named by its folder; the kit's own doctests are unit tests."""
    for item in items:
        path = Path(str(item.fspath))
        if not path.is_relative_to(ROOT / "tests"):
            item.add_marker(pytest.mark.unit)  # a ``>>>`` example in edge/ or cloud/
            continue
        parts = path.relative_to(ROOT / "tests").parts
        if parts and parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[0]))
    skip = pytest.mark.skip(reason="the container tier runs with `make test-containers` (--containers)")
    for item in items:
        if item.get_closest_marker("containers") and not config.getoption("containers"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def edge_artifacts(tmp_path_factory):
    """Lab 04's four signed bundles (ONNX/TFLite x fp32/int8), keys, frames and reference logits, built once."""
    from cloud.ml.edge_artifacts import build_edge_artifacts

    return build_edge_artifacts(tmp_path_factory.getbasetemp() / "edge-artifacts", seed=0)


@pytest.fixture(autouse=True, scope="session")
def _venv_bin_on_path():
    """Flower's SuperLink starts flower-superexec from the venv's bin: keep it on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    yield


@pytest.fixture()
def run_settings(tmp_path, monkeypatch):
    """StackSettings writing runs and artifacts under a temporary folder, on free ports."""
    from cloud.settings import StackSettings
    from cloud.stack.procs import free_port

    return StackSettings(
        runs_dir=tmp_path / "runs",
        stack_dir=tmp_path / "stack",
        artifacts_dir=tmp_path / "artifacts",
        certs_dir=tmp_path / "certs",
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        superlink_address=f"127.0.0.1:{free_port()}",
        runtime="local",
    )


@pytest.fixture(scope="session")
def container_stack(tmp_path_factory):
    """An engine, Compose v2 and the kit's images (stand-in bases where no registry answers); stopped at the end.

    Selects the images through the environment compose reads (PYTHON_IMAGE, SUPERLINK_IMAGE, KAFKA_IMAGE,
    COMPOSE_OVERLAYS) and yields what it built: {"standins": bool, "build_s": {...}, "size_mb": {...}}.
    """
    from containers import engine as tier

    work = tmp_path_factory.mktemp("engine")
    engine = tier.start_engine(work)
    try:
        tier.ensure_compose(engine, work)
        tier.copy_host_ca(engine)
        selected = {}
        standins = not tier.registry_answers(tier.OFFICIAL["PYTHON_IMAGE"])
        if standins:
            selected.update(tier.build_standins(work))
        wheels = tier.local_torch_wheels()
        if wheels is not None:
            selected.update(tier.serve_torch_wheel(engine, wheels))
        os.environ.update(selected)
        build_s = tier.build_kit_images(selected)
        size_mb = {name: tier.image_size_mb(f"edge-cloud-kit/{name}:dev") for name in ("edge", "cloud")}
        print(f"\ncontainer tier: engine {'started' if engine.started else 'found'}, "
              f"{'stand-in' if standins else 'official'} base images, builds {build_s} s, sizes {size_mb} MB")
        yield {"standins": standins, "build_s": build_s, "size_mb": size_mb, "engine_started": engine.started}
    finally:
        subprocess.run(["docker", "compose", "-p", "edge-cloud-kit", "down", "--volumes", "--remove-orphans"],
                       capture_output=True, cwd=ROOT)
        engine.stop()


@pytest.fixture(params=["local", pytest.param("docker", marks=pytest.mark.containers)])
def lab_settings(request, tmp_path):
    """Settings for a lab test, once per runtime: local processes on free ports, or the compose stack."""
    if request.param == "local":
        return request.getfixturevalue("run_settings")
    from cloud.settings import StackSettings

    request.getfixturevalue("container_stack")
    return StackSettings(runs_dir=tmp_path / "runs", stack_dir=tmp_path / "stack", artifacts_dir=tmp_path / "artifacts",
                         certs_dir=tmp_path / "certs", runtime="docker", superlink_tls=False)
