"""The RunPod client: GraphQL `myself` and the REST data plane, as typed results."""

from monitor.runpod.client import RunPodClient
from monitor.runpod.models import Failure, Myself, Ok, Result

__all__ = ["Failure", "Myself", "Ok", "Result", "RunPodClient"]
