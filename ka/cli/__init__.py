"""The command line: entry points, settings resolved once, progress and printed reports."""
