"""fedibridge: publish a blog to the fediverse and bring replies back as comments."""

__version__ = "0.1.0"
