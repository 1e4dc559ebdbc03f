"""The fake's "VM process": what VBoxHeadless does for the tests, forward the NAT SSH port.

``python -I -S _vmprocess.py <fakes dir> <host port> <target host:port>``: binds
127.0.0.1:<port>, writes ``K`` (or ``E``) to stdout, then forwards each
connection to the target (the fake VBoxManage's ``forward``) until SIGTERM.
"""

import os
import socket
import sys

sys.path.insert(0, sys.argv[1])
import vboxmanage

try:
    listener = socket.create_server(("127.0.0.1", int(sys.argv[2])))
except OSError:
    os.write(1, b"E")
    sys.exit(1)
os.write(1, b"K")
devnull = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1):
    os.dup2(devnull, fd)
vboxmanage.forward(listener, sys.argv[3])
