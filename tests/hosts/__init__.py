"""Real, namespaced Debian 12 test hosts for pymachine's integration tests.

Each host is an overlay of one cached debootstrap root, runs sshd in its own
network/mount/UTS/PID namespaces and can only reach the host-side end of its
veth pair, where the test's HTTP proxy listens.  See ``fixtures.py`` for the
pytest entry points.
"""
