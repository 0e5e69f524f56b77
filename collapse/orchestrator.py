"""The former name of :mod:`collapse.loop` (the generation loop), kept so old imports work."""

from collapse.loop import *  # noqa: F401,F403
from collapse.loop import __all__  # noqa: F401
