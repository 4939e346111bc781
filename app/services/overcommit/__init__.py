"""CPU and memory overcommit per host: the names the rest of the app uses, from one package.

ratios (maths and the one way a ratio is written), policy (allowed ratios), view (the read
model), guidance (the rules in prose), enforce (refusing what goes over policy), ksm and samples
(the worker's readings).
"""

from app.services.overcommit.enforce import check_force, check_policy, check_start_policy
from app.services.overcommit.guidance import SWAP_UNKNOWN
from app.services.overcommit.ksm import KSM_QUIET, ksm_state
from app.services.overcommit.model import GuestLoad, Guidance, HostOvercommit, Ksm
from app.services.overcommit.policy import (
    DEFAULT_CPU,
    DEFAULT_MEMORY,
    MEMORY_PRESETS,
    get_policy,
    host_policy,
    set_host_policy,
    set_policy,
    validate_ratio,
)
from app.services.overcommit.ratios import NEAR, Ratio, make_ratio, ratio_state, ratio_text
from app.services.overcommit.samples import Sample, record_sample, record_stats, samples
from app.services.overcommit.view import (
    all_overcommit,
    fleet_totals,
    host_overcommit,
    pictures,
)

__all__ = [
    "DEFAULT_CPU",
    "DEFAULT_MEMORY",
    "KSM_QUIET",
    "MEMORY_PRESETS",
    "NEAR",
    "SWAP_UNKNOWN",
    "GuestLoad",
    "Guidance",
    "HostOvercommit",
    "Ksm",
    "Ratio",
    "Sample",
    "all_overcommit",
    "check_force",
    "check_policy",
    "check_start_policy",
    "fleet_totals",
    "get_policy",
    "host_overcommit",
    "host_policy",
    "ksm_state",
    "make_ratio",
    "pictures",
    "ratio_state",
    "ratio_text",
    "record_sample",
    "record_stats",
    "samples",
    "set_host_policy",
    "set_policy",
    "validate_ratio",
]
