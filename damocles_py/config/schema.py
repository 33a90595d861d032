"""The typed configuration of a worker (`sealing.toml`), after parsing and validation.

Key names follow damocles-worker where they mean the same thing. Durations are seconds (float),
sizes are bytes, paths are absolute (relative paths in the file are resolved against the file's
directory). `damocles_py.config.load` builds these from TOML and rejects anything unknown.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from damocles_py.proofs import SealProof, SectorSize


class Plan(enum.Enum):
    sealer = "sealer"
    snapup = "snapup"
    rebuild = "rebuild"


@dataclass(frozen=True)
class RpcServerConfig:
    """`[worker.rpc_server]`: damocles' `VenusWorker.*` JSON-RPC admin API (damocles binds 0.0.0.0;
    we default to loopback)."""

    host: str = "127.0.0.1"
    port: int = 17890

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class AdminServerConfig(RpcServerConfig):
    """`[worker.admin_server]` (ours): the gRPC admin API our CLI uses (`worker list|pause|resume`,
    `sector debug`)."""

    port: int = 17891


@dataclass(frozen=True)
class WorkerConfig:
    name: str
    rpc_server: RpcServerConfig = field(default_factory=RpcServerConfig)
    admin_server: AdminServerConfig = field(default_factory=AdminServerConfig)
    # Caller IPs whose VenusWorker.WorkerPause/WorkerResume need no admin token (a damocles-manager
    # Go binary sends none). Risk: anyone who can send from such an IP can pause, rewind or abort.
    venus_admin_trust: tuple[str, ...] = ()
    ping_interval: float = 30.0
    local_pieces_dirs: tuple[Path, ...] = ()
    # damocles' glob patterns; every match holding a sectorstore.json became an `attached` store
    scan_persist_stores: tuple[str, ...] = ()
    # Where the admin token and the worker's own state live.
    state_dir: Path = Path(".damocles-worker")
    # Each sector's log (in its thread location's logs/) is capped at this size (the older half is
    # dropped when it fills up), and removed this long after the sector is done.
    sector_log_max_bytes: int = 16 << 20
    sector_log_retention: float = 14 * 24 * 3600.0


@dataclass(frozen=True)
class EmbeddedManagerConfig:
    """The in-process sector manager and its simulated chain."""

    miner: int = 1000
    sector_size: SectorSize = SectorSize(2048)
    state_dir: Path = Path("manager")
    pieces_dir: Path | None = None
    block_time: float = 1.0
    pre_commit_delay_epochs: int = 3  # epochs between pre-commit landing and the seed
    ticket_expiry_epochs: int = 900  # a pre-commit must land within this many epochs of its ticket
    seed_expiry_epochs: int = 900  # a proof must be submitted within this many epochs of its seed
    worker_timeout: float = 60.0  # seconds without a ping or call before a worker is lost
    # Where the state lives: None, the SQLite file in state_dir; or "postgresql://..." (or "sqlite:PATH"),
    # checked when read (see damocles_py.manager.sql.parse_db)
    db: str | None = None

    @property
    def seal_proof(self) -> SealProof:
        return SealProof.for_size(self.sector_size)


def is_venus_addr(addr: str) -> bool:
    """damocles' forms of `rpc_client.addr` (a multiaddr or an http(s) URL) select its Venus JSON-RPC;
    a bare `host:port` is our manager's gRPC."""
    return addr.startswith("/") or "://" in addr


@dataclass(frozen=True)
class SectorManagerConfig:
    """`addr` unset: the embedded manager. A damocles form (`/ip4/../tcp/..`, `/dns4/..`,
    `http(s)://host:port`): a damocles-manager over Venus JSON-RPC. A bare `host:port`: our
    manager over gRPC; `rpc_client.addr = ["host:port", ...]` names several of ours on one
    database, `addr` the preferred one and `fallback_addrs` the others, tried in order when the
    one before is unavailable (docs/failover.md)."""

    addr: str | None = None
    fallback_addrs: tuple[str, ...] = ()
    embedded: EmbeddedManagerConfig = field(default_factory=EmbeddedManagerConfig)
    rpc_timeout: float = 30.0
    token_file: Path | None = None  # the standalone manager's farm token ([sector_manager.rpc_client] token_file)
    # damocles' `rpc_client.headers`: sent with every Venus call (damocles-worker parses and drops them)
    headers: dict[str, str] = field(default_factory=dict)
    # damocles' `piece_token`: `Authorization: Bearer` of piece downloads from the manager/market
    piece_token: str | None = None

    @property
    def is_embedded(self) -> bool:
        return self.addr is None

    @property
    def is_venus(self) -> bool:
        return self.addr is not None and is_venus_addr(self.addr)

    @property
    def addrs(self) -> tuple[str, ...]:
        """Every manager address, the preferred first (empty for the embedded manager)."""
        return () if self.addr is None else (self.addr, *self.fallback_addrs)


