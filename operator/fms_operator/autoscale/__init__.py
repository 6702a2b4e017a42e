"""The built-in autoscaler: workers' metrics -> a pure decision -> spec.replicas.

decision (the formula), signals and sample (what the metrics mean),
collector_scrape and collector_prometheus (the two ways to read them), loop
(one evaluation), round and cluster (its Kubernetes I/O), timer (kopf wiring).
See docs/autoscaling.md.
"""
