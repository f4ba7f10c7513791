"""Pulumi components: each turns one piece of the fleet plan into cloud resources, computing nothing itself."""
