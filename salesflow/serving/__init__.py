"""Serving: the REST API (``salesflow serve``) and the dashboard; they read through
:mod:`salesflow.serving.queries` and may import the core, never the flows or tasks."""
