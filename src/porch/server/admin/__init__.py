"""The admin API, /metrics and the dashboard, served by the supervisor (api.py)."""
