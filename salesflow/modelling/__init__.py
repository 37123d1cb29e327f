"""The forecaster: model, backtest, metrics, training, scoring, MLflow registry, reports."""
