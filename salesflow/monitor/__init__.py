"""After the forecast: realized accuracy and drift checks (Evidently)."""
