"""mlwarden: bolt-on observability for ML models served on Kubernetes.

Detect silent model failures from captured traffic, diagnose them against the
pipeline's resource graph, and react within guardrails. See README.md.
"""

__version__ = "0.1.0"
