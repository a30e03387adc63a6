"""A real single-node Apache Kafka broker (KRaft, combined mode) on loopback, from Maven jars.

No Docker engine exists on many developer machines, and trying runstate should not need one.
This module resolves the broker's jars from Maven Central once (into a cache folder), formats
a KRaft storage folder once, and runs ``kafka.Kafka`` as a child process that outlives the
command that started it. Everything it keeps lives under one state folder:

``<data_dir>/broker.json``   the ports chosen at first start (reused, so the quorum stays valid)
``<data_dir>/broker.pid``    the running broker's pid
``<data_dir>/logs/``         Kafka's log dirs (topic data and KRaft metadata)
``<data_dir>/broker.log``    the broker's own log (log4j2)
``<data_dir>/credentials/``  secure mode only: one ``<user>.password`` per role and admin (0600)

``secure=True`` (``runstate broker start --secure``) turns on SASL/SCRAM for clients and the
authorizer, with a user per role; :meth:`LocalBroker.grant_role_acls` gives each role its
ACLs (:mod:`runstate.streams.acls`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from runstate.errors import BrokerError
from runstate.streams.topics import TopicNames

__all__ = [
    "KAFKA_VERSION",
    "BrokerConfig",
    "BrokerStatus",
    "LocalBroker",
    "ensure_jars",
    "free_port",
]

KAFKA_VERSION = "4.1.1"
MAIN_CLASS = "kafka.Kafka"
_READY_POLL_S = 0.2
_SCRAM = "SCRAM-SHA-512"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise BrokerError(f"{tool!r} was not found on PATH; {hint}")
    return path


def ensure_jars(jars_dir: Path, *, quiet: bool = True) -> Path:
    """Resolve the broker's runtime jars from Maven Central into ``jars_dir`` (once).

    Raises:
        BrokerError: Maven or Java is missing, or the resolution failed (the message
            carries Maven's last lines).
    """
    marker = jars_dir / ".complete"
    if marker.exists():
        return jars_dir
    _require("java", "install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless)")
    mvn = _require("mvn", "install Apache Maven (Debian: apt-get install maven)")
    jars_dir.mkdir(parents=True, exist_ok=True)
    pom = resources.files("runstate.streams").joinpath("kafka-runtime.pom.xml")
    pom_path = jars_dir / "pom.xml"
    pom_path.write_text(pom.read_text().replace("@KAFKA_VERSION@", KAFKA_VERSION))
    cmd = [
        mvn,
        "-B",
        "-f",
        str(pom_path),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={jars_dir}",
        "-DincludeScope=runtime",
    ]
    if quiet:
        cmd.insert(1, "-q")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise BrokerError(f"Maven could not fetch the Kafka {KAFKA_VERSION} jars:\n{tail}")
    marker.write_text(KAFKA_VERSION)
    return jars_dir


@dataclass(frozen=True)
class BrokerConfig:
    """Where the broker keeps its data and which loopback ports it listens on."""

    data_dir: Path
    jars_dir: Path
    port: int = 9092
    controller_port: int = 9093
    heap_mb: int = 512
    #: SASL/SCRAM on the client listener, ACLs enforced, one user per role (docs/security.md).
    secure: bool = False

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class BrokerStatus:
    pid: int
    bootstrap: str
    data_dir: Path
    log_file: Path


class LocalBroker:
    """Starts, stops and reports one local broker; every call is safe to repeat."""

    def __init__(self, config: BrokerConfig) -> None:
        self._requested = config
        self.config = self._settled_config(config)

    # -- files -------------------------------------------------------------------------------
    @property
    def _pid_file(self) -> Path:
        return self.config.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.config.data_dir / "broker.log"

    def _settled_config(self, config: BrokerConfig) -> BrokerConfig:
        """Ports are fixed at first start: KRaft records the controller's address."""
        saved = config.data_dir / "broker.json"
        if not saved.exists():
            return config
        ports = json.loads(saved.read_text())
        secure = bool(ports.get("secure", False))
        if (ports["port"], ports["controller_port"], secure) != (
            config.port,
            config.controller_port,
            config.secure,
        ):
            return BrokerConfig(
                data_dir=config.data_dir,
                jars_dir=config.jars_dir,
                port=int(ports["port"]),
                controller_port=int(ports["controller_port"]),
                heap_mb=config.heap_mb,
                secure=secure,
            )
        return config

    # -- credentials (secure mode) -----------------------------------------------------------
    @property
    def credentials_dir(self) -> Path:
        """Where a secure broker's passwords live, one ``<user>.password`` file each (0600)."""
        return self.config.data_dir / "credentials"

    def password(self, user: str) -> str:
        """The password of ``admin`` or a role's user on a secure broker.

        Raises:
            BrokerError: the broker was not started with --secure.
        """
        try:
            return (self.credentials_dir / f"{user}.password").read_text().strip()
        except FileNotFoundError:
            raise BrokerError(
                f"no credentials for {user!r} in {self.credentials_dir}: the broker of"
                f" {self.config.data_dir} was not started with --secure"
            ) from None

    def client_env(self, user: str) -> dict[str, str]:
        """``RUNSTATE_KAFKA_*`` variables that make runstate's clients connect as ``user``."""
        self.password(user)
        return {
            "RUNSTATE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "RUNSTATE_KAFKA_SASL_MECHANISM": _SCRAM,
            "RUNSTATE_KAFKA_SASL_USERNAME": user,
            "RUNSTATE_KAFKA_SASL_PASSWORD_FILE": str(self.credentials_dir / f"{user}.password"),
        }

    def _ensure_credentials(self) -> None:
        from runstate.streams.acls import ROLES

        self.credentials_dir.mkdir(mode=0o700, exist_ok=True)
        for user in ("admin", *ROLES):
            path = self.credentials_dir / f"{user}.password"
            if not path.exists():
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_urlsafe(24) + "\n")

    def grant_role_acls(self, names: TopicNames) -> int:
        """Create every role's ACLs (docs/security.md) for ``names``; safe to repeat.

        Returns:
            How many ACLs the roles have.

        Raises:
            BrokerError: not a secure broker, or the broker refused.
        """
        from runstate.streams.acls import apply_grants
        from runstate.streams.clients import admin_client

        admin = admin_client(
            self.config.bootstrap,
            **{
                "security.protocol": "sasl_plaintext",
                "sasl.mechanism": _SCRAM,
                "sasl.username": "admin",
                "sasl.password": self.password("admin"),
            },
        )
        return apply_grants(admin, names)

    def _security_properties(self) -> dict[str, str]:
        """Listeners and, in secure mode, SASL and the authorizer.

        Secure: clients authenticate with SCRAM-SHA-512 (users created at format time), the
        controller listener with PLAIN (KRaft controllers cannot check SCRAM, whose
        credentials live in the metadata they serve), and ``admin`` is the only super user;
        no ACL means no access.
        """
        c = self.config
        if not c.secure:
            return {
                "listeners": f"PLAINTEXT://127.0.0.1:{c.port},CONTROLLER://127.0.0.1:{c.controller_port}",
                "advertised.listeners": f"PLAINTEXT://127.0.0.1:{c.port}",
                "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            }
        admin = self.password("admin")
        return {
            "listeners": f"SASL_PLAINTEXT://127.0.0.1:{c.port},CONTROLLER://127.0.0.1:{c.controller_port}",
            "advertised.listeners": f"SASL_PLAINTEXT://127.0.0.1:{c.port}",
            "listener.security.protocol.map": (
                "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
            ),
            "inter.broker.listener.name": "SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": _SCRAM,
            "sasl.mechanism.inter.broker.protocol": _SCRAM,
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required"
                f' username="admin" password="{admin}";'
            ),
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": (
                "org.apache.kafka.common.security.plain.PlainLoginModule required"
                f' username="admin" password="{admin}" user_admin="{admin}";'
            ),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": "User:admin",
            "allow.everyone.if.no.acl.found": "false",
        }

    def _write_properties(self) -> Path:
        c = self.config
        logs = c.data_dir / "logs"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            **self._security_properties(),
            "controller.listener.names": "CONTROLLER",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{c.controller_port}",
            "log.dirs": str(logs),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
            "log.cleaner.backoff.ms": "1000",
            "auto.create.topics.enable": "false",
            "delete.topic.enable": "true",
        }
        path = c.data_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        log4j = c.data_dir / "log4j2.properties"
        log4j.write_text(
            "status = warn\n"
            "appender.file.type = File\n"
            "appender.file.name = FILE\n"
            f"appender.file.fileName = {self.log_file}\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = INFO\n"
            "rootLogger.appenderRef.file.ref = FILE\n"
            "logger.kafka.name = kafka\nlogger.kafka.level = WARN\n"
            "logger.state.name = state.change.logger\nlogger.state.level = WARN\n"
            "logger.apache.name = org.apache.kafka\nlogger.apache.level = WARN\n"
        )
        return path

    def _java(self, *args: str, heap: bool = False) -> list[str]:
        java = _require("java", "install a Java 17+ runtime")
        cmd = [java]
        if heap:
            cmd += [f"-Xmx{self.config.heap_mb}m", f"-Xms{self.config.heap_mb}m"]
        cmd += [
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.config.data_dir / 'log4j2.properties'}",
            "-cp",
            str(self.config.jars_dir / "*"),
            *args,
        ]
        return cmd

    def _format_once(self, props: Path) -> None:
        if (self.config.data_dir / "logs" / "meta.properties").exists():
            return
        out = subprocess.run(
            self._java("kafka.tools.StorageTool", "random-uuid"),
            capture_output=True,
            text=True,
            check=False,
        )
        cluster_id = out.stdout.strip().splitlines()[-1] if out.returncode == 0 else ""
        if not cluster_id:
            raise BrokerError(f"could not create a cluster id: {out.stderr.strip()[-500:]}")
        fmt = subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(props),
                "--standalone",
                *self._scram_users(),
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            raise BrokerError(f"could not format the broker storage: {fmt.stderr.strip()[-800:]}")

    def _scram_users(self) -> list[str]:
        if not self.config.secure:
            return []
        from runstate.streams.acls import ROLES

        users = []
        for user in ("admin", *ROLES):
            users += ["--add-scram", f"{_SCRAM}=[name={user},password={self.password(user)}]"]
        return users

    # -- lifecycle ---------------------------------------------------------------------------
    def status(self) -> BrokerStatus | None:
        """The running broker of this data folder, or None."""
        try:
            pid = int(self._pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if not _is_our_broker(pid, self.config.data_dir):
            return None
        return BrokerStatus(pid, self.config.bootstrap, self.config.data_dir, self.log_file)

    def start(self, *, timeout_s: float = 90.0) -> BrokerStatus:
        """Start the broker unless it already runs; return once clients can connect.

        Raises:
            BrokerError: Java/Maven missing, a port taken, or the broker did not open its
                listener in time (the message points at the log file).
        """
        running = self.status()
        if running is not None:
            return running
        c = self.config
        c.data_dir.mkdir(parents=True, exist_ok=True)
        ensure_jars(c.jars_dir)
        for port in (c.port, c.controller_port):
            if _listening(port):
                raise BrokerError(
                    f"port {port} on 127.0.0.1 is already in use; stop what holds it or choose "
                    "other ports (--port / --controller-port, with a new --data-dir)"
                )
        if c.secure:
            self._ensure_credentials()
        props = self._write_properties()
        props.chmod(0o600)  # holds the admin password in secure mode
        self._format_once(props)
        (c.data_dir / "broker.json").write_text(
            json.dumps({"port": c.port, "controller_port": c.controller_port, "secure": c.secure})
        )
        out = (c.data_dir / "broker.out").open("ab")
        proc = subprocess.Popen(
            self._java(MAIN_CLASS, str(props), heap=True),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=c.data_dir,
        )
        out.close()
        self._pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(
                    f"the broker exited with code {proc.returncode} during start-up; "
                    f"see {self.log_file} and {c.data_dir / 'broker.out'}"
                )
            if _listening(c.port):
                return BrokerStatus(proc.pid, c.bootstrap, c.data_dir, self.log_file)
            time.sleep(_READY_POLL_S)
        self.stop()
        raise BrokerError(
            f"the broker did not open {c.bootstrap} within {timeout_s:.0f}s; see {self.log_file}"
        )

    def stop(self, *, timeout_s: float = 30.0) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after ``timeout_s``).

        Returns:
            True if a broker was running.
        """
        running = self.status()
        if running is None:
            self._pid_file.unlink(missing_ok=True)
            return False
        _signal(running.pid, signal.SIGTERM)
        if not _wait_gone(running.pid, timeout_s):
            _signal(running.pid, signal.SIGKILL)
            _wait_gone(running.pid, 10.0)
        self._pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL the broker (fault tests: no clean shutdown, no flushed state)."""
        running = self.status()
        if running is not None:
            _signal(running.pid, signal.SIGKILL)
            _wait_gone(running.pid, 10.0)

    def settings(self) -> dict[str, object]:
        return {k: str(v) for k, v in asdict(self.config).items()}


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    try:
        # reap it if it is our own child, so it does not linger as a zombie
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and ") Z" in stat.read_text())


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return not _alive(pid)


def _is_our_broker(pid: int, data_dir: Path) -> bool:
    if not _alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    props = str(data_dir / "server.properties").encode()
    return MAIN_CLASS.encode() in cmdline and props in cmdline
