"""Job sources: files of any format in, validated `Job`s out, every bad row named."""
