"""Lab settings: every port, path and version in one validated place.

Each field is one setting. Its environment variable is the field name in upper case with
the `PROXYLAB_` prefix (`proxy_port` -> `PROXYLAB_PROXY_PORT`). Precedence, highest first:
a CLI flag (where the CLI has one), the environment, a `.env` file in the working
directory, the default below. Ports sit below 32768 so they never collide with the
kernel's ephemeral range (FIELD-NOTES, toxiproxy).
"""

from __future__ import annotations

from pathlib import Path

import ipaddress

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]

# The LiteLLM release the lab pins; `proxy/requirements-<version>.lock` holds its full lock.
DEFAULT_PROXY_VERSION = "1.108.7"



PORT_FIELDS = ("postgres_port", "redis_port", "mock_llm_port", "toxiproxy_api_port", "llm_hop_port",
               "postgres_hop_port", "redis_hop_port", "proxy_port", "prometheus_port")


class LabSettings(BaseSettings):
    """Where the lab keeps its state and which loopback ports its services use."""

    model_config = SettingsConfigDict(env_prefix="PROXYLAB_", env_file=".env", extra="ignore")

    home: Path = Field(REPO_ROOT / ".proxylab", description="state, virtualenvs, binaries")
    results_dir: Path = Field(REPO_ROOT / "results", description="one folder per run")

    host: str = "127.0.0.1"
    postgres_port: int = Field(15432, ge=1024, le=32767)
    redis_port: int = Field(16379, ge=1024, le=32767)
    mock_llm_port: int = Field(18080, ge=1024, le=32767)
    toxiproxy_api_port: int = Field(18474, ge=1024, le=32767)
    # toxiproxy listeners, one per hop the proxy uses; each forwards to the real service.
    llm_hop_port: int = Field(19080, ge=1024, le=32767)
    postgres_hop_port: int = Field(19432, ge=1024, le=32767)
    redis_hop_port: int = Field(19379, ge=1024, le=32767)
    proxy_port: int = Field(14000, ge=1024, le=32767)
    prometheus_port: int = Field(19090, ge=1024, le=32767)

    # Added to every port above, so two labs (or a test run beside a manual one) can coexist.
    port_offset: int = Field(0, ge=0, le=10000)

    proxy_version: str = DEFAULT_PROXY_VERSION
    master_key: str = "sk-proxylab-master"
    model_name: str = "mock-gpt"
    postgres_user: str = "proxylab"
    postgres_password: str = "proxylab"
    postgres_db: str = "litellm"
    # auto: give the proxy a database when Prisma's engines can be obtained, else run without.
    proxy_db: str = Field("auto", pattern="^(auto|on|off)$")
    toxiproxy_version: str = "v2.12.0"
    scrape_interval_s: int = Field(5, ge=1, le=60)
    service_start_timeout_s: float = Field(120.0, gt=0)

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, host: str) -> str:
        # Load may only go to this machine: refuse anything outside 127.0.0.0/8.
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"{host} is not a loopback address; the lab only uses 127.0.0.0/8")
        return host

    @model_validator(mode="after")
    def _apply_port_offset(self) -> "LabSettings":
        if self.port_offset:
            for name in PORT_FIELDS:
                port = getattr(self, name) + self.port_offset
                if port > 32767:
                    raise ValueError(f"port_offset {self.port_offset} puts {name} at {port}, over 32767")
                # object.__setattr__ skips validate_assignment so the offset applies once.
                object.__setattr__(self, name, port)
            object.__setattr__(self, "port_offset", 0)
        return self

    @property
    def state_dir(self) -> Path:
        return self.home / "state"

    @property
    def bin_dir(self) -> Path:
        return self.home / "bin"

    @property
    def venvs_dir(self) -> Path:
        return self.home / "venvs"

    def url(self, port: int, path: str = "") -> str:
        return f"http://{self.host}:{port}{path}"
