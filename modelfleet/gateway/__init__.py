"""The AI gateway: Envoy in front of Triton. `plan` is pure data from the spec; `keys` manages API keys;
`extproc` is the inspection service Envoy calls; `envoy_config` renders the local Envoy; `local` runs them."""
