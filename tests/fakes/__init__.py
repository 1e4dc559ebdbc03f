"""Local, stateful fakes of cloud APIs that have no emulator (see tests/fakes/*.py)."""
