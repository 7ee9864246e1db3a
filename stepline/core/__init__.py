"""The core: ids, statuses, errors, configuration and plain records. No I/O lives here."""
