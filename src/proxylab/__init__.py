"""proxylab: a reproduction lab for latency problems in LLM gateways."""
