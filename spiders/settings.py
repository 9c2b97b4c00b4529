"""Scrapy settings for harvest's spiders; every harvest default lives here, by prefix."""

BOT_NAME = "harvest"
SPIDER_MODULES = ["spiders.recipe_spider", "spiders.demo_news"]
NEWSPIDER_MODULE = "spiders"

ROBOTSTXT_OBEY = True
USER_AGENT = "harvest (+https://example.invalid/harvest)"
CONCURRENT_REQUESTS = 16
CONCURRENT_REQUESTS_PER_DOMAIN = 8
# Scrapy's, holding each site (each exit, through proxies) to that concurrency
DOWNLOADER = "spiders.downloader.Downloader"
# the items of one page go through the pipelines this many at a time; Scrapy starts that
# many tasks for every page, and the lake's pipeline never waits (100, Scrapy's default,
# cost a quarter of a crawl's CPU)
CONCURRENT_ITEMS = 8
DOWNLOAD_TIMEOUT = 30
REMOTE_CONTROL_ENABLED = False
TELNETCONSOLE_ENABLED = False
# what `harvest crawl` keeps in the crawl's log file, <reports>/crawls/<source>-<crawl_id>.log;
# stderr gets warnings and errors, a line each (harvest/crawl.py)
LOG_LEVEL = "INFO"
REQUEST_FINGERPRINTER_IMPLEMENTATION = "2.7"
FEED_EXPORT_ENCODING = "utf-8"

ITEM_PIPELINES = {"spiders.pipelines.LakePipeline": 800}
DOWNLOADER_MIDDLEWARES = {
    # right after the offsite check; a redirect is a new request, so it is checked too
    "spiders.middlewares.privateaddress.PrivateAddressMiddleware": 60,
    # skips pages an unfinished crawl already committed; off unless resuming
    "spiders.resume.ResumeMiddleware": 70,
    # harvest crawl --pages N; off unless asked
    "spiders.middlewares.pagelimit.PageLimitMiddleware": 75,
    # conditional requests for pages crawled before; sees a 304 right after the downloader
    # stats (850) count it, before retries, redirects or decompression
    "spiders.incremental.IncrementalMiddleware": 840,
    # responses travel from high to low: this sees them redirected and decompressed (590)
    "spiders.middlewares.pagecheck.PageCheckMiddleware": 580,
    "scrapy.downloadermiddlewares.httpcompression.HttpCompressionMiddleware": None,
    "spiders.middlewares.pagecheck.BoundedDecompressionMiddleware": 590,
    # the proxy pool and ban detection: see its settings below for why 560
    "spiders.middlewares.proxypool.ProxyPoolMiddleware": 560,
    # like the pool, ahead of RetryMiddleware (550), for the direct connection
    "spiders.middlewares.pacing.PacingMiddleware": 565,
    # suspected blocks (200 look-alikes): after the page checks (580) have dropped what cannot
    # be read, before pacing (565) and the pool (560), which takes the flag put on a suspect
    # answer through a proxy for a ban of that proxy
    "spiders.middlewares.suspect.SuspectMiddleware": 570,
}
EXTENSIONS = {"spiders.progress.CrawlProgress": 500, "spiders.watchdog.Watchdog": 510}
# nothing waits for ever (spiders/watchdog.py): a crawl with no response, download error
# or item for this long ends as stalled (exit 3); long enough for a site's Retry-After and
# the pace's pauses, far shorter than a hang. A stop not done within the grace is forced.
HARVEST_STALL_TIMEOUT = 600
HARVEST_SHUTDOWN_GRACE = 20

# the lake the pipeline writes to, and how many rows make one commit
HARVEST_LAKE = "lake"
HARVEST_BATCH_SIZE = 100
# refuse private, loopback and link-local addresses unless a recipe says allow_private
HARVEST_ALLOW_PRIVATE = False

# bounds every crawl gets unless its recipe sets `limits`
DEPTH_LIMIT = 0
CLOSESPIDER_PAGECOUNT = 0
DOWNLOAD_MAXSIZE = 32 * 1024 * 1024
DOWNLOAD_WARNSIZE = 8 * 1024 * 1024

