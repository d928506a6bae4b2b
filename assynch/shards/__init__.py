"""The Parquet shard contract: format and layout, writer, reader, and the torch dataset."""
