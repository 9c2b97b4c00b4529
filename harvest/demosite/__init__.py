"""A deterministic local news site with planted invalid and duplicate articles."""

from harvest.demosite.generator import CLASSES, Article, Site, generate
from harvest.demosite.server import DemoSite, Guard

__all__ = ["CLASSES", "Article", "DemoSite", "Guard", "Site", "generate"]
