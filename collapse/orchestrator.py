"""The former name of :mod:`collapse.loop` (the generation loop), kept so old imports work."""

from collapse.loop import *  # noqa: F401,F403  (every name in collapse.loop.__all__)
