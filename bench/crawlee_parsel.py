"""crawlee-python's ParselCrawler, with its defaults, on the demo site's plain section.

Runs in ``bench/.venv-crawlee`` (crawlee's pins are its own), by path from an empty folder,
where crawlee keeps its default file storage. ``python bench/crawlee_parsel.py URL``
prints one JSON line: pages (requests finished) and items. ``--path /guarded/`` starts
from another section; ``--proxies URL ...`` gives crawlee
``ProxyConfiguration(proxy_urls=[...])``, all else left at its defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from crawlee.crawlers import ParselCrawler, ParselCrawlingContext
from crawlee.proxy_configuration import ProxyConfiguration


async def crawl(url: str, proxies: list[str] | None = None) -> dict[str, object]:
    crawler = ParselCrawler(
        proxy_configuration=ProxyConfiguration(proxy_urls=proxies) if proxies else None
    )
    items = 0

    @crawler.router.default_handler
    async def listing(context: ParselCrawlingContext) -> None:
        await context.enqueue_links(selector="nav.pagination a")
        await context.enqueue_links(selector="ul.articles a", label="article")

    @crawler.router.handler("article")
    async def article(context: ParselCrawlingContext) -> None:
        nonlocal items
        page = context.selector
        await context.push_data(
            {
                "url": context.request.url,
                "title": page.css("h1.title::text").get(),
                "body": " ".join(page.css("div.body p::text").getall()),
                "author": page.css("span.author::text").get(),
                "published": page.css("time::attr(datetime)").get(),
                "tags": page.css("ul.tags li::text").getall(),
            }
        )
        items += 1

    stats = await crawler.run([url])
    return {"pages": stats.requests_finished, "items": items, "failed": stats.requests_failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--path", default="/", help="where to start, e.g. /guarded/")
    parser.add_argument("--proxies", nargs="+", metavar="URL", default=[])
    args = parser.parse_args()
    url = args.url.rstrip("/") + "/" + args.path.lstrip("/")
    print(json.dumps(asyncio.run(crawl(url, args.proxies))))


if __name__ == "__main__":
    main()
