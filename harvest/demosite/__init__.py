"""A deterministic local news site with planted invalid and duplicate articles."""

from harvest.demosite.api import DemoApi
from harvest.demosite.generator import CLASSES, Article, Site, generate
from harvest.demosite.guard import Guard
from harvest.demosite.server import DemoSite

__all__ = ["CLASSES", "Article", "DemoApi", "DemoSite", "Guard", "Site", "generate"]
