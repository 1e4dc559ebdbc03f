"""pymachine: create and manage Docker hosts (a Docker Machine 0.16 compatible toolkit).

The repository keeps the design card's top-level folders (``machine/``, ``engine/``,
``provisioners/``, ``installer/``, ``packaging/``); an installed wheel holds them as
``pymachine.machine`` and so on (setuptools ``package-dir``), so nothing but
``pymachine`` lands at the top of site-packages.  Run from a checkout, this package
finds those folders beside itself: the one place that knows the two layouts.
"""

import os

__version__ = "0.1.0"

_here = os.path.dirname(os.path.abspath(__file__))
if not os.path.isdir(os.path.join(_here, "machine")):
    _checkout = os.path.dirname(_here)
    if os.path.isfile(os.path.join(_checkout, "machine", "__init__.py")):
        __path__.append(_checkout)
