"""Where breedbot keeps what must outlive a host: blobs in a store, the registry in Redis.

`store.blobs`: one small interface over a local folder and an S3 bucket, with content-addressed
blobs (a photo or a file is kept once, under its SHA-256). `store.registry`: model versions in
Redis (counter, records, active pointer), mirrored into the blob store so it can be rebuilt.
"""
