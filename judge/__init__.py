"""persona-judge domain: items, templates, parsers, providers, aggregation (no Flask, no Celery)."""

__version__ = "0.1.0"
