"""`harvest demo` and `harvest demo-site`: the whole flow on the demo news site."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from harvest.cli.common import config, emit, err


def demo_site(
    port: int = typer.Option(8765, help="port on 127.0.0.1 (0 picks a free one)"),
    articles: int = typer.Option(400, help="article pages served, planted ones included"),
    seed: int = typer.Option(7),
    corpus: Path | None = typer.Option(None, help="AG News style CSV to serve instead"),
    truth: Path | None = typer.Option(None, help="write the ground truth JSON here"),
    guard_limit: int = typer.Option(30, help="/guarded/: requests allowed per address..."),
    guard_window: float = typer.Option(10.0, help="... within this many seconds"),
    guard_ban: float = typer.Option(3600.0, help="ban seconds (0: answer 429 instead)"),
    guard_regime: str = typer.Option("window", help="sliding window, fixed window or bucket"),
    guard_ban_status: int = typer.Option(
        403, help="a ban's answer: 403 block page, 429 without Retry-After, 200 look-alike"
    ),
    guard_listing_limit: int | None = typer.Option(None, help="a limit of listing pages' own"),
    guard_per: str = typer.Option("address", help="limit per client address or session cookie"),
    latency_ms: str = typer.Option(
        "0", help="each answer waits LO-HI ms (e.g. 50-200), like a site across a network"
    ),
    pagination: str = typer.Option(
        "chain", help="listing pages link: chain (previous/next) or numbered (pages near too)"
    ),
    api_limit: int = typer.Option(20, help="/api/v1/: requests per second per address (0: none)"),
    api_fail_rate: float = typer.Option(0.02, help="/api/v1/: share of requests answered 500"),
) -> None:
    """Serve the deterministic demo news site until interrupted. Its API (/api/v1/) takes
    the token in $DEMO_API_TOKEN (default demo-token)."""
    import os

    from harvest.demosite import DemoApi, DemoSite, Guard, generate

    try:
        site = generate(articles, seed, corpus)
        lo, _, hi = latency_ms.partition("-")
        latency = (float(lo) / 1000, float(hi or lo) / 1000)
        guard = Guard(
            guard_limit,
            guard_window,
            guard_ban,
            regime=guard_regime,
            ban_status=guard_ban_status,
            listing_limit=guard_listing_limit,
            key=guard_per,
        )
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    if not 0 <= latency[0] <= latency[1]:
        raise typer.BadParameter(f"--latency-ms {latency_ms!r}: LO-HI with 0 <= LO <= HI")
    try:
        api = DemoApi(
            site,
            token=os.environ.get("DEMO_API_TOKEN") or "demo-token",
            guard=Guard(api_limit, 1.0, 0.0) if api_limit > 0 else None,
            fail_rate=api_fail_rate,
            slow_at=2 * site.per_page,  # the third page of 20
        )
        server = DemoSite(
            site, port=port, guard=guard, latency=latency, pagination=pagination, api=api
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if truth:
        truth.parent.mkdir(parents=True, exist_ok=True)
        truth.write_text(json.dumps(site.truth(server.url), indent=1))
    err.print(
        f"demo site on {server.url}: {len(site.articles)} articles, "
        f"{len(site.planted_invalid)} invalid, {len(site.planted_duplicates)} duplicates"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def demo(
    articles: int = typer.Option(400),
    seed: int = typer.Option(7),
    corpus: Path | None = typer.Option(None, help="serve this AG News style CSV instead"),
    workdir: Path = typer.Option(Path("demo"), help="the demo's own lake, reports and export"),
    epochs: int = typer.Option(20),
) -> None:
    """The whole flow on the demo site; prints one JSON summary as its last line."""
    from harvest.demo import run_demo

    summary = run_demo(config(), workdir, articles, seed, corpus, epochs)
    emit(summary)
