//! drover's HTTP API (axum): tenants authenticate with bearer tokens, submit
//! deployments and follow them. It lands with the distributed fleet; until then
//! the `drover` CLI submits deployments on the embedded default itself.
