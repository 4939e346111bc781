"""Settings, read from VIRTDECK_* environment variables and an optional .env file."""

from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything virtdeck can be told from outside."""

    model_config = SettingsConfigDict(env_prefix="VIRTDECK_", env_file=".env", extra="ignore")

    database_url: str = "sqlite:///./data/virtdeck.db"
    # Registered as the first host when none exists yet; empty turns this off.
    default_host_uri: str = "qemu:///system"
    default_host_name: str = "local"
    # Test-driver hosts (test:///path/node.xml) may name node files under this directory only
    # (symlinks and '..' resolved); empty allows test:///default alone.
    test_driver_dir: str = ""
    # Proxies whose X-Forwarded-Proto/-For are believed (so cookies get Secure behind TLS).
    forwarded_allow_ips: str = "127.0.0.1"
    # Request bodies (JSON, forms) larger than this many bytes get 413 before they are read.
    max_body_bytes: int = Field(1024 * 1024, ge=1)
    # Image uploads into a storage pool (streamed, never held in memory) up to this many bytes.
    upload_max_bytes: int = Field(64 * 1024**3, ge=1)
    # Requests without a login (refused or failed) recorded in the audit log, at most this many
    # a minute; the rest are counted in the server's log only.
    audit_anonymous_per_minute: int = Field(60, ge=0)
    sync_enabled: bool = True
    # Every sync_interval seconds a host's worker lists its guests' states in a few calls and
    # reads the XML of those that are new or changed (libvirt events re-read the others at
    # once); every reconcile_interval seconds, and on each (re)connect, it reads them all, to
    # catch a change whose event was missed. Events carry the changes within a second, so the
    # pass is a safety net and the refresh of the memory figures: every 10 s, as Proxmox's status
    # daemon, it takes 50 hosts of 500 guests 7 % of a core (at 5 s, 14-20 %).
    sync_interval: float = 10.0
    reconcile_interval: float = Field(300.0, gt=0)
    # At most every usage_interval seconds (at a pass), one bulk call per host reads what its
    # running guests use (app.services.usage): the figures of the lists, a chart's sample.
    usage_interval: float = Field(60.0, gt=0)
    # Reconnect backoff for an unreachable host: doubles from min to max.
    reconnect_min: float = 1.0
    reconnect_max: float = 15.0
    # How long a request waits for one libvirt call (an action, a listing) before giving up.
    call_timeout: float = 30.0
    # A connect or sync still waiting for the host after this many seconds marks it unreachable.
    stall_timeout: float = 15.0
    # libvirt keepalive: a host silent for interval * (count + 1) seconds is dropped.
    keepalive_interval: int = 3
    keepalive_count: int = 3
    # Several instances on one PostgreSQL: a host is synced by the instance holding its lease,
    # renewed every lease_renew seconds and taken over by another once lease_ttl has passed.
    lease_ttl: float = 15.0
    lease_renew: float = 5.0
    # Browser sessions end after this long without a user action, and this long after login.
    session_idle_minutes: float = 30.0
    session_absolute_hours: float = 12.0
    # The one-time code /setup asks for while no user exists. Empty: `virtdeck serve` makes a
    # random one at startup and prints it; set, it is this (at least 12 characters).
    setup_code: str = ""
    # Forms and cookie requests whose Origin names another site are refused; these origins
    # (comma-separated, e.g. "https://virtdeck.example") are accepted too, for a reverse proxy
    # that changes the Host header.
    trusted_origins: str = ""
    # Failed logins, counted per (user, address) and per address: past `after` failures within
    # the window, each attempt must wait base * 2^(failures - after) seconds (at most max) after
    # the last one.
    login_throttle_after: int = 5
    login_throttle_address_after: int = 20
    login_throttle_base: float = 1.0
    login_throttle_max: float = 300.0
    login_throttle_window_minutes: float = 15.0
    # Backups: <backup_dir>/<host>/<guest uuid>/<UTC time>/; the newest backup_keep
    # succeeded backups of each guest are kept; backup_bandwidth_mib caps how fast a backup or
    # restore moves data through the libvirt connection (MiB/s, 0 for no cap).
    backup_dir: str = "./data/backups"
    backup_keep: int = Field(7, ge=1)
    backup_bandwidth_mib: float = Field(0.0, ge=0)
    # A running guest's backups form chains: a full one, then incremental ones (only the blocks
    # changed since the previous backup); every backup_full_every-th backup is full again
    # (1: every backup is full).
    backup_full_every: int = Field(7, ge=1)
    # How often (seconds) each worker looks for backup schedules whose time has come.
    schedule_tick: float = Field(15.0, gt=0)
    # Every succeeded backup is verified again (its checksums recomputed) once its last check is
    # this many days old; 0 turns the scheduled verification off.
    backup_verify_days: float = Field(7.0, ge=0)
    # The digest of new backups' files: sha256, blake3, or auto (whichever hashes faster here,
    # timed once: blake3 unless the CPU hashes sha256 faster). A backup's manifest names its
    # algorithm, and verify and restore follow it.
    backup_hash: Literal["auto", "sha256", "blake3"] = "auto"
    # When a backup or a verification fails, a JSON POST goes to this http(s) URL (empty: none).
    backup_webhook_url: str = ""

    @field_validator("setup_code")
    @classmethod
    def _long_enough(cls, code: str) -> str:
        if code and len(code) < 12:
            raise ValueError("setup_code: at least 12 characters, or empty for a random one")
        return code

    @field_validator("backup_webhook_url")
    @classmethod
    def _web_url(cls, url: str) -> str:
        parsed = urlsplit(url)
        if url and (parsed.scheme not in ("http", "https") or not parsed.hostname):
            raise ValueError("backup_webhook_url: an http:// or https:// URL, or empty for none")
        return url

    @property
    def trusted_origin_set(self) -> frozenset[str]:
        """The trusted origins, each as scheme://host[:port] in lower case."""
        return frozenset(
            o.strip().rstrip("/").lower() for o in self.trusted_origins.split(",") if o.strip()
        )


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings."""
    return Settings()
