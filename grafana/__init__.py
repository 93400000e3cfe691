"""Dashboards and alert rules as code: `python -m grafana.generate [--check]`."""
