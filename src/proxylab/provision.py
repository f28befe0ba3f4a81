"""End users and virtual keys made through the proxy's management API before a matrix runs.

The `created` user mode sends `user` ids that exist in the proxy's database, and the
`per_user` key mode gives every simulated user its own virtual key. Both only exist where
the proxy has a database: without one the management routes fail, and the matrix refuses
those modes before anything starts (matrix._refuse_modes_without_database).

LiteLLM has no bulk-create route for either, so the requests go out concurrently; a few
hundred take seconds. What was made is written next to the results (ids and keys one per
line, the files the locustfile reads) and recorded in summary.json without the keys.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from proxylab.errors import LabError
from proxylab.settings import LabSettings

logger = logging.getLogger(__name__)

CONCURRENCY = 16
END_USER_PREFIX = "proxylab-end-user-"
KEY_ALIAS_PREFIX = "proxylab-key-"


@dataclass(frozen=True)
class Provisioned:
    """What a run made in the proxy's database, and where the locustfile finds it."""

    end_users: tuple[str, ...] = ()
    users_file: Path | None = None
    keys_file: Path | None = None
    keys: int = 0
    seconds: float = 0.0

    def record(self) -> dict:
        return {"end_users": len(self.end_users), "keys": self.keys,
                "seconds": round(self.seconds, 2)}


def management_client(settings: LabSettings) -> httpx.Client:
    return httpx.Client(base_url=settings.url(settings.proxy_port), timeout=60,
                        headers={"Authorization": f"Bearer {settings.master_key}"},
                        limits=httpx.Limits(max_connections=CONCURRENCY))


def provision(client: httpx.Client, out_dir: Path, *, end_users: int = 0, keys: int = 0,
              end_user_max_budget: float | None = None, run_id: str = "") -> Provisioned:
    """Create ``end_users`` end users and ``keys`` virtual keys; write their files to ``out_dir``."""
    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    users_file = keys_file = None
    user_ids: list[str] = []
    if end_users:
        user_ids = [f"{END_USER_PREFIX}{index}" for index in range(1, end_users + 1)]
        _each(lambda user_id: _create_end_user(client, user_id, end_user_max_budget), user_ids)
        users_file = out_dir / "end_users.txt"
        users_file.write_text("".join(f"{user_id}\n" for user_id in user_ids))
    made_keys: list[str] = []
    reused = _read_lines(out_dir / "keys.txt")
    if keys and len(reused) >= keys:
        # A resumed run: its keys were made before the interruption and still exist.
        made_keys, keys_file, keys = reused[:keys], out_dir / "keys.txt", 0
    if keys:
        aliases = [f"{KEY_ALIAS_PREFIX}{run_id}-{index}" for index in range(1, keys + 1)]
        made_keys = _each(lambda alias: _generate_key(client, alias, run_id), aliases)
        keys_file = out_dir / "keys.txt"
        # Keys are credentials of this lab's proxy only, but still not for other accounts.
        descriptor = os.open(keys_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.writelines(f"{key}\n" for key in made_keys)
    provisioned = Provisioned(end_users=tuple(user_ids), users_file=users_file, keys_file=keys_file,
                              keys=len(made_keys), seconds=time.monotonic() - started)
    logger.info("made %d end users and %d keys in %.1f s", len(user_ids), len(made_keys),
                provisioned.seconds)
    return provisioned


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _each(make, names: list[str]) -> list:
    with ThreadPoolExecutor(max_workers=min(CONCURRENCY, len(names))) as pool:
        return list(pool.map(make, names))


def _create_end_user(client: httpx.Client, user_id: str, max_budget: float | None) -> str:
    body: dict = {"user_id": user_id}
    if max_budget is not None:
        body["max_budget"] = max_budget
    response = _post(client, "/customer/new", body)
    if response.status_code == 400 and "already exists" in response.text.lower():
        return user_id  # made by an earlier run against the same database; kept by the reset
    _raise_for(response, f"creating end user {user_id}")
    return user_id


def _generate_key(client: httpx.Client, alias: str, run_id: str) -> str:
    response = _post(client, "/key/generate", {"key_alias": alias, "metadata": {"proxylab_run": run_id}})
    _raise_for(response, f"generating key {alias}")
    key = response.json().get("key")
    if not key:
        raise LabError(f"generating key {alias}: the proxy answered without a key")
    return key


def _post(client: httpx.Client, path: str, body: dict) -> httpx.Response:
    try:
        return client.post(path, json=body)
    except httpx.HTTPError as error:
        raise LabError(f"POST {path} to the proxy failed: {error}") from None


def _raise_for(response: httpx.Response, what: str) -> None:
    if response.is_success:
        return
    text = " ".join(response.text.split())[:200]
    raise LabError(f"{what}: the proxy answered {response.status_code}: {text}")
