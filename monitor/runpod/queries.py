"""The GraphQL documents the daemon sends (spec/runpod-api.md §4)."""

from __future__ import annotations

# One request per cycle: the account, every endpoint with its template, volumes and pods.
MYSELF = """\
query Myself {
  myself {
    id clientBalance currentSpendPerHr spendLimit underBalance minBalance
    maxServerlessConcurrency
    endpoints {
      id name gpuIds workersMin workersMax workersStandby idleTimeout scalerType
      scalerValue networkVolumeId locations templateId version
      template { id name imageName dockerArgs containerDiskInGb env { key value } }
    }
    networkVolumes { id name size dataCenterId }
    pods { id name desiredStatus costPerHr gpuCount }
  }
}
"""

# REST v2 has no current spend per hour (spec/runpod-rest-v2.md 2.1): `auto` asks GraphQL
# for it alone, while GraphQL answers.
SPEND = "query Spend { myself { clientBalance currentSpendPerHr spendLimit } }"