# recrawls fetch only what changed and record new, changed and gone pages
HARVEST_INCREMENTAL = True
# set by `harvest crawl` when it resumes the source's unfinished crawl
HARVEST_RESUME = False
# set by `harvest crawl`; a plain `scrapy crawl` gets a fresh one
HARVEST_CRAWL_ID = ""
# a live display of the crawl: True, False, or "auto" (only on a terminal)
HARVEST_PROGRESS = False
HARVEST_PROGRESS_INTERVAL = 5.0

# the proxy pool and ban detection (spiders/middlewares/proxypool.py). At 560 it sees
# responses after redirects and decompression (600, 590) but before RetryMiddleware (550)
# retries a 429/503 through the same proxy, and before the spider's HttpErrorMiddleware
# drops a 403 unseen; its process_request runs before HttpProxyMiddleware (750) sends it.
# proxy URLs (a list or comma-separated) and a file of them, used when the recipe has none
HARVEST_PROXIES: list[str] = []
HARVEST_PROXY_FILE = ""
# connection failures in a row after which a proxy is dead for the rest of the crawl
HARVEST_PROXY_MAX_FAILURES = 3
# retries through other proxies after a ban or a failed connection, per request
HARVEST_BAN_MAX_RETRIES = 10
# on the direct connection, with no other exit, a banned page is waited for (paced as a 429
# without Retry-After) until the block has lasted this many seconds, then given up
HARVEST_BAN_MAX_WAIT = 300.0

# learn each exit's pace to each site from its answers (429/503, Retry-After always
# honoured, block pages, dropped connections); see spiders/pace.py. A throttle without a
# Retry-After pauses the exit this long, doubled while throttles come in a row, up to the max
HARVEST_PACING = True
HARVEST_PACING_PAUSE = 1.0
HARVEST_PACING_MAX_PAUSE = 60.0
# sends of one request while it is throttled, before it is given up
HARVEST_PACING_MAX_TRIES = 20
# a listing page (one followed for its links, not an item) that fails is tried again this
# many times, after pauses growing from HARVEST_LISTING_BACKOFF seconds (waited out by the
# pacing middleware), before the account names it a broken chain
HARVEST_LISTING_RETRIES = 6
HARVEST_LISTING_BACKOFF = 2.0

# suspected blocks (spiders/middlewares/suspect.py): a 200 page that lacks what the pages
# of its pattern had (links, required fields, size), learned once LEARN pages of it came
# back, SHARE of them with links or fields; far smaller than SIZE_RATIO of its pattern's
# median; or a challenge phrase (MARKERS, regexes) on a page that yields nothing. Its exit's
# pace takes it as a 429; it is sent again up to RETRIES times, on the direct connection
# after a pause from PAUSE seconds doubling each try, then kept as it came and counted as
# given up (a listing page with no links as a broken chain)
HARVEST_SUSPECT = True
HARVEST_SUSPECT_LEARN = 3
HARVEST_SUSPECT_SHARE = 0.8
HARVEST_SUSPECT_SIZE_RATIO = 0.25
HARVEST_SUSPECT_RETRIES = 3
HARVEST_SUSPECT_PAUSE = 1.0
# and is kept only once it has been doubted this many seconds, past its RETRIES: a block
# outlasts quick tries through every proxy at once
HARVEST_SUSPECT_PATIENCE = 30.0
HARVEST_SUSPECT_MARKERS = [
    r"(?i)checking (if the site connection is secure|your browser)",
    r"(?i)verify (that )?you are (a )?human",
    r"(?i)enable javascript and cookies",
    r"(?i)just a moment\.\.\.",
]

# a frontier in Redis shared by several crawl processes (spiders/frontier.py); set by
# `harvest crawl --workers N`, which also sets SCHEDULER to spiders.frontier.RedisFrontier
HARVEST_REDIS_URL = ""
HARVEST_REDIS_PREFIX = "harvest"
# this process's name among the workers (default host:pid)
HARVEST_REDIS_WORKER = ""
# seconds the end marker of a finished crawl stays, so a late worker does not crawl again
HARVEST_REDIS_DONE_TTL = 3600
# requests a worker takes from the shared queue beyond those it can send at once; more
# would wait behind its per-site concurrency while another worker sits idle
HARVEST_REDIS_PREFETCH = 1
