"""Global routing: Route53 records and health checks per model (`plan`), and the failover proof (`failover`)."""
