"""pymachine: create and manage Docker hosts (a Docker Machine 0.16 compatible toolkit).

The repository keeps the design card's top-level folders (``machine/``, ``engine/``,
``provisioners/``, ``installer/``, ``packaging/``); an installed wheel holds them as
``pymachine.machine`` and so on (setuptools ``package-dir``), so nothing but
``pymachine`` lands at the top of site-packages.  Run from a checkout, this package
finds those folders beside itself: the one place that knows the two layouts.
"""

import importlib.util  # noqa: F401 -- bound for every importer, see below
import os

# ``import importlib`` alone does not bind ``importlib.util``: CPython's own start-up or
# site (a .pth file) usually loads it, but a venv on Linux, an embedded or Windows start
# may not.  Code (ours, a caller's, a plugin's) that writes ``importlib.util.find_spec``
# after importing pymachine then fails with AttributeError.  Loading it here, the first
# module of every pymachine import, makes that hold everywhere (it is a frozen module:
# no file is read).

__version__ = "0.1.0"

_here = os.path.dirname(os.path.abspath(__file__))
if not os.path.isdir(os.path.join(_here, "machine")):
    _checkout = os.path.dirname(_here)
    if os.path.isfile(os.path.join(_checkout, "machine", "__init__.py")):
        __path__.append(_checkout)
