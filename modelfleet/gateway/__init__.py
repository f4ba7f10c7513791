"""The AI gateway: Envoy in front of Triton, in the cloud (Envoy Gateway) and on this machine."""
