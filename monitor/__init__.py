"""runpod-monitor: diagnoses for RunPod Serverless, published as metrics and alerts."""

__version__ = "0.1.0"
