"""The demo site's limit regimes, on the guard itself and through its HTTP server."""

from __future__ import annotations

import pytest
import requests

from harvest.demosite import DemoSite, Guard, generate


def statuses(
    guard: Guard, n: int, path: str = "/article/a", cookie: str | None = None
) -> list[int]:
    return [(guard.check("10.0.0.1", path, cookie) or (200, {}, ""))[0] for _ in range(n)]


@pytest.mark.parametrize("regime", ["window", "fixed", "bucket"])
def test_every_regime_throttles_past_its_limit_with_retry_after(regime: str) -> None:
    guard = Guard(4, 60.0, ban_seconds=0, regime=regime)
    got = [guard.check("10.0.0.1", "/article/a") for _ in range(6)]
    assert got[:4] == [None] * 4
    for verdict in got[4:]:
        assert verdict is not None and verdict[0] == 429
        assert 1 <= int(verdict[1]["Retry-After"]) <= 60
    assert guard.check("10.0.0.2", "/article/a") is None  # per client address


@pytest.mark.parametrize(("status", "marker"), [(429, "Too many"), (403, "captcha")])
def test_a_block_lasts_its_time_with_no_retry_after(status: int, marker: str) -> None:
    guard = Guard(3, 60.0, ban_seconds=3600, ban_status=status)
    assert statuses(guard, 3) == [200] * 3
    verdict = guard.check("10.0.0.1", "/article/a")
    assert verdict is not None and verdict[0] == status and marker in verdict[2]
    assert "Retry-After" not in verdict[1]
    guard.seen.clear()  # the window forgotten: the block still holds
    assert statuses(guard, 2) == [status, status]


def test_listing_pages_have_a_limit_of_their_own() -> None:
    guard = Guard(2, 60.0, ban_seconds=0, listing_limit=1)
    assert statuses(guard, 1, "/page/2") == [200]
    assert statuses(guard, 1, "/") == [429]
    assert statuses(guard, 3, "/article/x") == [200, 200, 429]


def test_a_cookie_guard_limits_each_session_and_sets_one_for_a_new_client() -> None:
    guard = Guard(2, 60.0, ban_seconds=0, key="cookie")
    first = guard.set_cookie(None)
    assert first is not None and guard.set_cookie(first.split(";")[0]) is None
    a, b = "harvest_session=a", "harvest_session=b"
    assert statuses(guard, 3, cookie=a) == [200, 200, 429]
    assert statuses(guard, 2, cookie=b) == [200, 200]  # the same address, another session


def test_a_cookie_session_works_through_the_server() -> None:
    guard = Guard(2, 60.0, ban_seconds=0, key="cookie")
    with DemoSite(generate(10, seed=1), guard=guard) as server, requests.Session() as s:
        codes = [s.get(f"{server.url}/guarded/", timeout=5).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert Guard.COOKIE in s.cookies
        fresh = requests.get(f"{server.url}/guarded/", timeout=5)  # a new session
        assert fresh.status_code == 200 and Guard.COOKIE in fresh.cookies


def test_a_bad_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="regime"):
        Guard(regime="leaky")


def test_the_least_time_under_a_listing_limit_is_the_slower_of_the_two_limits() -> None:
    items, listings, exits = 200, 60, 2
    plain = Guard(10, 1.0, ban_seconds=0)
    assert plain.minimum_seconds(items + listings, exits) == (260 - 20) / 20
    # listings at 2 a second per client are slower than items at 10
    slow = Guard(10, 1.0, ban_seconds=0, listing_limit=2)
    assert slow.minimum_seconds(items + listings, exits, listings) == (60 - 4) / 4
    loose = Guard(10, 1.0, ban_seconds=0, listing_limit=8)
    assert loose.minimum_seconds(items + listings, exits, listings) == (200 - 20) / 20
