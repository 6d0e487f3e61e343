"""Static checks of the compose stack (no Docker engine runs in CI): schema, lint, entry points."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cloud.settings import StackSettings
from cloud.stack.local import service_specs

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMPOSE_FILES = [ROOT / "docker-compose.yml", *sorted((ROOT / "compose").glob("*.yml"))]
DOCKERFILES = sorted((ROOT / "compose").glob("*.Dockerfile"))


def compose_services() -> dict:
    """Services of the base compose file."""
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_file_matches_the_compose_spec(path):
    done = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                           str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_lints_clean(path):
    done = subprocess.run([str(BIN / "hadolint"), str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_built_service_runs_a_kit_entry_point():
    from cloud.cli import parse as parse_cloud

    parsers = {"cloud": parse_cloud}
    try:
        from edge.cli import build_parser as edge_parser

        parsers["edge"] = lambda argv: edge_parser().parse_args(argv)
    except ImportError:
        pass
    built = {name: s for name, s in compose_services().items() if "build" in s}
    assert set(built) == {"cloud", "edge", "serverapp"}
    superexec = built.pop("serverapp")  # Flower's own program, installed with the kit's pinned flwr
    assert superexec["entrypoint"] == ["flower-superexec"] and (BIN / "flower-superexec").exists()
    assert superexec["command"][-2:] == ["--runtime-api-address", "superlink:8000"]
    for name, service in built.items():
        program = service["entrypoint"][0]
        assert program in parsers, f"{name}: entrypoint {program} is not a kit command"
        parsers[program](service["command"])  # raises SystemExit if the command is wrong


def test_superlink_service_uses_the_local_stack_flags():
    plain = StackSettings(superlink_tls=False)
    local = service_specs(plain, ROOT / "runs" / "stack")["superlink"].command[1:]
    container = compose_services()["superlink"]["command"]
    at = container.index("--isolation")  # the ServerApp runs in the `serverapp` container
    assert container[at + 1] == "process"
    container = container[:at] + container[at + 2:]
    strip = lambda argv: [a for a in argv if a not in ("127.0.0.1", "0.0.0.0")]  # noqa: E731
    assert strip(container) == strip(local[:-1]) + [container[-1]]


def test_kafka_advertises_an_internal_and_a_lan_listener():
    env = compose_services()["kafka"]["environment"]
    advertised = env["KAFKA_ADVERTISED_LISTENERS"]
    assert "INTERNAL://kafka:19092" in advertised
    assert "EXTERNAL://${KAFKA_HOST_IP" in advertised
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1


def test_services_wait_on_health_not_on_order():
    for name, service in compose_services().items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition == {"condition": "service_healthy"}, name
            assert "healthcheck" in compose_services()[dependency], dependency


def test_makefile_passes_the_versions_file_to_compose():
    from cloud.stack.compose import compose_command

    cmd = compose_command("up")
    assert cmd[:4] == ["docker", "compose", "--env-file", str(ROOT / "versions.env")]
    assert shlex.join(cmd).endswith("up")


def overlay_services() -> list[tuple[str, str, dict]]:
    """(file, service, definition) for every service of every compose overlay."""
    found = []
    for path in sorted((ROOT / "compose").glob("*.yml")):
        for name, service in (yaml.safe_load(path.read_text()).get("services") or {}).items():
            found.append((path.name, name, service))
    return found


def test_overlay_services_run_kit_modules():
    import importlib.util

    checked = 0
    for file, name, service in overlay_services():
        entrypoint = list(service.get("entrypoint") or [])
        command = list(service.get("command") or [])
        argv = entrypoint + command
        if argv[:2] == ["python", "-m"]:
            module = argv[2]
            assert module.split(".")[0] in ("cloud", "edge"), f"{file}:{name} runs {module}"
            spec = importlib.util.find_spec(module)
            assert spec is not None, f"{file}:{name}: no module {module}"
            origin = Path(spec.origin)
            if origin.name == "__init__.py":  # `python -m package` runs the package's __main__.py
                origin = origin.with_name("__main__.py")
            assert "def main(" in origin.read_text(), f"{file}:{name}: {module} has no main()"
            checked += 1
        elif argv[:2] == ["python", "-c"]:
            assert "from cloud." in argv[2] or "from edge." in argv[2], f"{file}:{name}"
            checked += 1
    assert checked >= 1


def kafka_rule_breaks(env: dict, hostname: str, session_timeouts_ms: tuple[int, ...] = ()) -> list[str]:
    """What in a Kafka KRaft service's environment Kafka itself would refuse (empty when nothing).

    The rules are Kafka's: a cluster id is the URL-safe base64 of 16 bytes (Uuid.fromString), every
    listener name has a security protocol, advertised listeners are listeners but not controller ones
    (a combined broker,controller node), the controller quorum names this node on its controller port,
    and a consumer's session timeout lies within group.min/max.session.timeout.ms (6 s and 30 min by
    default), else its JoinGroup fails with INVALID_SESSION_TIMEOUT.
    """
    import base64
    import re

    breaks = []
    cluster_id = re.sub(r"^\$\{[A-Z_]+:-(.*)\}$", r"\1", str(env["CLUSTER_ID"]))
    try:
        raw = base64.urlsafe_b64decode(cluster_id + "==")
    except ValueError:
        raw = b""
    if len(cluster_id) != 22 or len(raw) != 16 or raw == bytes(16):
        breaks.append(f"CLUSTER_ID {cluster_id!r} is not the base64 of 16 bytes (22 characters)")

    def names(value: str) -> dict[str, str]:
        """NAME -> the rest, from 'NAME://host:port,...' or 'NAME:PROTOCOL,...'."""
        pairs = [item.split(":", 1) for item in value.split(",") if item]
        return {name: rest.removeprefix("//") for name, rest in pairs}

    listeners = names(env["KAFKA_LISTENERS"])
    protocols = names(env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"])
    advertised = names(env["KAFKA_ADVERTISED_LISTENERS"])
    controllers = set(env["KAFKA_CONTROLLER_LISTENER_NAMES"].split(","))
    for name in set(listeners) - set(protocols):
        breaks.append(f"listener {name} has no security protocol in the map")
    for name in set(advertised) - set(listeners):
        breaks.append(f"advertised listener {name} is not a listener")
    for name in set(advertised) - set(protocols):
        breaks.append(f"advertised listener {name} has no security protocol in the map")
    for name in set(advertised) & controllers:
        breaks.append(f"controller listener {name} must not be advertised by a broker")
    if env["KAFKA_INTER_BROKER_LISTENER_NAME"] not in set(advertised) - controllers:
        breaks.append("the inter-broker listener is not an advertised broker listener")
    node_id = str(env["KAFKA_NODE_ID"])
    voters = [v.split("@") for v in str(env["KAFKA_CONTROLLER_QUORUM_VOTERS"]).split(",")]
    controller_ports = {listeners[c].rsplit(":", 1)[-1] for c in controllers if c in listeners}
    if not any(vid == node_id and addr == f"{hostname}:{port}" for vid, addr in voters for port in controller_ports):
        breaks.append(f"the controller quorum {voters} does not name node {node_id} at {hostname} "
                      f"on its controller port {sorted(controller_ports)}")
    if "controller" not in env["KAFKA_PROCESS_ROLES"]:
        breaks.append("a single node must take the controller role")
    low = int(env.get("KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS", 6000))
    high = int(env.get("KAFKA_GROUP_MAX_SESSION_TIMEOUT_MS", 1_800_000))
    for timeout in session_timeouts_ms:
        if not low <= timeout <= high:
            breaks.append(f"a consumer's session timeout of {timeout} ms is outside the broker's "
                          f"[{low}, {high}] ms (KAFKA_GROUP_MIN/MAX_SESSION_TIMEOUT_MS)")
    return breaks


def kit_session_timeouts_ms() -> tuple[int, ...]:
    """The session timeouts the kit's consumer groups ask for: the stream processor's and edge.wire's default."""
    from cloud.streaming.processor import ProcessorService
    from edge.wire.kafka import consumer_config

    return ProcessorService.SESSION_TIMEOUT_MS, consumer_config("x:9092", "g")["session_timeout_ms"]


