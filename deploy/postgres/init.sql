-- Run once by the postgres image on an empty data volume (/docker-entrypoint-initdb.d/),
-- as POSTGRES_USER (salesflow), which owns the three databases:
--   prefect    the Prefect server (PREFECT_API_DATABASE_CONNECTION_URL, postgresql+asyncpg)
--   mlflow     the MLflow tracking server's backend store (postgresql+psycopg)
--   warehouse  salesflow's forecasts, accuracy, audit and lock tables (SALESFLOW_WAREHOUSE_URL)
-- No password here: the image sets it from POSTGRES_PASSWORD (compose.yaml).
CREATE DATABASE prefect;
CREATE DATABASE mlflow;
CREATE DATABASE warehouse;
