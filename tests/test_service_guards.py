"""`harvest serve` for real on loopback, against what a hostile client sends: webhook bodies
too large or without the secret, Host headers naming other sites (DNS rebinding), and
invalid input that a 422 must not hand back."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path

import pytest

from harvest.service.app import MAX_WEBHOOK_BODY
from harvest.service.auth import allowed_hosts, host_name
from tests.service import Live

HOOK = "/webhooks/label-studio"
MIB = 1024 * 1024


def chunks(total: int, size: int = MIB, fill: bytes = b" ") -> Iterator[bytes]:
    """``total`` bytes in pieces: requests sends a generator chunked, with no length."""
    piece = fill * size
    while total > 0:
        yield piece[: min(size, total)]
        total -= size


def declared_only(live: Live, length: int, headers: dict[str, str]) -> int:
    """The status answered to a request that declares ``length`` bytes and sends none: only
    a service that decides from the headers answers before the socket's deadline."""
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
    try:
        conn.putrequest("POST", HOOK)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(length))
        for key, value in headers.items():
            conn.putheader(key, value)
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def memory_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def test_webhook_bodies_past_the_limit_are_413(live: Live) -> None:
    live.start()
    hook = {"Authorization": f"Bearer {live.secret}", "Content-Type": "application/json"}

    # chunked: no length to go by, so the bytes are counted as they arrive
    over = live.post(HOOK, auth=False, headers=hook, data=chunks(MAX_WEBHOOK_BODY + 1))
    assert over.status_code == 413, over.text
    assert str(MAX_WEBHOOK_BODY) in over.json()["detail"]
    # the limit itself is accepted: the body reaches the parser (blanks are not JSON)
    at = live.post(HOOK, auth=False, headers=hook, data=chunks(MAX_WEBHOOK_BODY))
    assert at.status_code == 400 and "not JSON" in at.json()["detail"], at.text

    # a Content-Length over the limit is refused before the body is read
    assert declared_only(live, 10**12, hook) == 413
    big = live.post(HOOK, auth=False, headers=hook, data=b" " * (MAX_WEBHOOK_BODY + 1))
    assert big.status_code == 413

    # the service still answers on the same terms
    small = live.post(HOOK, auth=False, headers=hook, json={"action": "ANNOTATION_CREATED"})
    assert small.status_code == 400 and "project" in small.json()["detail"]


def test_a_wrong_secret_is_refused_before_the_body_is_read(live: Live) -> None:
    live.start()
    assert live.proc is not None
    pid = live.proc.pid
    wrong = {"Authorization": "Bearer wrong", "Content-Type": "application/json"}
    assert declared_only(live, 10**12, wrong) == 401
    assert declared_only(live, 10**12, {}) == 401
    assert live.post(HOOK, auth=False, headers=wrong, data=b"{}").status_code == 401

    # the peak from here on: writing 5 to clear_refs sets VmHWM back to the current RSS
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        peak = "VmHWM"
    except OSError:
        peak = "VmRSS"
    before = memory_kib(pid, "VmRSS")
    size = 200 * MIB
    answer = live.post(HOOK, auth=False, headers=wrong, data=b"{" * size)
    assert answer.status_code == 401 and "secret" in answer.json()["detail"]
    answer = live.post(HOOK, auth=False, headers=wrong, data=chunks(size, fill=b"{"))
    assert answer.status_code == 401
    grown = memory_kib(pid, peak) - before
    assert grown * 1024 < size // 2, f"{peak} grew by {grown} KiB for a {size}-byte body"


def test_only_known_host_names_are_answered(live: Live) -> None:
    live.env["HARVEST_ALLOWED_HOSTS"] = "harvest.lan, Other.LAN:8600"
    live.start()
    port = live.port
    refused_hosts = [
        "evil.example",
        f"evil.example:{port}",
        f"127.0.0.1.evil.example:{port}",
        "localhost.evil.example",
        f"harvest.lan.evil.example:{port}",
        "0.0.0.0",
    ]
    for host in refused_hosts:
        for path in ("/api/summary", "/runs", "/openapi.json", "/"):
            answer = live.get(path, headers={"Host": host})
            assert answer.status_code == 400, (host, path, answer.text)
            assert "allowed_hosts" in answer.json()["detail"]
        refused = live.post("/crawls", json={"source": "news"}, headers={"Host": host})
        assert refused.status_code == 400
    allowed = [
        f"127.0.0.1:{port}",
        "127.0.0.1",
        f"localhost:{port}",
        "LOCALHOST",
        f"[::1]:{port}",
        "harvest.lan",
        f"harvest.lan:{port}",
        "other.lan",
    ]
    for host in allowed:
        answer = live.get("/api/summary", headers={"Host": host})
        assert answer.status_code == 200, (host, answer.text)
    assert live.runs() == []


@pytest.mark.parametrize(
    ("configured", "bind", "allowed", "refused"),
    [
        ("", "127.0.0.1", {"127.0.0.1", "localhost", "[::1]"}, {"0.0.0.0", "evil.example"}),
        ("", "0.0.0.0", {"0.0.0.0"}, {"10.0.0.5", "evil.example"}),
        ("", "::", {"[::]"}, {"::"}),
        (" a.lan ,B.lan:80,[fd00::1]", None, {"a.lan", "b.lan", "[fd00::1]"}, {"lan", "a"}),
        ("*", "127.0.0.1", {"*"}, set()),
    ],
)
def test_allowed_host_names(
    configured: str, bind: str | None, allowed: set[str], refused: set[str]
) -> None:
    hosts = allowed_hosts(configured, bind)
    assert allowed <= hosts and not refused & hosts
    assert {"127.0.0.1", "localhost", "[::1]"} <= hosts
    assert host_name("[::1]:8600") == "[::1]" and host_name("Localhost.:80") == "localhost"


def test_422_names_the_error_not_the_input(live: Live) -> None:
    live.start()
    marker = "MARKER-d41d8cd9"
    for answer in (
        live.post("/crawls", json={"source": f"../{marker}"}),
        live.post("/crawls", json={"source": "news", "extra": marker}),
        live.post(
            "/crawls",
            data=f'{{"source": "{marker}'.encode(),
            headers={"Content-Type": "application/json"},
        ),
        live.post("/exports", json={"dataset": "d", "format": marker, "shards": 0}),
        live.get("/runs", params={"status": marker, "limit": 0}),
    ):
        assert answer.status_code == 422, answer.text
        assert marker not in answer.text
        body = answer.json()
        assert body["detail"] and body["errors"]
        for error in body["errors"]:
            assert set(error) == {"loc", "msg", "type"}, error
            assert error["loc"][0] in ("body", "query", "path") and error["msg"] and error["type"]
    errors = live.post("/crawls", json={"source": f"../{marker}"}).json()["errors"]
    assert errors == [
        {"loc": ["body", "source"], "type": "string_pattern_mismatch", "msg": errors[0]["msg"]}
    ]
