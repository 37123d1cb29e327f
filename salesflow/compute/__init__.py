"""Where the heavy steps run: this process, or a Dask cluster (``compute.engine``): the
cluster, shards of series, and the shuffle of partitions to shards."""