@dataclass(frozen=True)
class SealingConfig:
    allowed_miners: tuple[int, ...] | None = None
    allowed_sizes: tuple[SectorSize, ...] | None = None
    enable_deals: bool = False
    disable_cc: bool = False
    max_deals: int | None = None
    min_deal_space: int | None = None
    max_retries: int = 5
    seal_interval: float = 30.0
    recover_interval: float = 60.0
    rpc_polling_interval: float = 180.0
    ignore_proof_check: bool = False

    @property
    def allowed_proofs(self) -> tuple[SealProof, ...] | None:
        if self.allowed_sizes is None:
            return None
        return tuple(SealProof.for_size(s) for s in self.allowed_sizes)


@dataclass(frozen=True)
class SealingThreadConfig:
    index: int
    location: Path
    plan: Plan
    sealing: SealingConfig  # [sealing] merged with this thread's overrides (and its hot config's)
    # When `<location>/config.toml` (damocles' hot config) applies: this thread's config from
    # sealing.toml, which a later reload merges onto again (and returns when the file is gone).
    static: SealingThreadConfig | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class AttachedStoreConfig:
    name: str
    location: Path
    readonly: bool = False
    # Create the directory when missing. Only for local stores: a store on a mount that is missing
    # must stay an error, or sealed sectors would land on the root disk.
    create: bool = False


@dataclass(frozen=True)
class MetricsConfig:
    enable: bool = False
    http_listen: str = "127.0.0.1:9000"


# The stages that can run in external processors (`[[processors.<stage>]]`, damocles' names).
PROCESSOR_STAGES = ("add_pieces", "tree_d", "pc1", "pc2", "c2", "snap_encode", "snap_prove", "transfer")


@dataclass(frozen=True)
class ProcessorConfig:
    """One `[[processors.<stage>]]` entry: a long-lived child process running that stage's tasks."""
    stage: str
    bin: str | None = None  # None: this damocles-worker (`sys.executable -m damocles_py.cli.worker`)
    args: tuple[str, ...] | None = None  # None: ("processor", stage)
    envs: dict[str, str] = field(default_factory=dict)
    inherit_envs: bool = True
    concurrent: int | None = None  # max tasks in flight in this child (None: unbounded)
    locks: tuple[str, ...] = ()  # [processors.ext_locks] names held while a task runs
    cpuset: tuple[int, ...] | None = None  # `cgroup.cpuset`, parsed to CPU numbers (checked to exist)
    cpuset_text: str | None = None  # as written, e.g. "0-11"
    cgroup_group_name: str = "vc-worker"
    numa_preferred: int | None = None
    # How long the child may take to say it is ready. damocles waits 5 s for its Rust children; ours
    # load Python and the proofs library first, and many start at once with the daemon.
    stable_wait: float = 30.0
    auto_restart: bool = True


@dataclass(frozen=True)
class ProcessorsConfig:
    # stage name -> max concurrent runs of that stage across threads (unset: unlimited)
    limitation_concurrent: dict[str, int] = field(default_factory=dict)
    # stage name -> minimum seconds between two starts of that stage (damocles' `staggered`)
    limitation_staggered: dict[str, float] = field(default_factory=dict)
    # lock name -> how many holders at once (`locks = ["gpu"]` in processor entries)
    ext_locks: dict[str, int] = field(default_factory=dict)
    # stage name -> its external processors; a stage not listed runs in the daemon
    external: dict[str, tuple[ProcessorConfig, ...]] = field(default_factory=dict)
    # sector size -> a prebuilt CC tree-d file; unset sizes are built once into the cache
    static_tree_d: dict[SectorSize, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    path: Path
    worker: WorkerConfig
    sector_manager: SectorManagerConfig
    sealing: SealingConfig
    sealing_threads: tuple[SealingThreadConfig, ...]
    attached: tuple[AttachedStoreConfig, ...]
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    processors: ProcessorsConfig = field(default_factory=ProcessorsConfig)
