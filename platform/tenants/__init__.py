"""Tenant registry, sign-up, provisioning, fleet migrations, staff identity and OAuth clients."""
