"""Monitoring, computed from the spec like everything else: Prometheus rules (SLO burn rates and the operational
alerts), Alertmanager routing per model owner, Grafana dashboards, and the promtool unit tests that prove every
alert fires and stays quiet when it should.

Pure data here (`rules`, `alertmanager`, `dashboards`, `promtests`); `render_monitoring` writes it under
`DIR/monitoring/`; `components/monitoring.py` declares the same objects in each cluster.
"""

from modelfleet.monitoring.rules import MonitoringPlan, monitoring_plan

__all__ = ["MonitoringPlan", "monitoring_plan"]
