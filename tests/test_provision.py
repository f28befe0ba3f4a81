"""Making end users and keys through the management API, against a recorded stand-in.

The real routes need a proxy with a database, which these machines cannot run (no Prisma
engines); here the client is checked for what it sends, what it writes and how it fails.
"""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path

import httpx
import pytest

from proxylab import provision
from proxylab.errors import LabError


def _client(handler) -> httpx.Client:
    return httpx.Client(base_url="http://127.0.0.1:14000", transport=httpx.MockTransport(handler))


def test_end_users_and_keys_are_made_and_written_for_the_locustfile(tmp_path: Path) -> None:
    seen: list[tuple[str, dict]] = []
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        with lock:
            seen.append((request.url.path, body))
        if request.url.path == "/key/generate":
            return httpx.Response(200, json={"key": "sk-" + body["key_alias"]})
        return httpx.Response(200, json={"user_id": body["user_id"]})

    with _client(handler) as client:
        made = provision.provision(client, tmp_path, end_users=3, keys=2, end_user_max_budget=0.5,
                                   run_id="r1")

    assert made.end_users == ("proxylab-end-user-1", "proxylab-end-user-2", "proxylab-end-user-3")
    assert made.users_file.read_text().split() == list(made.end_users)
    assert made.keys_file.read_text().split() == ["sk-proxylab-key-r1-1", "sk-proxylab-key-r1-2"]
    assert stat.S_IMODE(made.keys_file.stat().st_mode) == 0o600
    customers = sorted(body["user_id"] for path, body in seen if path == "/customer/new")
    assert customers == list(made.end_users)
    assert all(body["max_budget"] == 0.5 for path, body in seen if path == "/customer/new")
    assert made.record()["keys"] == 2


def test_a_resumed_run_reuses_its_keys_and_existing_end_users_are_accepted(tmp_path: Path) -> None:
    (tmp_path / "keys.txt").write_text("sk-old-1\nsk-old-2\n")

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/customer/new", "no key may be generated again"
        return httpx.Response(400, json={"error": "Customer already exists in DB"})

    with _client(handler) as client:
        made = provision.provision(client, tmp_path, end_users=1, keys=2, run_id="r1")
    assert made.keys_file.read_text().split() == ["sk-old-1", "sk-old-2"]
    assert made.end_users == ("proxylab-end-user-1",)


def test_a_refusal_is_one_clear_error(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text="No connected db.\n")

    with _client(handler) as client, pytest.raises(LabError) as caught:
        provision.provision(client, tmp_path, keys=1, run_id="r1")
    assert str(caught.value) == ("generating key proxylab-key-r1-1: the proxy answered 500: "
                                 "No connected db.")
