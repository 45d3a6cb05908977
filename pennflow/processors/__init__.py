"""Processors from source: a repository and a tag (``sourceUrl@tag``), its app manifest and Dockerfile."""
