"""Sources: files and directory trees turned into records, one reader per format."""

from ingest.sources.walk import FORMATS, Source, SourceOptions

__all__ = ["FORMATS", "Source", "SourceOptions"]
