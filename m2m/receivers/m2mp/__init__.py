"""M2MP, the binary device protocol: frame codec, channel tables, session and client."""
