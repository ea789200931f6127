"""The reference registry: papers' reported numbers as data, and the judge that holds result rows to them.

Modules (one job each):
- ``schema``: the reference-file schema, loading and validation, ``lookup``;
- ``conventions``: papers' counting conventions (thop / ptflops / own) and their rounding;
- ``rows``: result rows as the judge reads them;
- ``experiments``: experiment files, their composed config hashes, methods' implementation status;
- ``judging``: which rows are judged, bands (the paper's ± or the entry's floor), metric statuses;
- ``claims`` / ``stats``: comparative claims, judged from the confidence interval of the paired difference.

Tests, the report and user scripts import everything from here.
"""
from engine.references.schema import *  # noqa: F401,F403
from engine.references.schema import _read_yaml  # noqa: F401
from engine.references.conventions import *  # noqa: F401,F403
from engine.references.rows import *  # noqa: F401,F403
from engine.references.experiments import *  # noqa: F401,F403
from engine.references.judging import *  # noqa: F401,F403
from engine.references.claims import *  # noqa: F401,F403
