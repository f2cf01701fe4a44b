"""A built-in GPU catalog for GraphQL `gpuTypes`; scenarios override entries by id."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from monitor.simulator.scenario import deep_merge

# Serverless pools and their GPU types (spec/runpod-api.md section 7).
SERVERLESS_POOLS: dict[str, tuple[str, ...]] = {
    "AMPERE_16": ("NVIDIA RTX A4000", "NVIDIA RTX A4500", "NVIDIA RTX 4000 Ada Generation",
                  "NVIDIA RTX 2000 Ada Generation"),
    "AMPERE_24": ("NVIDIA RTX A5000", "NVIDIA L4", "NVIDIA GeForce RTX 3090"),
    "ADA_24": ("NVIDIA GeForce RTX 4090",),
    "ADA_32_PRO": ("NVIDIA GeForce RTX 5090",),
    "AMPERE_48": ("NVIDIA A40", "NVIDIA RTX A6000"),
    "ADA_48_PRO": ("NVIDIA L40", "NVIDIA L40S", "NVIDIA RTX 6000 Ada Generation"),
    "AMPERE_80": ("NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-80GB"),
    "ADA_80_PRO": ("NVIDIA H100 PCIe", "NVIDIA H100 80GB HBM3", "NVIDIA H100 NVL"),
    "BLACKWELL_96": ("NVIDIA RTX PRO 6000 Blackwell Server Edition",),
    "HOPPER_141": ("NVIDIA H200",),
    "BLACKWELL_180": ("NVIDIA B200",),
}

# (id, display name, memory GB, secure $/h, community $/h); prices are plausible, not quotes.
_GPUS: tuple[tuple[str, str, int, float, float | None], ...] = (
    ("NVIDIA RTX A4000", "RTX A4000", 16, 0.25, 0.17),
    ("NVIDIA RTX A4500", "RTX A4500", 20, 0.27, 0.19),
    ("NVIDIA RTX 4000 Ada Generation", "RTX 4000 Ada", 20, 0.26, 0.20),
    ("NVIDIA RTX 2000 Ada Generation", "RTX 2000 Ada", 16, 0.24, None),
    ("NVIDIA RTX A5000", "RTX A5000", 24, 0.27, 0.16),
    ("NVIDIA L4", "L4", 24, 0.43, None),
    ("NVIDIA GeForce RTX 3090", "RTX 3090", 24, 0.46, 0.22),
    ("NVIDIA GeForce RTX 4090", "RTX 4090", 24, 0.69, 0.34),
    ("NVIDIA GeForce RTX 5090", "RTX 5090", 32, 0.94, 0.69),
    ("NVIDIA A40", "A40", 48, 0.40, None),
    ("NVIDIA RTX A6000", "RTX A6000", 48, 0.49, 0.33),
    ("NVIDIA L40", "L40", 48, 0.99, None),
    ("NVIDIA L40S", "L40S", 48, 0.86, 0.79),
    ("NVIDIA RTX 6000 Ada Generation", "RTX 6000 Ada", 48, 0.77, 0.74),
    ("NVIDIA A100 80GB PCIe", "A100 PCIe", 80, 1.64, 1.19),
    ("NVIDIA A100-SXM4-80GB", "A100 SXM", 80, 1.74, 1.39),
    ("NVIDIA H100 PCIe", "H100 PCIe", 80, 2.39, 1.99),
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 80, 2.69, 2.69),
    ("NVIDIA H100 NVL", "H100 NVL", 94, 2.79, 2.59),
    ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "RTX PRO 6000", 96, 1.84, None),
    ("NVIDIA H200", "H200 SXM", 141, 3.59, None),
    ("NVIDIA B200", "B200", 180, 5.99, None),
)

DATA_CENTERS: tuple[dict[str, str], ...] = (
    {"id": "US-TX-3", "name": "US-TX-3", "location": "United States"},
    {"id": "US-KS-2", "name": "US-KS-2", "location": "United States"},
    {"id": "EU-RO-1", "name": "EU-RO-1", "location": "Romania"},
    {"id": "CA-MTL-1", "name": "CA-MTL-1", "location": "Canada"},
)


def _entry(gpu_id: str, name: str, memory: int, secure: float, community: float | None) -> dict[
    str, Any
]:
    return {
        "id": gpu_id,
        "displayName": name,
        "manufacturer": "Nvidia",
        "memoryInGb": memory,
        "cudaCores": 0,
        "secureCloud": True,
        "communityCloud": community is not None,
        "securePrice": secure,
        "communityPrice": community,
        "secureSpotPrice": round(secure * 0.6, 2),
        "communitySpotPrice": round(community * 0.6, 2) if community is not None else None,
        "oneWeekPrice": secure,
        "oneMonthPrice": round(secure * 0.95, 2),
        "threeMonthPrice": round(secure * 0.9, 2),
        "sixMonthPrice": round(secure * 0.85, 2),
        "maxGpuCount": 8,
        "maxGpuCountSecureCloud": 8,
        "maxGpuCountCommunityCloud": 8 if community is not None else 0,
        "minPodGpuCount": 1,
        "lowestPrice": {
            "gpuName": name,
            "gpuTypeId": gpu_id,
            "minimumBidPrice": round(min(secure, community or secure) * 0.6, 2),
            "uninterruptablePrice": min(secure, community or secure),
            "stockStatus": "High",
            "availableGpuCounts": [1, 2, 4, 8],
            "gpuTypeCudaVersions": [{"cudaVersion": "12.8", "availability": "High"}],
        },
    }


# RunPod also lists an "unknown" type that clients are expected to skip.
_CATALOG: tuple[dict[str, Any], ...] = (
    *(_entry(*row) for row in _GPUS),
    {"id": "unknown", "displayName": "unknown", "memoryInGb": 0},
)


def gpu_catalog(overrides: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The catalog with the scenario's entries merged in by id (new ids are appended)."""
    out = [deep_merge(g, overrides[g["id"]]) if g["id"] in overrides else copy.deepcopy(g)
           for g in _CATALOG]
    known = {g["id"] for g in _CATALOG}
    out.extend(copy.deepcopy(dict(g)) for gid, g in overrides.items() if gid not in known)
    return out
