"""Sans-I/O implementation of RFC 6455 and RFC 7692 (bytes in, events out)."""
