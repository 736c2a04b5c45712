"""CPU feature levelling, as XAPI does it since feature levelling 2.0 (XenServer 7.0).

Feature sets are XAPI's dash-separated 32-bit hex words ("1fcbfbff-f7fa3223-..."), as in
`host.cpu_info` and `VM.last_boot_CPU_flags` (xen-api `ocaml/xapi/cpuid_helpers.ml`):

- a pool's `cpu_info` holds the intersection of its hosts' feature sets
  (`Create_misc.create_pool_cpuinfo`), and the sum of their CPU and socket counts;
- a VM that starts gets the pool's levelled set in `last_boot_CPU_flags`, not its host's
  (`reset_cpu_flags` / `next_boot_cpu_features`): it can then run on any host of its pool;
- a live VM may go to a host whose set contains the VM's (`assert_vm_is_compatible`), the
  shorter set zero-extended; otherwise VM_INCOMPATIBLE_WITH_THIS_HOST.

Hand-written labs may also give flag names ("sse sse2 avx"): those compare as sets.
"""

from __future__ import annotations

from collections.abc import Iterable

DIFFERENT_VENDOR = "VM last booted on a host which had a CPU from a different vendor."
MISSING_FEATURES = "VM last booted on a CPU with features this host's CPU does not have."

# The feature keys of a cpu_info map that levelling applies to.
FEATURE_KEYS = ("features_pv", "features_hvm", "features_pv_host", "features_hvm_host")


def _words(features: str) -> list[int] | None:
    try:
        return [int(w, 16) for w in features.strip().split("-") if w]
    except ValueError:
        return None  # flag names


def intersect(sets: Iterable[str]) -> str:
    """The features every set has (an empty set is the identity, as in `Cpuid_helpers`)."""
    result: list[int] = []
    names: set[str] | None = None
    for features in sets:
        words = _words(features)
        if words is None:
            flags = set(features.replace(",", " ").split())
            names = flags if names is None else names & flags
            continue
        if not words:
            continue
        if not result:
            result = words
            continue
        width = max(len(result), len(words))
        result = [
            (result[i] if i < len(result) else 0) & (words[i] if i < len(words) else 0)
            for i in range(width)
        ]
    if names is not None:
        return " ".join(sorted(names))
    return "-".join(f"{w:08x}" for w in result)


def is_subset(wanted: str, have: str) -> bool:
    """Whether every feature of `wanted` is in `have`."""
    wanted_words, have_words = _words(wanted), _words(have)
    if wanted_words is None or have_words is None:
        return set(wanted.replace(",", " ").split()) <= set(have.replace(",", " ").split())
    have_words += [0] * (len(wanted_words) - len(have_words))
    return all(w & ~h == 0 for w, h in zip(wanted_words, have_words, strict=False))


def pool_cpu_info(hosts: Iterable[dict[str, str]]) -> dict[str, str]:
    """`pool.cpu_info` from its hosts' `cpu_info`: vendor, summed counts, levelled features."""
    infos = list(hosts)
    out = {
        "cpu_count": str(sum(int(h.get("cpu_count", "0") or 0) for h in infos)),
        "socket_count": str(sum(int(h.get("socket_count", "0") or 0) for h in infos)),
        "vendor": infos[-1].get("vendor", "") if infos else "",
    }
    for key in FEATURE_KEYS:
        out[key] = intersect(h.get(key, "") for h in infos)
    return out


def vm_feature_key(domain_type: str) -> str:
    """Which set applies to a VM: PV guests use the PV set, every other the HVM one."""
    return "features_pv" if domain_type == "pv" else "features_hvm"


def boot_flags(cpu_info: dict[str, str], domain_type: str) -> dict[str, str]:
    """`last_boot_CPU_flags` of a VM that starts with this (pool) cpu_info."""
    return {"vendor": cpu_info.get("vendor", ""), "features": cpu_info[vm_feature_key(domain_type)]}


def incompatibility(
    host_cpu: dict[str, str], vm_flags: dict[str, str], domain_type: str = ""
) -> str | None:
    """Why a VM that last booted with `vm_flags` cannot run on a host with `host_cpu`."""
    vendor = vm_flags.get("vendor", "")
    if not vendor:
        return None  # never booted: nothing to compare against
    if host_cpu.get("vendor") and host_cpu["vendor"] != vendor:
        return DIFFERENT_VENDOR
    wanted = vm_flags.get("features", "")
    have = host_cpu.get(vm_feature_key(domain_type)) or host_cpu.get("features", "")
    if wanted and not is_subset(wanted, have):
        return MISSING_FEATURES
    return None
