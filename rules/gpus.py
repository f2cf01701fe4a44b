"""RunPod Serverless GPU pools (spec/runpod-api.md §7) and which tiers can stand in for others."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# pool id -> VRAM in GB, cheapest first within a size
POOL_VRAM_GB: Mapping[str, int] = {
    "AMPERE_16": 16,
    "AMPERE_24": 24,
    "ADA_24": 24,
    "ADA_32_PRO": 32,
    "AMPERE_48": 48,
    "ADA_48_PRO": 48,
    "AMPERE_80": 80,
    "ADA_80_PRO": 80,
    "BLACKWELL_96": 96,
    "HOPPER_141": 141,
    "BLACKWELL_180": 180,
}

# RunPod's serverless flex list price per GPU per second, by pool: spec/runpod-api.md §7,
# from docs `snippets/serverless-gpu-pricing-table.mdx`; ADA_32_PRO is UNCONFIRMED there
# (qwen-report's $1.58/h). An estimate's fallback when the v2 catalog's `price.serverless`
# was not read; neither reflects negotiated discounts or active (always-on) pricing.
POOL_FLEX_USD_PER_S: Mapping[str, float] = {
    "AMPERE_16": 0.00016,
    "AMPERE_24": 0.00019,
    "ADA_24": 0.00031,
    "ADA_32_PRO": 0.000439,
    "AMPERE_48": 0.00034,
    "ADA_48_PRO": 0.00053,
    "AMPERE_80": 0.00076,
    "ADA_80_PRO": 0.00116,
    "BLACKWELL_96": 0.00111,
    "HOPPER_141": 0.00155,
    "BLACKWELL_180": 0.00240,
}


def compatible_tiers(current: Iterable[str]) -> list[str]:
    """Every pool with at least the VRAM of the smallest current one, up to 80 GB (or the
    largest current one), current pools first: the wider `gpuIds` list to suggest.

    >>> compatible_tiers(["AMPERE_48"])
    ['AMPERE_48', 'ADA_48_PRO', 'AMPERE_80', 'ADA_80_PRO']
    """
    tiers = [t for t in current if t]
    known = [POOL_VRAM_GB[t] for t in tiers if t in POOL_VRAM_GB]
    if not known:
        return tiers
    low, high = min(known), max(80, max(known))
    wider = [p for p, gb in POOL_VRAM_GB.items() if low <= gb <= high and p not in tiers]
    return tiers + wider
