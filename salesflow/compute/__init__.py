"""Where the heavy steps run: this process, or a Dask cluster (``compute.engine``)."""