def test_the_kafka_service_is_configured_as_kafka_requires():
    kafka = compose_services()["kafka"]
    assert kafka_rule_breaks(kafka["environment"], kafka["hostname"], kit_session_timeouts_ms()) == []


@pytest.mark.parametrize("change, complaint", [
    ({"CLUSTER_ID": "edge-cloud-kit-0001"}, "CLUSTER_ID"),  # the old default: 14 bytes
    ({"KAFKA_ADVERTISED_LISTENERS": "INTERNAL://kafka:19092,LAN://10.0.0.2:9092"}, "advertised listener LAN"),
    ({"KAFKA_ADVERTISED_LISTENERS": "INTERNAL://kafka:19092,CONTROLLER://kafka:9093"}, "must not be advertised"),
    ({"KAFKA_CONTROLLER_QUORUM_VOTERS": "1@kafka:9092"}, "controller quorum"),
    ({"KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT"}, "EXTERNAL has no"),
    ({"KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS": 6000}, "session timeout of 3000 ms"),  # Kafka's default minimum
])
def test_the_kafka_rules_catch_what_kafka_refuses(change, complaint):
    kafka = compose_services()["kafka"]
    breaks = kafka_rule_breaks({**kafka["environment"], **change}, kafka["hostname"], kit_session_timeouts_ms())
    assert any(complaint in b for b in breaks), breaks
