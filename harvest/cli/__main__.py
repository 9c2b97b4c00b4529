"""``python -m harvest.cli`` (the service's runs, crawl workers, torchrun)."""

from harvest.cli import main

main()
