"""The ``pymachine`` command line: parse, call one Host operation, print."""
