"""The on-prem sync agent and its server-side ingest: arrives with the sync issue."""
